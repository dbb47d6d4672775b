"""Experimenters' CLI over the router's ExperimentService.

  python -m tools.experiments [--router HOST:PORT] COMMAND
    list                          every experiment (YAML) and the config version
    get KEY
    create FILE                   an experiment as YAML: layer, key, arms, traffic, ...
    update FILE [--force]         replaces the experiment with the same key
    pause KEY | resume KEY | stop KEY
    arm USER [--attribute k=v ...]  the arms a user is in and what they are served
    switch SERVING                blue/green: what users outside experiments are served
    shadow SHARE SERVING          send SHARE percent of requests also to a shadow (0: off)
      SERVING: --retrieval-version N --ranking-version N --num-candidates N
               --rank true|false --candidates model|popular
               --retrieval-version-label L --ranking-version-label L (a models.config
               label such as stable; a model's label replaces its version and back)
               (only those given change)
    hash-token                    reads a token on stdin, prints the sha256 the router's
                                  admin_tokens_file holds for it

Changes send the token in $RECSYS_ADMIN_TOKEN. `--expect VERSION` refuses the change if
the running config moved on since you read it.
"""
from __future__ import annotations

import argparse
import os
import sys

import grpc
import yaml
from google.protobuf import json_format

from recsys.v1 import experiments_pb2, experiments_pb2_grpc
from services.router.experiment_admin import AdminTokens

STATUS_COMMANDS = {"pause": "PauseExperiment", "resume": "ResumeExperiment",
                   "stop": "StopExperiment"}
EXPERIMENT_FIELDS = {f.name for f in experiments_pb2.Experiment.DESCRIPTOR.fields}
SERVING_FLAGS = {"retrieval_version": int, "ranking_version": int, "num_candidates": int,
                 "rank": lambda text: text.lower() in ("true", "yes", "1"), "candidates": str,
                 "retrieval_version_label": str, "ranking_version_label": str}


def as_yaml(message) -> str:
    return yaml.safe_dump(json_format.MessageToDict(message, preserving_proto_field_name=True),
                          sort_keys=False)


def experiment_from_file(path: str) -> experiments_pb2.Experiment:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"error: {path}: {err}") from None
    if not isinstance(raw, dict):
        raise SystemExit(f"error: {path}: must be a mapping of experiment fields")
    unknown = sorted(set(raw) - EXPERIMENT_FIELDS)
    if unknown:
        raise SystemExit(f"error: {path}: unknown field(s) {unknown}; "
                         f"allowed: {sorted(EXPERIMENT_FIELDS)}")
    if "targeting" in raw:
        raw["targeting"] = {k: {"values": v} for k, v in raw["targeting"].items()}
    try:
        return json_format.ParseDict(raw, experiments_pb2.Experiment())
    except json_format.ParseError as err:
        raise SystemExit(f"error: {path}: {err}") from None


def serving(args) -> experiments_pb2.Serving:
    return experiments_pb2.Serving(**{name: getattr(args, name) for name in SERVING_FLAGS
                                      if getattr(args, name) is not None})


def add_serving_flags(sub) -> None:
    for name, kind in SERVING_FLAGS.items():
        sub.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind)


def run(args, stub) -> str:
    token = os.environ.get("RECSYS_ADMIN_TOKEN", "")
    change = {"metadata": (("authorization", f"Bearer {token}"),)}
    if args.command == "list":
        return as_yaml(stub.ListExperiments(experiments_pb2.ListExperimentsRequest()))
    if args.command == "get":
        return as_yaml(stub.GetExperiment(experiments_pb2.ExperimentKey(key=args.key)))
    if args.command == "create":
        return as_yaml(stub.CreateExperiment(experiments_pb2.CreateExperimentRequest(
            experiment=experiment_from_file(args.file), expected_config_version=args.expect),
            **change))
    if args.command == "update":
        return as_yaml(stub.UpdateExperiment(experiments_pb2.UpdateExperimentRequest(
            experiment=experiment_from_file(args.file), force=args.force,
            expected_config_version=args.expect), **change))
    if args.command in STATUS_COMMANDS:
        call = getattr(stub, STATUS_COMMANDS[args.command])
        return as_yaml(call(experiments_pb2.ExperimentKey(
            key=args.key, expected_config_version=args.expect), **change))
    if args.command == "switch":
        return as_yaml(stub.SwitchDefaults(experiments_pb2.SwitchDefaultsRequest(
            defaults=serving(args), expected_config_version=args.expect), **change))
    if args.command == "shadow":
        return as_yaml(stub.SetShadow(experiments_pb2.SetShadowRequest(
            share=args.share, serves=serving(args), expected_config_version=args.expect),
            **change))
    attributes = dict(pair.partition("=")[::2] for pair in args.attribute)
    return as_yaml(stub.GetAssignment(experiments_pb2.GetAssignmentRequest(
        user_id=args.user, attributes=attributes)))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--router", default="127.0.0.1:50051")
    p.add_argument("--timeout", type=float, default=10.0)
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("list")
    commands.add_parser("hash-token")
    for name in ("get", *STATUS_COMMANDS):
        sub = commands.add_parser(name)
        sub.add_argument("key")
        if name in STATUS_COMMANDS:
            sub.add_argument("--expect", default="", metavar="VERSION")
    for name in ("create", "update"):
        sub = commands.add_parser(name)
        sub.add_argument("file")
        sub.add_argument("--expect", default="", metavar="VERSION")
        if name == "update":
            sub.add_argument("--force", action="store_true",
                             help="re-bucket the users of a running experiment")
    switch = commands.add_parser("switch")
    add_serving_flags(switch)
    shadow = commands.add_parser("shadow")
    shadow.add_argument("share", type=float, help="percent of requests; 0 turns it off")
    add_serving_flags(shadow)
    for sub in (switch, shadow):
        sub.add_argument("--expect", default="", metavar="VERSION")
    arm = commands.add_parser("arm")
    arm.add_argument("user")
    arm.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "hash-token":
        print(AdminTokens.digest(sys.stdin.readline().strip()))
        return 0
    with grpc.insecure_channel(args.router) as channel:
        stub = experiments_pb2_grpc.ExperimentServiceStub(channel)
        try:
            print(run(args, _with_timeout(stub, args.timeout)), end="")
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0


class _with_timeout:
    """The stub, every call bounded by the same deadline."""

    def __init__(self, stub, timeout: float):
        self._stub, self._timeout = stub, timeout

    def __getattr__(self, name):
        call = getattr(self._stub, name)
        return lambda request, **kwargs: call(request, timeout=self._timeout, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
