"""Creating topics explicitly, before anything produces.

Brokers auto-create unknown topics with their own default partition count (Tansu: 4), and
partitions cannot be added later without reshuffling keys, so every topic the service uses is
created up front with the configured count.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from elk_resolver.kafka.security import KafkaOptions


async def ensure_topics(
    kafka: KafkaOptions, names: list[str], *, partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create the missing topics; return the names created by this call. ``kafka``:
    :func:`elk_resolver.kafka.security.client_options`."""
    admin = AIOKafkaAdminClient(**kafka, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if not missing:
            return []
        created = []
        for name in missing:
            try:
                await admin.create_topics(
                    [NewTopic(name=name, num_partitions=partitions, replication_factor=replication_factor)]
                )
                created.append(name)
            except TopicAlreadyExistsError:  # another instance won the race
                pass
        return created
    finally:
        await admin.close()
