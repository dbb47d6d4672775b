"""The feature stream's contract: rating events in a Redis Stream, added by producers
(`python -m pipelines.features.stream publish`, say) and consumed by the stream worker
(pipelines/features/stream.py), which moves online features with them.

An event's fields: user_id, item_id, rating (1 to 5) and, optionally, timestamp (seconds
since the epoch; else the time the stream received it).
"""
from __future__ import annotations

DEFAULT_STREAM = "recsys:events"


def redis_client(address: str, ssl: bool = False):
    """A client of the Redis at host:port that answers str."""
    import redis

    host, _, port = address.rpartition(":")
    return redis.Redis(host=host, port=int(port), ssl=ssl, decode_responses=True,
                       socket_timeout=5, socket_connect_timeout=5)


def rating_fields(user_id: str, item_id: str, rating: float,
                  timestamp: int | None = None) -> dict:
    fields = {"user_id": user_id, "item_id": item_id, "rating": rating}
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return fields


def publish(client, stream: str, user_id: str, item_id: str, rating: float,
            timestamp: int | None = None) -> str:
    """Adds one rating event; returns its stream entry id."""
    return client.xadd(stream, rating_fields(user_id, item_id, rating, timestamp))
