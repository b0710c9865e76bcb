"""Creating topics explicitly, before anything produces, and knowing a topic again.

Brokers auto-create unknown topics with their own default partition count (Tansu: 4), and
partitions cannot be added later without reshuffling keys, so every topic the service uses is
created up front with the configured count, and the service's own clients never ask a broker
to create one (:func:`forbid_client_auto_create`): after a broker restart only the service's
topic watch creates them again, with the configured count.

A topic that was deleted and created again (a broker restarted without its data, an operator
re-creating it) has a new *topic id* (Kafka 2.8+, Tansu): Metadata v10 answers it, which
aiokafka's own metadata request (v5 at most) does not ask for; :func:`describe_topics` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import AbstractType, Boolean, CompactArray, CompactString, Int16, Int32, Schema, TaggedFields

UNKNOWN_TOPIC_OR_PARTITION = 3


class TooFewPartitions(Exception):
    """A topic has fewer partitions than the service is configured for."""

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


def too_few_partitions(counts: dict[str, int], want: int) -> str | None:
    """Why the service must not run on these topics (their partition counts), or None. Keys
    hash to a partition by the count: with fewer partitions than configured, fewer copies
    share the work, and the count cannot be raised again without moving keys."""
    few = {name: n for name, n in counts.items() if n < want}
    if not few:
        return None
    listed = ", ".join(f"topic {name} has {n} partition{'' if n == 1 else 's'}" for name, n in sorted(few.items()))
    return (f"{listed}, fewer than ELK_RESOLVER_TOPIC_PARTITIONS={want} (made by a client's auto-create with the "
            "broker's default?): re-create it with the configured count, or set ELK_RESOLVER_ALLOW_FEWER_PARTITIONS=true to run on it")


# --- Metadata v10: topic ids ---------------------------------------------------------------


class _Uuid(AbstractType[uuid.UUID | None]):
    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID | None:
        value = uuid.UUID(bytes=data.read(16))
        return None if value.int == 0 else value

    @classmethod
    def encode(cls, value: uuid.UUID | None) -> bytes:
        return (value or uuid.UUID(int=0)).bytes


class _MetadataResponse_v10(Response):
    API_KEY = 3
    API_VERSION = 10
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", CompactArray(("node_id", Int32), ("host", CompactString("utf-8")), ("port", Int32),
                                 ("rack", CompactString("utf-8")), ("tags", TaggedFields))),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        ("topics", CompactArray(
            ("error_code", Int16), ("name", CompactString("utf-8")), ("topic_id", _Uuid), ("is_internal", Boolean),
            ("partitions", CompactArray(
                ("error_code", Int16), ("partition_index", Int32), ("leader_id", Int32), ("leader_epoch", Int32),
                ("replica_nodes", CompactArray(Int32)), ("isr_nodes", CompactArray(Int32)),
                ("offline_replicas", CompactArray(Int32)), ("tags", TaggedFields))),
            ("topic_authorized_operations", Int32), ("tags", TaggedFields))),
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields),
    )


class _MetadataRequest_v10(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 10
    RESPONSE_TYPE = _MetadataResponse_v10
    SCHEMA = Schema(
        ("topics", CompactArray(("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class _TopicIdsRequest(Request[_MetadataRequest_v10]):
    API_KEY = 3

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def build(self, request_struct_class: type[_MetadataRequest_v10]) -> _MetadataRequest_v10:
        return request_struct_class([(None, name, {}) for name in self.names], False, False, False, {})


@dataclass(frozen=True)
class TopicState:
    name: str
    topic_id: uuid.UUID | None
    """None where the broker gives no ids (older than Kafka 2.8)."""
    partitions: int


async def describe_topics(client, names: list[str]) -> dict[str, TopicState]:
    """The topics of ``names`` that exist, with their ids and partition counts, asked of one
    broker through ``client`` (an ``AIOKafkaClient``, e.g. a consumer's ``_client``). Never
    creates a topic. Falls back to the client's own metadata (no ids) on a broker without
    Metadata v10."""
    node = client.get_random_node()
    if node is None:
        await client.force_metadata_update()
        node = client.get_random_node()
    try:
        answer = await client.send(node, _TopicIdsRequest(list(names)))
    except NotImplementedError:  # the broker answers Metadata below v10: no topic ids
        cluster = await client.fetch_all_metadata()
        return {n: TopicState(n, None, len(cluster.partitions_for_topic(n) or ()))
                for n in names if n in cluster.topics()}
    found = {}
    for error_code, name, topic_id, _internal, partitions, *_ in answer.topics:
        if error_code == 0 and name in names:
            found[name] = TopicState(name, topic_id, len(partitions))
    return found


# --- the service's clients never create topics ------------------------------------------------


def forbid_client_auto_create() -> Callable[[], None]:
    """From now on, the aiokafka clients of this process ask for metadata without allowing
    the broker to create a missing topic (aiokafka always allows it, and the broker would
    create it with its own default partition count before the service could). A producer
    then waits for the topic, which the service's topic watch creates with the configured
    count. For the processes that run the service; tests and tools keep aiokafka's default.

    Returns the undo: :func:`streams.app.run_service` calls it when the service has stopped,
    so a process that ran the service for a while (the CLI called in-process, a test) gets
    aiokafka's default back. A second call while forbidden returns an undo that does nothing
    (the first caller's undo restores)."""
    import aiokafka.client
    from aiokafka.protocol.metadata import MetadataRequest

    current = aiokafka.client.MetadataRequest
    if getattr(current, "_elk_no_auto_create", False):
        return lambda: None

    class NoAutoCreate(MetadataRequest):
        _elk_no_auto_create = True

        def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None) -> None:
            super().__init__(topics, False if allow_auto_topic_creation is None else allow_auto_topic_creation)

    aiokafka.client.MetadataRequest = NoAutoCreate

    def undo() -> None:
        if aiokafka.client.MetadataRequest is NoAutoCreate:
            aiokafka.client.MetadataRequest = current

    return undo
