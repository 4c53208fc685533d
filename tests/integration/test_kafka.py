"""Apache Kafka as the product uses it: partitions, keys and headers, consumer groups
resuming from committed offsets, the idempotent producer, and transactions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.conftest import Services

pytestmark = pytest.mark.integration


def _producer(services: Services, **extra: object) -> Producer:
    return Producer({"bootstrap.servers": services.kafka_bootstrap, "linger.ms": 5, **extra})


def _consumer(services: Services, group: str, **extra: object) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )


def _drain(consumer: Consumer, expected: int, timeout: float = 30.0) -> list[Message]:
    """Poll until ``expected`` records arrived, or fail after ``timeout`` seconds."""
    import time

    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consume error: {msg.error()}")
            got.append(msg)
    return got


def _produce_all(producer: Producer, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for key, value in records:
        producer.produce(
            topic, key=key, value=value, headers=[("src", b"test")], on_delivery=report
        )
    assert producer.flush(30) == 0
    assert errors == []


def test_four_partitions_keys_headers_and_group_resume(
    services: Services, new_topic, kafka_admin
) -> None:
    topic = new_topic(partitions=4)
    metadata = kafka_admin.list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 4

    producer = _producer(services)
    records = [(f"card-{i % 10}".encode(), f"value-{i}".encode()) for i in range(200)]
    _produce_all(producer, topic, records)

    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _consumer(services, group)
    first.subscribe([topic])
    batch = _drain(first, 120)[:120]
    # Headers and keys arrive as produced; one key always lands on one partition.
    assert all(m.headers() == [("src", b"test")] for m in batch)
    partitions_per_key: dict[bytes, set[int]] = {}
    for m in batch:
        partitions_per_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions_per_key.values())
    # Commit exactly what was processed: the next offset per partition.
    last: dict[int, int] = {}
    for m in batch:
        last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
    first.commit(
        offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False
    )
    first.close()

    second = _consumer(services, group)
    second.subscribe([topic])
    rest = _drain(second, 80, timeout=30)
    second.close()
    seen = {(m.partition(), m.offset()) for m in batch}
    resumed = {(m.partition(), m.offset()) for m in rest}
    # Every record is seen exactly once across the two members' lives, none re-delivered
    # before the committed offsets.
    assert len(rest) == 80
    assert seen.isdisjoint(resumed)
    assert sorted(m.value() for m in batch + rest) == sorted(v for _, v in records)
    for m in rest:
        assert m.offset() >= last.get(m.partition(), -1) + 1


def test_idempotent_producer_writes_each_record_once_in_order(
    services: Services, new_topic
) -> None:
    topic = new_topic(partitions=1)
    producer = _producer(services, **{"enable.idempotence": True, "acks": "all"})
    _produce_all(producer, topic, ((b"k", str(i).encode()) for i in range(500)))

    consumer = _consumer(services, f"g-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    got = _drain(consumer, 500)
    # Nothing more arrives after the 500: no duplicates from retries.
    extra = _drain(consumer, 1, timeout=2)
    consumer.close()
    assert [int(m.value()) for m in got] == list(range(500))
    assert extra == []


def _read_all(services: Services, topic: str, isolation: str, expected: int) -> list[bytes]:
    consumer = _consumer(services, f"g-{uuid.uuid4().hex[:8]}", **{"isolation.level": isolation})
    consumer.subscribe([topic])
    got = _drain(consumer, expected, timeout=15)
    got += _drain(consumer, 1, timeout=2)  # anything beyond what we expect
    consumer.close()
    return [m.value() for m in got]


def test_committed_transaction_is_visible_and_aborted_one_is_not(
    services: Services, new_topic
) -> None:
    topic = new_topic(partitions=1)
    producer = _producer(services, **{"transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=b"k", value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=b"k", value=f"aborted-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)

    committed = _read_all(services, topic, "read_committed", 5)
    assert committed == [f"committed-{i}".encode() for i in range(5)]
    # The aborted records were written to the log; only read_committed hides them.
    uncommitted = _read_all(services, topic, "read_uncommitted", 10)
    assert sorted(uncommitted) == sorted(
        [f"committed-{i}".encode() for i in range(5)] + [f"aborted-{i}".encode() for i in range(5)]
    )


def test_offsets_sent_to_an_aborted_transaction_are_not_committed(
    services: Services, new_topic
) -> None:
    """Consume-process-produce: the consumer's progress commits with the output or not at all."""
    source, sink = new_topic(partitions=1), new_topic(partitions=1)
    _produce_all(_producer(services), source, ((b"k", str(i).encode()) for i in range(10)))

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(services, group)
    consumer.subscribe([source])
    batch = _drain(consumer, 10)
    producer = _producer(services, **{"transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    for m in batch:
        producer.produce(sink, key=m.key(), value=m.value())
    producer.send_offsets_to_transaction(
        [TopicPartition(source, 0, batch[-1].offset() + 1)], consumer.consumer_group_metadata()
    )
    producer.abort_transaction(30)
    committed = consumer.committed([TopicPartition(source, 0)], timeout=10)
    assert committed[0].offset < 0  # nothing committed for the group

    producer.begin_transaction()
    for m in batch:
        producer.produce(sink, key=m.key(), value=m.value())
    producer.send_offsets_to_transaction(
        [TopicPartition(source, 0, batch[-1].offset() + 1)], consumer.consumer_group_metadata()
    )
    producer.commit_transaction(30)
    committed = consumer.committed([TopicPartition(source, 0)], timeout=10)
    consumer.close()
    assert committed[0].offset == 10
    assert _read_all(services, sink, "read_committed", 10) == [str(i).encode() for i in range(10)]
