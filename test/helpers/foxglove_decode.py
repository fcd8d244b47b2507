"""Decode Foxglove protobuf messages from the schema their channel carries (MCAP schema
record or WebSocket advertisement): a FileDescriptorSet, read with google.protobuf, the
way any Foxglove client does - no foxglove-sdk involved on the reading side."""

from __future__ import annotations

from functools import lru_cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


@lru_cache(maxsize=32)
def message_class(schema_name: str, schema_data: bytes):
    fds = descriptor_pb2.FileDescriptorSet.FromString(schema_data)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


def decode(schema_name: str, schema_data: bytes, payload: bytes):
    return message_class(schema_name, bytes(schema_data)).FromString(bytes(payload))


def stamp_ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def boxes(annotations) -> list[tuple[float, float, float, float]]:
    """(x1, y1, x2, y2) of every LINE_LOOP box of an ImageAnnotations message."""
    out = []
    for p in annotations.points:
        xs, ys = [q.x for q in p.points], [q.y for q in p.points]
        out.append((min(xs), min(ys), max(xs), max(ys)))
    return out
