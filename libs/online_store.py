"""Thin readers of the rows Feast's online stores hold: the services' hot path.

Feast's get_online_features resolves the registry, builds protos and converts every value
on each call (milliseconds of CPU for 1 user + 100 items); these read the same rows in one
round trip. The layouts are Feast's own (feast/infra/online_stores/redis.py and sqlite.py,
entity key serialization version 3), so what `feast materialize`, pushes and the stream
worker wrote reads back unchanged; tests/integration/test_online_store.py pins that
against data Feast wrote, and fails when a Feast upgrade changes the layout.

  Redis   one hash per entity, every view of that entity in it: key = serialized entity
          key + project; field = the 4 little-endian bytes of murmur3("<view>:<feature>");
          value = a serialized feast.types.Value
  SQLite  one table "<project>_<view>" of (entity_key, feature_name, value, event_ts)

Views are read without a TTL check: the readers refuse a view that has one.
"""
from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass

from feast.protos.feast.types.Value_pb2 import Value

from libs import murmur3

_STRING = 2  # feast.value_type.ValueType.STRING


def entity_key(join_key: str, value: str) -> bytes:
    """Feast's serialize_entity_key (version 3) of one string join key."""
    key, data = join_key.encode(), value.encode()
    return b"".join((struct.pack("<II", 1, _STRING), struct.pack("<I", len(key)), key,
                     struct.pack("<II", _STRING, len(data)), data))


def python_value(raw: bytes | None):
    """A serialized feast Value -> a Python value (lists for list types); None if unset."""
    if not raw:
        return None
    value = Value.FromString(raw)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    found = getattr(value, kind)
    return list(found.val) if kind.endswith("_list_val") else found


@dataclass(frozen=True)
class EntityRead:
    """Features of one entity type, from one or more of its views: (view, feature) pairs.
    Feature names are unique within a read (they key the rows it returns)."""
    join_key: str
    features: tuple[tuple[str, str], ...]

    def __post_init__(self):
        names = [f for _, f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.join_key}: a feature name appears in two views: {names}")

    @property
    def names(self) -> list[str]:
        return [f for _, f in self.features]


Row = dict  # feature name -> Python value; None where the entity has no rows at all


# Every HMGET of one read in a single command: redis-py spends more CPU packing and
# awaiting a pipeline of a hundred commands than Redis spends answering them. KEYS come
# in group order; ARGV holds, per group, its number of keys, its number of fields and the
# fields. Standalone Redis (a cluster would refuse keys from several slots).
_HMGET_ALL = """
local out, k, a = {}, 1, 1
while a <= #ARGV do
  local keys, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + count)}
  for _ = 1, keys do
    out[#out + 1] = redis.call('HMGET', KEYS[k], unpack(fields))
    k = k + 1
  end
  a = a + 2 + count
end
return out
"""


class RedisReader:
    """Reads with redis-py's asyncio client (hiredis parses replies): one command per
    call, whatever the number of entities and views."""

    def __init__(self, project: str, host: str, port: int, timeout_seconds: float,
                 db: int = 0, password: str | None = None, ssl: bool = False):
        import redis.asyncio

        self.project = project.encode()
        # no retries: a read that times out falls back to defaults at once
        self.client = redis.asyncio.Redis(
            host=host, port=port, db=db, password=password, ssl=ssl,
            socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False, retry=None)
        self._script = self.client.register_script(_HMGET_ALL)
        self._fields: dict[EntityRead, list[bytes]] = {}

    def _fields_of(self, read: EntityRead) -> list[bytes]:
        fields = self._fields.get(read)
        if fields is None:
            fields = [struct.pack("<I", murmur3.hash32(f"{view}:{feature}"))
                      for view, feature in read.features]
            self._fields[read] = fields
        return fields

    async def read(self, requests: list[tuple[EntityRead, list[str]]]) -> list[list[Row | None]]:
        """For each (read, entity ids): one row per id, None for an entity with no value
        in any of the read's features."""
        keys, args = [], []
        for read, ids in requests:
            if ids:
                fields = self._fields_of(read)
                keys += [entity_key(read.join_key, i) + self.project for i in ids]
                args += [len(ids), len(fields), *fields]
        replies = iter(await self._script(keys=keys, args=args) if keys else ())
        out = []
        for read, ids in requests:
            rows = []
            for _ in ids:
                values = next(replies)
                rows.append(None if not any(values) else
                            {n: python_value(v) for n, v in zip(read.names, values)})
            out.append(rows)
        return out

    async def close(self) -> None:
        await self.client.aclose()


class SqliteReader:
    """One indexed SELECT per view (Feast's primary key is (entity_key, feature_name)).
    Synchronous: a local file read answers in well under a millisecond, less than a hop
    to a thread would cost."""

    def __init__(self, project: str, path: str):
        self.project = project
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    async def read(self, requests: list[tuple[EntityRead, list[str]]]) -> list[list[Row | None]]:
        out = []
        for read, ids in requests:
            keys = [entity_key(read.join_key, i) for i in ids]
            found: dict[bytes, dict] = {}
            views: dict[str, list[str]] = {}
            for view, feature in read.features:
                views.setdefault(view, []).append(feature)
            for view, features in views.items():
                query = (f'SELECT entity_key, feature_name, value FROM "{self.project}_{view}" '
                         f"WHERE entity_key IN ({','.join('?' * len(keys))}) "
                         f"AND feature_name IN ({','.join('?' * len(features))})")
                for key, feature, raw in self.db.execute(query, keys + features):
                    found.setdefault(key, {})[feature] = python_value(raw)
            out.append([None if key not in found else
                        {n: found[key].get(n) for n in read.names} for key in keys])
        return out

    async def close(self) -> None:
        self.db.close()
