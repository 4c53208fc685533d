"""Realistic card payments for the demo: many cards with skewed activity, about 1% of
events that break the contract in several ways, and a shift in spending midway.

Every event is a (key, value bytes) pair ready for Kafka: valid ones in the Confluent
wire format of the example contract (`schemas/card_payment.v1.avsc`), bad ones as they
arrive in real life: negative or absurd amounts, malformed currencies, card ids that
are not ids, event times from the future or older than the contract keeps, bytes that
are not Avro, and an id no registry knows.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HOURS = 3_600_000
HOMES = ["DE"] * 4 + ["FR", "FR", "NL", "ES", "IT", "US", "GB", "PL"]
MONEY = {"US": "USD", "GB": "GBP", "PL": "PLN"}
CHANNELS = ["POS"] * 5 + ["ONLINE"] * 3 + ["ATM", "MOTO"]
CATEGORIES = ["5411", "5812", "5999", "4111", "6011", "5541", "5732"]
# What breaks the contract, and how often (shares of all events, about 1% in all).
FAULTS = {"negative_amount": 0.003, "bad_currency": 0.002, "bad_card_id": 0.001,
          "future_time": 0.001, "too_old": 0.001, "junk_bytes": 0.001,
          "unknown_schema": 0.001}  # fmt: skip


@dataclass(frozen=True)
class Card:
    id: str
    weight: float
    home: str
    merchants: tuple[int, ...]


class CardPayments:
    """``n`` payments, event times spread over [start, end] in stream order; from
    ``shift_at`` (a share of the stream) on, amounts are ``shift`` times larger."""

    def __init__(self, n: int, start: int, end: int, *, cards: int = 20_000, seed: int = 7,
                 shift_at: float = 0.5, shift: float = 3.0) -> None:  # fmt: skip
        self.n, self.start, self.end = n, start, end
        self.shift_at, self.shift = shift_at, shift
        self.rng = random.Random(seed)
        self.cards = [
            Card(f"card_{i:06d}", self.rng.lognormvariate(0, 1.2), self.rng.choice(HOMES),
                 tuple(self.rng.randrange(50_000) for _ in range(self.rng.randrange(2, 9))))
            for i in range(cards)
        ]  # fmt: skip
        self.weights = [c.weight for c in self.cards]

    def events(
        self, serialize: Callable[[dict[str, Any]], bytes]
    ) -> Iterator[tuple[bytes, bytes, str]]:
        """(key, value, kind) per event; kind is "valid" or the fault's name."""
        faults = list(FAULTS.items())
        for i in range(self.n):
            card = self.rng.choices(self.cards, self.weights)[0]
            payment = self._payment(i, card)
            kind, roll = "valid", self.rng.random()
            for name, share in faults:
                if roll < share:
                    kind = name
                    break
                roll -= share
            yield card.id.encode(), self._value(payment, kind, serialize), kind

    def _payment(self, i: int, card: Card) -> dict[str, Any]:
        rng = self.rng
        country = rng.choice(HOMES) if rng.random() < 0.08 else card.home
        merchant = rng.choice(card.merchants) if rng.random() < 0.7 else rng.randrange(50_000)
        amount = min(rng.lognormvariate(3, 1.1), 50_000.0)
        if i >= self.shift_at * self.n:
            amount *= self.shift
        return {
            "payment_id": f"pay_{rng.getrandbits(64):016x}", "card_id": card.id,
            "amount": round(amount, 2), "currency": MONEY.get(country, "EUR"),
            "merchant_id": f"merchant_{merchant}",
            "merchant_category": CATEGORIES[merchant % len(CATEGORIES)],
            "country": country, "channel": rng.choice(CHANNELS), "ip_address": None,
            "ts": self.start + (self.end - self.start) * i // max(self.n - 1, 1),
        }  # fmt: skip

    def _value(self, payment: dict[str, Any], kind: str,
               serialize: Callable[[dict[str, Any]], bytes]) -> bytes:  # fmt: skip
        if kind == "junk_bytes":
            return bytes(self.rng.getrandbits(8) for _ in range(40))
        if kind == "unknown_schema":
            return b"\x00" + struct.pack(">I", 999_999) + serialize(payment)[5:]
        if kind == "negative_amount":
            payment["amount"] = -payment["amount"]
        elif kind == "bad_currency":
            payment["currency"] = "euro"
        elif kind == "bad_card_id":
            payment["card_id"] = "4111-1111-1111-1111"
        elif kind == "future_time":
            payment["ts"] = self.end + 6 * HOURS
        elif kind == "too_old":
            payment["ts"] = self.start - 30 * 24 * HOURS
        return serialize(payment)
