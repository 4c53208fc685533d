"""Dead-letter topics exist before the first bad event: created at start with as many
partitions as their source topic (so DLQ order per source partition can be kept)."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


def ensure_topics(
    kafka: dict[str, Any], dlq_by_source: dict[str, str], timeout: float = 30
) -> None:
    admin = AdminClient(kafka)
    metadata = admin.list_topics(timeout=timeout)
    replication = min(3, len(metadata.brokers))
    wanted = []
    for source, dlq in dlq_by_source.items():
        if dlq in metadata.topics and metadata.topics[dlq].error is None:
            continue
        found = metadata.topics.get(source)
        partitions = len(found.partitions) if found is not None and found.error is None else 1
        wanted.append(NewTopic(dlq, num_partitions=partitions, replication_factor=replication))
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted).items():
        try:
            future.result(timeout)
            log.info("created dead-letter topic %s", topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
