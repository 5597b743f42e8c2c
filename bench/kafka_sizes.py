"""How many bytes topics hold on the broker, asked of the broker itself (Kafka's DescribeLogDirs, API key 35).

aiokafka's admin client has no `describe_log_dirs`, so the request is declared here with aiokafka's own protocol
types (v1: the oldest version Kafka 4 still serves; the same fields as v0). Reading the broker's log folder instead
would only work for a broker of this checkout's `.devstack/`, and not for the shared stack of another checkout.
Sizes are the partitions' log sizes as stored (after any producer compression), summed over every broker.
"""

from __future__ import annotations

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Int64, Schema, String

from devkit.kafka_io import admin_client


class DescribeLogDirsResponse_v1(Response):
    API_KEY = 35
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "log_dirs",
            Array(
                ("error_code", Int16),
                ("log_dir", String("utf-8")),
                (
                    "topics",
                    Array(
                        ("name", String("utf-8")),
                        (
                            "partitions",
                            Array(
                                ("partition_index", Int32),
                                ("partition_size", Int64),
                                ("offset_lag", Int64),
                                ("is_future_key", Boolean),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )


class DescribeLogDirsRequest_v1(RequestStruct):
    API_KEY = 35
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponse_v1
    SCHEMA = Schema(("topics", Array(("topic", String("utf-8")), ("partitions", Array(Int32)))))


class DescribeLogDirsRequest(Request[DescribeLogDirsRequest_v1]):
    API_KEY = 35

    def __init__(self, topics: list[tuple[str, list[int]]] | None) -> None:
        self._topics = topics  # None: every topic

    def build(self, request_struct_class: type[DescribeLogDirsRequest_v1]) -> DescribeLogDirsRequest_v1:
        return request_struct_class(self._topics)


async def topic_sizes(bootstrap: str, names: list[str] | None = None) -> dict[str, int]:
    """Bytes per topic on the brokers' disks (every topic when `names` is None; a topic absent there is 0)."""
    sizes: dict[str, int] = dict.fromkeys(names or (), 0)
    async with admin_client(bootstrap) as admin:
        for broker in admin._client.cluster.brokers():
            # Every topic is asked for and filtered here: naming topics needs their partition lists.
            response = await admin._send_request(DescribeLogDirsRequest(None), broker.nodeId)
            for error_code, _, topics in response.log_dirs:
                if error_code:
                    continue
                for name, partitions in topics:
                    if names is None or name in sizes:
                        # is_future_key: a replica being moved between folders is counted once, where it is now.
                        sizes[name] = sizes.get(name, 0) + sum(p[1] for p in partitions if not p[3])
    return sizes
