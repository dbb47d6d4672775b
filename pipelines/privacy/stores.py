"""Where the platform keeps data about a user, and how to read out or erase one user's.

Every store answers `export(user)` (the user's records, JSON-ready, each with where it
was found) and `erase(user)` (removes them; returns how many). How each erases:

  CsvRows       raw tables and the stream's event log: the file rewritten without the
                user's rows, atomically (files nothing appends to)
  ParquetRows   the feature tables (Feast's offline source): each file rewritten
                without the user's rows, atomically
  JsonLines     the router's exposure, shadow and outcome logs, the quarantines: each of
                the user's lines overwritten in place by as many spaces. Routers append
                to today's files while this runs and the outcome publisher reads them
                by byte offset: lines keep their length, so nothing moves under either
                (readers skip blank lines)
  OnlineRows    Feast's online store (SQLite rows, or the Redis hash of the entity),
                deleted directly: Feast has no per-entity delete
  StreamEntries the Redis stream of rating events: XDEL of the user's entries
  OutcomeKeys   the router's dedupe keys of outcome events (their ids may name the user)
  Allowlists    experiments that pin the user to an arm: the user is taken out through
                the experiment document's own locked, audited change
  MaskedKeys    the experiments' audit log: every entry kept, the user's id as an
                allowlist key masked in place

What a user's data trained cannot be erased row by row: `Retrained` lists the training
sets and model versions that hold it (retraining without the user is the remedy).
"""
from __future__ import annotations

import csv
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

from libs import files

USER_KEY = "user_id"


class Store(Protocol):
    """A place holding user data; `name` says which."""
    name: str

    def export(self, user: str) -> list[dict]: ...

    def erase(self, user: str) -> int: ...


def _csv_user(line: str, column: int) -> str | None:
    values = next(csv.reader([line]), [])
    return values[column] if len(values) > column else None


@dataclass
class CsvRows(Store):
    name: str
    paths: Callable[[], Iterable[Path]]

    def _split(self, path: Path, user: str) -> tuple[list[str], list[str], list[str]]:
        """(header line, kept lines, the user's lines) of one file."""
        with open(path, newline="", encoding="utf-8") as handle:
            lines = handle.readlines()
        if not lines:
            return [], [], []
        header = next(csv.reader([lines[0]]))
        if USER_KEY not in header:
            return lines[:1], lines[1:], []
        column = header.index(USER_KEY)
        kept, theirs = [], []
        for line in lines[1:]:
            (theirs if user in line and _csv_user(line, column) == user else kept).append(line)
        return lines[:1], kept, theirs

    def export(self, user: str) -> list[dict]:
        found = []
        for path in self.paths():
            header, _, theirs = self._split(path, user)
            columns = next(csv.reader(header)) if header else []
            found += [{"file": str(path), **dict(zip(columns, next(csv.reader([line]))))}
                      for line in theirs]
        return found

    def erase(self, user: str) -> int:
        erased = 0
        for path in self.paths():
            header, kept, theirs = self._split(path, user)
            if theirs:
                files.replace_atomically(path, "".join(header + kept))
                erased += len(theirs)
        return erased


def user_of_key(key: bytes) -> str:
    """The id in a serialized one-string entity key (libs.online_store.entity_key)."""
    join_length = struct.unpack_from("<I", key, 8)[0]
    start = 12 + join_length + 8
    return key[start:start + struct.unpack_from("<I", key, start - 4)[0]].decode()


