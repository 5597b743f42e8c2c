"""Kafka topic provisioning: create the project's topics when they are missing (simulator, worker and API share it)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from telemetrypulse.settings import Settings, aiokafka_options

log = logging.getLogger(__name__)

# Managed clusters (Confluent Cloud, MSK) reject a replication factor below 3; a one-broker dev stack rejects
# anything above 1. aiokafka speaks CreateTopics v3 at most, which has no "broker default" (-1), so derive it.
MAX_REPLICATION_FACTOR = 3


async def ensure_topics(
    settings: Settings,
    names: list[str],
    partitions: int,
    *,
    timeout_s: float = 30.0,
    configs: dict[str, str] | None = None,
) -> None:
    """Create each topic in `names` that does not exist yet, with `partitions` partitions (and topic `configs`).

    Existing topics are left as they are (a different partition count is only logged: repartitioning a keyed
    topic would move devices between partitions). Returns once every topic is visible in the cluster metadata,
    so a producer started right after finds them. Broker errors other than "already exists" are raised.
    """
    admin = AIOKafkaAdminClient(**aiokafka_options(settings), client_id=settings.names.client_id("admin"))
    await admin.start()
    try:
        # list_topics() asks for all topics; a metadata request naming a missing topic would let a broker with
        # auto.create.topics.enable create it with its default partition count.
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        present = [name for name in dict.fromkeys(names) if name in existing]
        if present:
            _warn_partition_mismatch(await admin.describe_topics(present), partitions)
        if missing:
            brokers = (await admin.describe_cluster()).get("brokers") or [None]
            replication = max(1, min(MAX_REPLICATION_FACTOR, len(brokers)))
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=partitions,
                        replication_factor=replication,
                        topic_configs=dict(configs or {}),
                    )
                    for name in missing
                ]
            )
            for topic, code, *rest in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    message = rest[0] if rest and rest[0] else for_code(code).description
                    raise for_code(code)(f"cannot create topic {topic!r}: {message}")
            log.info("created topics %s (%d partitions, replication %d)", missing, partitions, replication)
            await wait_until_visible(admin, missing, timeout_s)
    finally:
        await admin.close()


def _warn_partition_mismatch(described: list[dict], partitions: int) -> None:
    for topic in described:
        count = len(topic.get("partitions") or ())
        if count and count != partitions:
            log.warning(
                "topic %s exists with %d partitions (TOPIC_PARTITIONS=%d); leaving it",
                topic.get("topic"),
                count,
                partitions,
            )


async def wait_until_visible(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Until every topic is in the metadata with a leader for each partition (creation is asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t.get("error_code") == 0
            and t.get("partitions")
            and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topics {sorted(set(names) - ready)} not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)
