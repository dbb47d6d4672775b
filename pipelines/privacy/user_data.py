"""One user's data: find it, export it, erase it (GDPR Articles 15 and 17).

  python -m pipelines.privacy.user_data [--config FILE] [--set key=value ...] COMMAND
    find USER                  how many records each store holds about the user
    export USER [--out FILE]   everything held about the user, as JSON
    erase USER --ticket REF    erase the user everywhere, then search every store again

Erasure first puts the user on the deletion list (libs/deletion_list.py), so the batch
feature job, the stream worker and the outcome publisher drop whatever still arrives
about them; then it erases store by store (pipelines/privacy/stores.py): Feast's online
store, the event stream, the router's exposure, shadow and outcome logs, the quarantines,
the landed raw data and the stream's event log, the feature tables, the experiments'
allowlists (and masks the user's id in their audit log). It searches every store again
and appends the erasure record to <workdir>/privacy/erasures.jsonl: when, the request's
reference, who, the user's SHA-256 (not the id), the records erased per store, and what
was trained on the user and so still holds them until retrained (the training sets, the
model versions trained before the erasure, the pipeline's copies). Retraining and then
deleting those is the remedy (docs/privacy.md).

Run it where the stores are reachable (the workdir; the Redis of the online store and the
stream), or with `--router HOST:PORT` to have a router's PrivacyService do it over the
stores its config names (an editor's token in $RECSYS_ADMIN_TOKEN; `who` is then the
token's holder). A bad config or user id prints one line naming the field and exits 2;
a refused call prints its status and exits 1.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from libs import config as config_lib
from libs import deletion_list, files
from libs.feature_stream import DEFAULT_STREAM
from pipelines.privacy.retention import Retention

DEFAULT_CONFIG = Path(__file__).with_name("privacy.yaml")
RECORDS = Path("privacy") / "erasures.jsonl"


@dataclass
class PrivacyConfig:
    workdir: str = "var"  # the local stores' root (as the jobs' --workdir)
    feature_store_config: str = "pipelines/features/local.yaml"  # its online store
    feature_store_dir: str = "features"  # relative: to the workdir
    stream_redis: str = ""  # host:port of the Redis holding the event stream; "" = none
    stream_redis_ssl: bool = False
    stream: str = DEFAULT_STREAM
    # the router's log folders, as its config names them (relative: to the workdir)
    exposure_log_dir: str = "exposures"
    shadow_log_dir: str = "shadow"
    outcome_log_dir: str = "outcomes"
    experiments_file: str = "experiments.yaml"  # relative: to the workdir
    experiment_audit_log: str = "experiments_audit.jsonl"  # relative: to the workdir
    # days each store keeps data (0: forever), enforced by pipelines/privacy/retention.py
    retention: Retention = field(default_factory=Retention)

    def validate(self) -> None:
        if self.stream_redis:
            host, _, port = self.stream_redis.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("field 'stream_redis' must be host:port or empty, got "
                                 f"{self.stream_redis!r}")
        if not self.stream:
            raise ValueError("field 'stream' must not be empty")

    def path(self, name: str) -> Path:
        return Path(self.workdir) / name  # an absolute name stays itself


def check_user(user: str) -> str:
    if not user or user != user.strip() or not user.isprintable():
        raise ValueError(f"user id {user!r}: must be non-empty, printable, without "
                         "leading or trailing spaces")
    return user


def stores(config: PrivacyConfig) -> list:
    """Every store the config reaches, in erasure order: what serves first, then the
    logs, then the sources a rebuild reads."""
    from libs.feature_store_config import FeatureStoreConfig
    from pipelines.features import batch_job, definitions
    from pipelines.privacy import stores as s
    from services.router.experiment_admin import ExperimentDocument

    workdir = Path(config.workdir)
    raw = workdir / "data" / "raw"
    tables = workdir / "features" / "tables"
    store_config = config_lib.load(FeatureStoreConfig, config.feature_store_config)
    views = {v.name: [f.name for f in v.features]
             for v in definitions.definitions(tables)["views"] if v.entities == ["user"]}
    found = [s.OnlineRows("online store", store_config, config.path(config.feature_store_dir),
                          views)]
    logs = {kind: s.JsonLines(f"{kind} log", lambda d=config.path(name):
                              sorted(d.glob("*.jsonl")) if d.is_dir() else [])
            for kind, name in (("exposure", config.exposure_log_dir),
                               ("shadow", config.shadow_log_dir),
                               ("outcome", config.outcome_log_dir))}
    if config.stream_redis:
        from libs.feature_stream import redis_client

        client = redis_client(config.stream_redis, config.stream_redis_ssl)
        found += [s.StreamEntries("event stream", client, config.stream),
                  # dedupe keys may name the user in an event id: found through the
                  # outcome log, so erased before it
                  s.OutcomeKeys("outcome dedupe keys", client, logs["outcome"])]
    found += list(logs.values())
    found += [
        s.JsonLines("feature job quarantine", lambda: sorted(
            (tables / "quarantine").glob("*.jsonl")), s.quarantined_user),
        s.JsonLines("stream quarantine", lambda: sorted(
            (workdir / "features" / "stream_quarantine").glob("*.jsonl")),
            s.quarantined_user),
        s.CsvRows("raw users", lambda: [p for p in [raw / batch_job.RAW_TABLES["users"]]
                                        if p.exists()]),
        s.CsvRows("raw ratings", lambda: [p for p in [raw / batch_job.RAW_TABLES["ratings"]]
                                          if p.exists()]),
        s.CsvRows("stream event log", lambda: sorted(
            (raw / batch_job.EVENTS_DIR).glob("*.csv"))),
        s.ParquetRows("feature tables", lambda: sorted(tables.glob("*/*.parquet"))),
    ]
    experiments = config.path(config.experiments_file)
    audit = config.path(config.experiment_audit_log)
    if experiments.exists():
        found.append(s.Allowlists("experiment allowlists",
                                  ExperimentDocument(experiments, audit)))
    found.append(s.MaskedKeys("experiment audit log",
                              lambda: [audit] if audit.exists() else []))
    return found


def find(config: PrivacyConfig, user: str) -> dict[str, int]:
    return {store.name: len(store.export(user)) for store in stores(config)}


def export(config: PrivacyConfig, user: str) -> dict:
    from pipelines.privacy.stores import Retrained

    held = Retrained(Path(config.workdir))
    return {"user_id": user, "exported_at": time.time(),
            "stores": {store.name: store.export(user) for store in stores(config)},
            "trained_on": {"training_sets": held.training_sets(user)}}


def erase(config: PrivacyConfig, user: str, ticket: str, who: str, progress=print) -> dict:
    from pipelines.privacy.stores import Retrained

    listed = deletion_list.add(deletion_list.path_in(config.workdir), user)
    progress(f"privacy: user on the deletion list{'' if listed else ' (already)'}")
    erased = {}
    every = stores(config)
    for store in every:
        erased[store.name] = store.erase(user)
        progress(f"privacy: {store.name}: {erased[store.name]} erased")
    left = {store.name: n for store in every if (n := len(store.export(user)))}
    held = Retrained(Path(config.workdir))
    record = {"at": time.time(), "ticket": ticket, "who": who,
              "user_sha256": deletion_list.digest(user), "erased": erased,
              "left": left, "retrain": {"training_sets": held.training_sets(user),
                                        "model_versions": held.model_versions(),
                                        "pipeline_copies": held.derived()}}
    path = Path(config.workdir) / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    files.append_line(path, json.dumps(record))
    return record


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field of the config")
    p.add_argument("--router", default="", metavar="HOST:PORT",
                   help="ask this router's PrivacyService instead of reaching the stores")
    p.add_argument("--timeout", type=float, default=600, help="seconds, with --router")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("find", help="records per store").add_argument("user")
    out = commands.add_parser("export", help="everything held about the user, as JSON")
    out.add_argument("user")
    out.add_argument("--out", default="-", help="a file, or - for standard output")
    gone = commands.add_parser("erase", help="erase the user everywhere")
    gone.add_argument("user")
    gone.add_argument("--ticket", required=True,
                      help="the request's reference (recorded with the erasure)")
    gone.add_argument("--who", default=getpass.getuser(), help="who erases (recorded)")
    return p


def through_router(args) -> dict:
    """find / export / erase by the router's PrivacyService; the answer as `erase` and
    `export` return it."""
    import grpc

    from recsys.v1 import privacy_pb2, privacy_pb2_grpc

    token = os.environ.get("RECSYS_ADMIN_TOKEN", "")
    call = {"metadata": (("authorization", f"Bearer {token}"),), "timeout": args.timeout}
    with grpc.insecure_channel(args.router) as channel:
        stub = privacy_pb2_grpc.PrivacyServiceStub(channel)
        if args.command == "erase":
            answer = stub.EraseUser(privacy_pb2.EraseUserRequest(
                user_id=args.user, ticket=args.ticket), **call)
            return json.loads(answer.record_json)
        answer = stub.ExportUser(privacy_pb2.ExportUserRequest(user_id=args.user), **call)
        exported = json.loads(answer.json)
        if args.command == "find":
            return {"counts": {name: len(found) for name, found in exported["stores"].items()}}
        return exported


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.router:
        if args.command == "erase" and not args.ticket.strip():
            print("error: --ticket must not be empty", file=sys.stderr)
            return 2
        import grpc

        try:
            answer = through_router(args)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        return report(args, answer)
    try:
        config = config_lib.load(PrivacyConfig, args.config, env_prefix="RECSYS_PRIVACY",
                                 overrides=config_lib.parse_overrides(args.set),
                                 overrides_name="--set")
        user = check_user(args.user)
    except (config_lib.ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "erase" and not args.ticket.strip():
        print("error: --ticket must not be empty", file=sys.stderr)
        return 2
    import redis

    try:
        if args.command == "find":
            answer = {"counts": find(config, user)}
        elif args.command == "export":
            answer = export(config, user)
        else:
            answer = erase(config, user, args.ticket, args.who)
    except config_lib.ConfigError as err:  # the feature store config it names
        print(f"error: {err}", file=sys.stderr)
        return 2
    except redis.RedisError as err:
        print(f"error: Redis: {err} (the online store's or the stream's; run it again "
              "once Redis answers: what was erased stays erased)", file=sys.stderr)
        return 1
    return report(args, answer)


def report(args, answer: dict) -> int:
    """Prints a command's answer: counts (find), the JSON (export), the outcome (erase)."""
    if args.command == "find":
        for name, count in answer["counts"].items():
            print(f"{count:8d}  {name}")
    elif args.command == "export":
        text = json.dumps(answer, indent=2, default=str) + "\n"
        if args.out == "-":
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text)
            print(f"privacy: exported to {args.out}")
    else:
        record = answer
        if record["left"]:
            print(f"error: still found after erasure: {record['left']}", file=sys.stderr)
            return 1
        retrain = record["retrain"]
        print(f"privacy: erased {sum(record['erased'].values())} records; "
              f"{len(retrain['training_sets'])} training sets and "
              f"{len(retrain['model_versions'])} model versions were trained on the user: "
              "retrain, then delete them (docs/privacy.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