def _jsonable(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


@dataclass
class ParquetRows(Store):
    name: str
    paths: Callable[[], Iterable[Path]]

    def _tables(self, user: str):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for path in self.paths():
            table = pq.read_table(path)
            if USER_KEY not in table.column_names:
                continue
            theirs = pc.equal(table[USER_KEY], user)
            if pc.any(theirs).as_py():
                yield path, table, theirs

    def export(self, user: str) -> list[dict]:
        return [{"file": str(path), **{k: _jsonable(v) for k, v in row.items()}}
                for path, table, theirs in self._tables(user)
                for row in table.filter(theirs).to_pylist()]

    def erase(self, user: str) -> int:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        erased = 0
        for path, table, theirs in list(self._tables(user)):
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            pq.write_table(table.filter(pc.invert(theirs)), temporary)
            os.replace(temporary, path)
            erased += pc.sum(theirs).as_py()
        return erased


@dataclass
class JsonLines(Store):
    name: str
    paths: Callable[[], Iterable[Path]]
    user_of: Callable[[dict], str | None] = lambda record: record.get(USER_KEY)

    def _theirs(self, path: Path, user: str) -> Iterable[tuple[int, bytes, dict]]:
        """(offset, line, record) of the user's lines; a cheap byte test first."""
        token = user.encode()
        offset = 0
        with open(path, "rb") as handle:
            for line in handle:
                if token in line and line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut by a crash
                        record = None
                    if isinstance(record, dict) and self.user_of(record) == user:
                        yield offset, line, record
                offset += len(line)

    def export(self, user: str) -> list[dict]:
        return [{"file": str(path), **record} for path in self.paths()
                for _, _, record in self._theirs(path, user)]

    def erase(self, user: str) -> int:
        erased = 0
        for path in self.paths():
            found = [(offset, line) for offset, line, _ in self._theirs(path, user)]
            if not found:
                continue
            fd = os.open(path, os.O_WRONLY)
            try:
                for offset, line in found:
                    body = len(line.rstrip(b"\n"))
                    os.pwrite(fd, b" " * body, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            erased += len(found)
        return erased


def quarantined_user(record: dict) -> str | None:
    """The user a quarantined row names: the batch job's raw CSV line or parsed row
    (users and ratings tables), or the stream worker's event."""
    if isinstance(record.get("event"), dict):
        return record["event"].get(USER_KEY)
    if record.get("table") not in ("users", "ratings"):
        return None
    row = str(record.get("row", ""))
    if row.startswith("{"):
        try:
            return json.loads(row).get(USER_KEY)
        except (ValueError, AttributeError):
            return None
    return _csv_user(row, 0)  # user_id is the first column of both raw tables


@dataclass
class OnlineRows(Store):
    """The user's rows in Feast's online store, for the views keyed by user."""
    name: str
    config: object  # libs.feature_store_config.FeatureStoreConfig
    store_dir: Path
    views: dict[str, list[str]]  # view -> its features

    def _sqlite(self):
        import sqlite3

        path = self.store_dir / self.config.online_store.path
        return sqlite3.connect(path, timeout=30) if path.exists() else None

    def _redis(self):
        import redis

        options = self.config.online_store.redis_address()
        return redis.Redis(host=options["host"], port=options["port"],
                           db=options.get("db", 0), password=options.get("password"),
                           ssl=options.get("ssl", False), socket_timeout=10)

    def _key(self, user: str) -> bytes:
        from libs.online_store import entity_key

        return entity_key(USER_KEY, user)

    def export(self, user: str) -> list[dict]:
        from libs import murmur3
        from libs.online_store import python_value

        found = []
        if self.config.online_store.type == "sqlite":
            db = self._sqlite()
            if db is None:
                return []
            with db:
                for view in self.views:
                    table = f"{self.config.project}_{view}"
                    for feature, raw, at in db.execute(
                            f'SELECT feature_name, value, event_ts FROM "{table}" '
                            "WHERE entity_key = ?", [self._key(user)]):
                        found.append({"view": view, "feature": feature,
                                      "value": _jsonable(python_value(raw)),
                                      "event_time": str(at)})
            db.close()
            return found
        client = self._redis()
        stored = client.hgetall(self._key(user) + self.config.project.encode())
        for view, features in self.views.items():
            for feature in features:
                raw = stored.get(struct.pack("<I", murmur3.hash32(f"{view}:{feature}")))
                if raw is not None:
                    found.append({"view": view, "feature": feature,
                                  "value": _jsonable(python_value(raw))})
        client.close()
        return found

    def inactive(self, before: float, view: str = "user_activity") -> list[str]:
        """Users whose newest row of `view` (their activity: written at each rating) is
        older than `before` (seconds)."""
        if self.config.online_store.type == "sqlite":
            db = self._sqlite()
            if db is None:
                return []
            with db:
                keys = [k for (k,) in db.execute(
                    f'SELECT entity_key FROM "{self.config.project}_{view}" '
                    "GROUP BY entity_key HAVING MAX(event_ts) < ?", [int(before)])]
            db.close()
            return [user_of_key(k) for k in keys]
        from google.protobuf.timestamp_pb2 import Timestamp

        client = self._redis()
        prefix, found = self._key(""), []
        prefix = prefix[:len(prefix) - 4]  # the join key's header, before the value's
        for key in client.scan_iter(match=b"*" + self.config.project.encode(), count=1000):
            if not key.startswith(prefix):
                continue
            raw = client.hget(key, f"_ts:{view}")
            if raw is not None and Timestamp.FromString(raw).seconds < before:
                found.append(user_of_key(key[:-len(self.config.project)]))
        client.close()
        return found

    def erase(self, user: str) -> int:
        if self.config.online_store.type == "redis":
            client = self._redis()
            key = self._key(user) + self.config.project.encode()
            fields = client.hlen(key)
            client.delete(key)
            client.close()
            return fields
        db = self._sqlite()
        if db is None:
            return 0
        erased = 0
        # a plain DELETE leaves the rows' bytes in free pages (and a WAL) until reused
        db.execute("PRAGMA secure_delete = ON")
        with db:
            for view in self.views:
                erased += db.execute(f'DELETE FROM "{self.config.project}_{view}" '
                                     "WHERE entity_key = ?", [self._key(user)]).rowcount
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        return erased


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class StreamEntries(Store):
    name: str
    client: object  # redis.Redis
    stream: str
    batch: int = 10_000

    def _theirs(self, user: str) -> Iterable[tuple[str, dict]]:
        start = "-"
        while True:
            entries = self.client.xrange(self.stream, start, "+", count=self.batch)
            for entry_id, fields in entries:
                fields = {_text(k): _text(v) for k, v in fields.items()}
                if fields.get(USER_KEY) == user:
                    yield _text(entry_id), fields
            if len(entries) < self.batch:
                return
            start = "(" + _text(entries[-1][0])

    def export(self, user: str) -> list[dict]:
        return [{"stream": self.stream, "entry_id": entry_id, **fields}
                for entry_id, fields in self._theirs(user)]

    def erase(self, user: str) -> int:
        ids = [entry_id for entry_id, _ in self._theirs(user)]
        for start in range(0, len(ids), 1000):
            self.client.xdel(self.stream, *ids[start:start + 1000])
        return len(ids)


@dataclass
class OutcomeKeys(Store):
    """The router's dedupe keys of outcome events (they expire within minutes, but a
    client may put the user's id in an event id): found through the outcome log, so
    erased before it."""
    name: str
    client: object  # redis.Redis
    outcome_log: JsonLines

    def _keys(self, user: str) -> list[str]:
        from services.router.outcome_stream import KEY_PREFIX

        return [KEY_PREFIX + str(r["event_id"]) for r in self.outcome_log.export(user)
                if r.get("event_id")]

    def export(self, user: str) -> list[dict]:
        return [{"key": key} for key in self._keys(user) if self.client.exists(key)]

    def erase(self, user: str) -> int:
        keys = self._keys(user)
        return self.client.delete(*keys) if keys else 0


@dataclass
class Allowlists(Store):
    name: str
    document: object  # services.router.experiment_admin.ExperimentDocument

    def export(self, user: str) -> list[dict]:
        return [{"experiment": key, "arm": arm}
                for key, arm in self.document.pinned(user).items()]

    def erase(self, user: str) -> int:
        return len(self.document.unpin("privacy erasure", user))


@dataclass
class MaskedKeys(Store):
    """An audit log that must keep every entry (who changed what) but may name the user
    as a key (an allowlist's user -> arm): the key is masked in place, same length."""
    name: str
    paths: Callable[[], Iterable[Path]]

    def export(self, user: str) -> list[dict]:
        token = json.dumps(user).encode() + b":"
        found = []
        for path in self.paths():
            with open(path, "rb") as handle:
                found += [{"file": str(path), "entry": json.loads(line)}
                          for line in handle if token in line]
        return found

    def erase(self, user: str) -> int:
        token = json.dumps(user).encode() + b":"
        mask = b'"' + b"*" * (len(token) - 3) + b'":'
        erased = 0
        for path in self.paths():
            offset, edits = 0, []
            with open(path, "rb") as handle:
                for line in handle:
                    start = line.find(token)
                    while start >= 0:
                        edits.append(offset + start)
                        start = line.find(token, start + 1)
                    offset += len(line)
            if edits:
                fd = os.open(path, os.O_WRONLY)
                try:
                    for at in edits:
                        os.pwrite(fd, mask, at)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                erased += len(edits)
        return erased


@dataclass
class Retrained:
    """What was trained on the user: the training sets and examples that hold their
    ratings, and every model version trained before the erasure. Listed, not erased."""
    workdir: Path

    def training_sets(self, user: str) -> list[str]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        held = []
        for path in sorted((self.workdir / "data" / "training_sets").glob("span-*/*.parquet")):
            table = pq.read_table(path, columns=None)
            if USER_KEY in table.column_names and pc.any(
                    pc.equal(table[USER_KEY], user)).as_py():
                held.append(str(path.parent))
        return sorted(set(held))

    def model_versions(self) -> list[str]:
        repo = self.workdir / "model_repo"
        return sorted(f"{p.parent.name}/{p.name}" for p in repo.glob("*/*")
                      if p.is_dir() and p.name.isdigit())

    def derived(self) -> list[str]:
        """Copies the pipeline keeps of its inputs (examples, its root's artifacts)."""
        return [str(p) for p in (self.workdir / "data" / "examples",
                                 self.workdir / "pipeline") if p.exists()]
