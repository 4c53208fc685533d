"""Committing a micro-batch: its dead letters and its consumer offsets in ONE Kafka
transaction, after every sink has made its rows durable.

Why this order, step by step:
1. The sinks write first (Parquet is fsynced and renamed). A crash after this step
   replays the batch; the sinks tolerate that (readers dedupe by source offset).
2. Then one transaction holds the batch's dead letters and its offsets
   (``send_offsets_to_transaction``). Both become visible together or not at all, so a
   crash can neither lose a dead letter nor write one twice, and the offsets never run
   ahead of what was written.
3. Only after the commit do counters move, so ``in == valid + dead-lettered`` holds
   for committed work at any time.

A commit that fails any other way (a broker restarting, a timeout) is aborted and
retried whole, in a new transaction; the aborted one's dead letters stay invisible to
read_committed readers.

A producer fenced by a newer one (this consumer lost its partitions while stalled)
raises ``Fenced``: the caller rewinds to the committed offsets and carries on; the
batch it was committing belongs to the partitions' new owner.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from featurestore import crashpoints
from featurestore.stream.dlq import DeadLetter

log = logging.getLogger(__name__)
# A transaction lives from the batch's first dead letter to its commit: milliseconds.
# librdkafka's 60 s default is how long a crashed consumer's successor would wait.
TRANSACTION_TIMEOUT_MS = 10_000


class Fenced(Exception):
    """Another producer took over this consumer's transactional role."""


class TransientCommitError(Exception):
    """The transaction did not commit this time; retry the same checkpoint."""


class Checkpointer:
    """The transactional producer of one consumer process."""

    def __init__(
        self, kafka: dict[str, Any], group: str, timeout: float = 30.0, instance: str | None = None
    ) -> None:
        self._kafka = kafka
        # Zombie fencing comes from the consumer group generation (KIP-447), so the id
        # need not be stable. When it is (a named instance), a restarted process's
        # init_transactions aborts the transaction its killed predecessor left open at
        # once; a fresh id leaves it to time out (TRANSACTION_TIMEOUT_MS), and until then
        # the group's committed offsets are unstable and the restart waits.
        self._transactional_id = f"{group}-{instance or uuid.uuid4().hex}"
        self.timeout = timeout
        self._producer: Producer | None = None

    def start(self) -> None:
        """Initialise the transactional producer now, before the consumer fetches its
        committed offsets: under a named instance this aborts the transaction a killed
        predecessor left open, which would otherwise hold those offsets unstable."""
        self._ready()

    def _ready(self) -> Producer:
        if self._producer is None:
            producer = Producer(
                {
                    "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                    **self._kafka,
                    "transactional.id": self._transactional_id,
                    "acks": "all",
                    "linger.ms": 5,
                }
            )
            producer.init_transactions(self.timeout)
            self._producer = producer
        return self._producer

    def commit(
        self, consumer: Consumer, letters: list[DeadLetter], offsets: list[TopicPartition]
    ) -> None:
        """Dead letters and offsets, atomically. Raises TransientCommitError or Fenced."""
        try:
            producer = self._ready()
            producer.begin_transaction()
            for letter in letters:
                self._produce(producer, letter)
            crashpoints.reach("commit.letters")
            self._send_offsets(producer, offsets, consumer.consumer_group_metadata())
            crashpoints.reach("commit.offsets")
            producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or error.code() == KafkaError._FENCED:
                self._producer = None
                raise Fenced(error.str()) from exc
            self._abort()
            raise TransientCommitError(error.str()) from exc

    def _send_offsets(self, producer: Producer, offsets: list[TopicPartition],
                      group: object) -> None:  # fmt: skip
        """``send_offsets_to_transaction`` under a watchdog: librdkafka can block past its
        timeout when the group coordinator went away, e.g. a broker restarted
        (confluentinc/librdkafka#5456 and #5511, open in 2.16). The hung producer is
        abandoned to its call; the next one's init_transactions fences it."""
        failure: list[KafkaException] = []

        def send() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, group, self.timeout)
            except KafkaException as exc:
                failure.append(exc)

        worker = threading.Thread(target=send, name="send-offsets", daemon=True)
        worker.start()
        worker.join(self.timeout + 5)
        if worker.is_alive():
            self._producer = None
            raise TransientCommitError(
                f"adding the offsets to the transaction hung past {self.timeout:.0f}s; "
                "starting a new transactional producer"
            )
        if failure:
            raise failure[0]

    def _abort(self) -> None:
        """End whatever transaction a failed commit left open, so the retry begins a new
        one: a timed-out step (a broker restarting) leaves it open without asking for an
        abort, and every later begin would fail. A producer that cannot even abort is
        replaced; the new one's init_transactions (same id) fences it."""
        if self._producer is None:
            return
        try:
            self._producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            log.info("dropping the transactional producer (abort failed: %s)", exc)
            self._producer = None

    @staticmethod
    def _produce(producer: Producer, letter: DeadLetter) -> None:
        while True:
            try:
                producer.produce(
                    letter.topic, key=letter.key, value=letter.value, headers=letter.headers
                )
                return
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout)
            self._producer = None
