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

A producer fenced by a newer one (this consumer lost its partitions while stalled)
raises ``Fenced``: the caller rewinds to the committed offsets and carries on; the
batch it was committing belongs to the partitions' new owner.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from featurestore.stream.dlq import DeadLetter

log = logging.getLogger(__name__)


class Fenced(Exception):
    """Another producer took over this consumer's transactional role."""


class TransientCommitError(Exception):
    """The transaction did not commit this time; retry the same checkpoint."""


class Checkpointer:
    """The transactional producer of one consumer process."""

    def __init__(self, kafka: dict[str, Any], group: str, timeout: float = 30.0) -> None:
        self._kafka = kafka
        self._group = group
        self.timeout = timeout
        self._producer: Producer | None = None

    def _ready(self) -> Producer:
        if self._producer is None:
            producer = Producer(
                {
                    **self._kafka,
                    # Unique per process: zombie fencing comes from the consumer group
                    # generation (KIP-447), not from reusing the id.
                    "transactional.id": f"{self._group}-{uuid.uuid4().hex}",
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
            producer.send_offsets_to_transaction(
                offsets, consumer.consumer_group_metadata(), self.timeout
            )
            producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or error.code() == KafkaError._FENCED:
                self._producer = None
                raise Fenced(error.str()) from exc
            if error.txn_requires_abort() and self._producer is not None:
                try:
                    self._producer.abort_transaction(self.timeout)
                except KafkaException:
                    self._producer = None
            raise TransientCommitError(error.str()) from exc

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
