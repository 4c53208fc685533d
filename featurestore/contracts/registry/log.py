"""The registry's durable log: one compacted, single-partition Kafka topic, read by a
tail thread into ``RegistryState`` and written in Kafka transactions.

Single writer, by fencing. Every write is a transaction under one ``transactional.id``
per registry topic, and follows three steps: (1) the producer is initialised, which
fences any other instance's producer for that id and completes its open transaction;
(2) the state is caught up to the topic's last stable offset; (3) the command is
planned on that state and its records committed. If another instance initialised its
producer after our step (1), our commit fails as fenced and we start again at (1). So a
commit that succeeds was planned on a state that held every earlier commit: ids and
versions never collide, however many instances share the topic. (Step 2 can trust the
last stable offset because initialising a transactional id first completes that id's
previous transaction, commit markers included.) Instances writing at the same moment
fence each other in turn and retry after a random pause; writes are rare (schema
registrations), so this costs nothing in practice, but a deployment that expects many
concurrent writers should send writes to one instance, as Confluent's followers forward
them to the leader.

Reads are served from memory. A write returns only after the tail thread applied its
records, located by their own offsets (read-your-writes): right after a commit the
broker may not have written the commit marker yet, so the last stable offset can lag.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from featurestore.contracts.registry.state import Outcome, RegistryState, encode
from featurestore.errors import ConfigError, RegistryError

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "_featurestore_schemas"
WRITE_ATTEMPTS = 10
# Errors that waiting will not cure. Anything else while asking where the topic ends
# (no leader yet for a new topic, a leader epoch moving, a broker restarting) is
# retried until the timeout.
_HOPELESS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)


class SchemaLog:
    """Keeps a ``RegistryState`` equal to the topic, and appends commands' records."""

    def __init__(
        self,
        state: RegistryState,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        kafka_config: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.state = state
        self.topic = topic
        self.timeout = timeout
        self._kafka = {"bootstrap.servers": bootstrap, **(kafka_config or {})}
        self._admin = AdminClient(self._kafka)
        self._partition = TopicPartition(topic, 0)
        self._position = 0
        self._applied = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._producer: Producer | None = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Create the topic if needed, start tailing it, and wait until caught up."""
        self._ensure_topic()
        self._thread = threading.Thread(target=self._tail, name=f"tail-{self.topic}", daemon=True)
        self._thread.start()
        self.catch_up()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._producer is not None:
            self._producer.flush(5)

    def _ensure_topic(self) -> None:
        metadata = self._admin.list_topics(timeout=self.timeout)
        existing = metadata.topics.get(self.topic)
        if existing is not None and existing.error is None:
            if len(existing.partitions) != 1:
                raise ConfigError(
                    f"registry topic '{self.topic}' has {len(existing.partitions)} partitions; "
                    "it must have exactly one (the log's order is the registry's truth). "
                    "Point the registry at another topic with --topic."
                )
            return
        replication = min(3, len(metadata.brokers))
        new = NewTopic(
            self.topic,
            num_partitions=1,
            replication_factor=replication,
            config={"cleanup.policy": "compact", "min.insync.replicas": str(min(2, replication))},
        )
        try:
            self._admin.create_topics([new])[self.topic].result(self.timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        self._wait_for_leader()

    def _wait_for_leader(self) -> None:
        """A topic just created has no partition leader for a moment; asking for its
        metadata by name also refreshes the client's cached view of it."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            found = self._admin.list_topics(topic=self.topic, timeout=self.timeout)
            topic = found.topics.get(self.topic)
            partitions = topic.partitions if topic is not None and topic.error is None else {}
            if partitions and partitions[0].leader >= 0:
                return
            time.sleep(0.1)

    # --- reading ----------------------------------------------------------------------

    def _tail(self) -> None:
        consumer = Consumer(
            {
                **self._kafka,
                "group.id": f"featurestore-registry-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        try:
            while not self._stop.is_set():
                # Wake on the first record (a waiting writer wants it now), then drain.
                first = consumer.poll(0.2)
                batch = [] if first is None else [first, *consumer.consume(500, 0)]
                for msg in batch:
                    if msg.error():
                        log.warning("reading registry topic %s: %s", self.topic, msg.error())
                        continue
                    self._apply(msg.key(), msg.value(), msg.offset() or 0)
                position = consumer.position([TopicPartition(self.topic, 0)])[0].offset
                if position >= 0:
                    with self._applied:
                        self._position = position
                        self._applied.notify_all()
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            parsed_key = orjson.loads(key or b"null")
            parsed_value = None if value is None else orjson.loads(value)
            if isinstance(parsed_key, dict):
                self.state.apply(parsed_key, parsed_value)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, RegistryError) as exc:
            # Someone else's bytes in our topic: skip them, never stop reading.
            log.warning("skipping malformed record at %s offset %d: %s", self.topic, offset, exc)

    def catch_up(self) -> None:
        """Block until every record committed to the topic so far has been applied."""
        self._wait_applied(self._last_stable_offset())

    def _last_stable_offset(self) -> int:
        deadline = time.monotonic() + self.timeout
        while True:
            future = self._admin.list_offsets(
                {self._partition: OffsetSpec.latest()},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=self.timeout,
            )[self._partition]
            try:
                offset: int = future.result(self.timeout).offset
                return offset
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in _HOPELESS or time.monotonic() > deadline:
                    raise RegistryError(
                        500, 50001, f"Error in the backend data store: Kafka could not say "
                        f"where '{self.topic}' ends ({error.str()}).",
                    ) from exc  # fmt: skip
            self._wait_for_leader()
            time.sleep(0.1)

    def _wait_applied(self, target: int) -> None:
        """Block until the tail thread has applied every record before offset ``target``."""
        deadline = time.monotonic() + self.timeout
        with self._applied:
            while self._position < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RegistryError(
                        500, 50002, f"Operation timed out: the registry topic '{self.topic}' was "
                        f"not read up to offset {target} within {self.timeout:.0f}s.",
                    )  # fmt: skip
                self._applied.wait(left)

    # --- writing ----------------------------------------------------------------------

    def _ready_producer(self) -> Producer:
        if self._producer is None:
            producer = Producer(
                {
                    **self._kafka,
                    "transactional.id": f"featurestore-registry-{self.topic}",
                    "acks": "all",
                }
            )
            producer.init_transactions(self.timeout)
            self._producer = producer
        return self._producer

    def append(self, command: Callable[[], Outcome]) -> Any:
        """Plan ``command`` on the caught-up state and commit its records; its response."""
        with self._write_lock:
            for attempt in range(WRITE_ATTEMPTS):
                if attempt:
                    # Two instances writing at once fence each other in turn; a random
                    # pause lets one of them finish instead of both retrying in step.
                    time.sleep(random.uniform(0, 0.05 * attempt))
                try:
                    producer = self._ready_producer()
                except KafkaException as exc:
                    raise RegistryError(
                        500, 50001, f"Error in the backend data store: {exc.args[0].str()}."
                    ) from exc
                self.catch_up()
                outcome = command()
                if not outcome.records:
                    return outcome.response
                last_offset = self._commit(producer, outcome)
                if last_offset is not None:
                    # Read our own write. Not the last stable offset: right after a commit
                    # the broker may not have written the commit marker yet.
                    self._wait_applied(last_offset + 1)
                    return outcome.response
            raise RegistryError(
                500, 50001, f"Error in the backend data store: no write to '{self.topic}' "
                f"succeeded in {WRITE_ATTEMPTS} attempts; another instance keeps taking over "
                "the writer role.",
            )  # fmt: skip

    def _commit(self, producer: Producer, outcome: Outcome) -> int | None:
        """One transaction; the offset of its last record, or None when it must be
        planned again (fenced or aborted)."""
        offsets: list[int] = []

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                offsets.append(msg.offset())

        try:
            producer.begin_transaction()
        except KafkaException as exc:
            return self._failed(producer, exc)
        try:
            for key, value in outcome.records:
                producer.produce(
                    self.topic, key=encode(key), value=encode(value), on_delivery=delivered
                )
            producer.commit_transaction(self.timeout)  # flushes, so every report has run
            return max(offsets)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                producer.abort_transaction(self.timeout)
                raise RegistryError(
                    422, 42201, "Invalid schema: too large for the registry topic (the "
                    "broker's message.max.bytes); split or shorten it.",
                ) from exc  # fmt: skip
            return self._failed(producer, exc)

    def _failed(self, producer: Producer, exc: KafkaException) -> int | None:
        """Clean up after a failed transaction; None to re-plan, or raise."""
        error: KafkaError = exc.args[0]
        if not error.fatal() and error.code() != KafkaError._FENCED:
            # An open transaction must end before the next begin, whatever failed.
            try:
                producer.abort_transaction(self.timeout)
            except KafkaException:
                self._producer = None
            if error.txn_requires_abort() or error.retriable():
                return None
        else:
            log.info("registry writer was fenced by another instance; taking over")
            self._producer = None
            return None
        raise RegistryError(500, 50001, f"Error in the backend data store: {error.str()}.") from exc
