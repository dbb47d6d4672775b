"""Version labels of a TF Serving models.config, edited safely: the rollout's operator tool.

  python -m tools.model_labels --config models.config COMMAND
    show                      each model: base path, version policy, labels, versions on disk
    set MODEL LABEL VERSION   LABEL names VERSION, which joins the model's specific version
                              policy (so it loads beside the versions there)
    load MODEL VERSION        VERSION joins the specific version policy, no label moves
    promote MODEL             stable := canary's version (canary keeps naming it, so users
                              still sent to canary see no change); only that version stays
    rollback MODEL            canary removed; only stable's version stays loaded

A rollout: `set ranking canary N` (stable names M; M and N loaded), the router sends a
share of users to an arm serving `ranking_version_label: canary`, then `promote ranking`
or (after stopping that experiment) `rollback ranking`. The model server re-reads the file
and moves a label once the version it names has loaded; real TF Serving refuses a label
on a version that has not loaded yet, so there run `load` first and `set` once it has.

The file is replaced atomically (a temporary file renamed over it): a server polling it
reads the old config or the new, never half of one; other models are left as they were.
A refused change (unknown model, a version missing from the model's base_path when that
path is on this machine, a malformed label) prints one line naming the field, exits 2
and leaves the file untouched.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import yaml
from google.protobuf import text_format

from libs import files, model_config
from libs.config import ConfigError
from libs.experiments import LABEL

STABLE, CANARY = "stable", "canary"


class Refused(Exception):
    pass


def find(parsed, name: str, path: Path):
    names = [m.name for m in parsed.model_config_list.config]
    for model in parsed.model_config_list.config:
        if model.name == name:
            return model
    raise Refused(f"field 'model': {path} has no model {name!r} (it has {', '.join(names)})")


def on_disk(model, path: Path) -> list[int] | None:
    """The version folders under the model's base_path; None when that path is not on
    this machine (e.g. object storage), and then nothing is checked against it."""
    base = model_config.base_path(model, path)
    if not base.is_dir():
        return None
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


def version_number(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise Refused(f"field 'version' must be a positive integer, got {text!r}")
    return int(text)


def check_version(model, version: int, path: Path) -> None:
    found = on_disk(model, path)
    if found is not None and version not in found:
        raise Refused(f"field 'version': model {model.name!r} has no version {version} in "
                      f"{model_config.base_path(model, path)} (it has {found or 'none'})")


def labelled(model, label: str, path: Path) -> int:
    if label not in model.version_labels:
        raise Refused(f"field 'version_labels': model {model.name!r} has no {label!r} label "
                      f"in {path}")
    return model.version_labels[label]


def policy_versions(model, path: Path) -> list[int]:
    """The versions the model's policy loads now (latest and all: from the files here)."""
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    if kind == "specific":
        return list(policy.specific.versions)
    found = on_disk(model, path) or []
    return found if kind == "all" else found[-(policy.latest.num_versions or 1):]


def load_only(model, versions) -> None:
    """A specific version policy of exactly these versions."""
    model.model_version_policy.Clear()
    model.model_version_policy.specific.versions.extend(sorted(set(versions)))


def change(parsed, args, path: Path) -> None:
    model = find(parsed, args.model, path)
    if args.command == "set" and not LABEL.fullmatch(args.label):
        raise Refused(f"field 'label' must be a label such as stable or canary "
                      f"(letters, digits, _ . -), got {args.label!r}")
    if args.command in ("set", "load"):
        version = version_number(args.version)
        check_version(model, version, path)
        # a latest or all policy turns specific, keeping what it loads now
        was = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        load_only(model, [*policy_versions(model, path), *model.version_labels.values(),
                          version])
        if was != "specific" and on_disk(model, path) is None:
            print(f"note: model {model.name!r}: its {was} policy is now specific: "
                  f"{list(model.model_version_policy.specific.versions)} (its base_path is "
                  "not on this machine, so the versions it loaded were not seen)",
                  file=sys.stderr)
        if args.command == "set":
            model.version_labels[args.label] = version
    elif args.command == "promote":
        version = labelled(model, CANARY, path)
        check_version(model, version, path)
        model.version_labels[STABLE] = version  # canary stays: same version, no change
        load_only(model, [version])
    elif args.command == "rollback":
        version = labelled(model, STABLE, path)
        check_version(model, version, path)
        model.version_labels.pop(CANARY, None)  # already gone: nothing to roll back
        load_only(model, [version])


def describe(parsed, path: Path, only: str = "") -> dict:
    described = {}
    for model in parsed.model_config_list.config:
        if only and model.name != only:
            continue
        policy = model.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        entry = {"base_path": str(model_config.base_path(model, path)),
                 "policy": {"specific": {"specific": sorted(policy.specific.versions)},
                            "latest": {"latest": policy.latest.num_versions or 1},
                            "all": "all"}[kind],
                 "labels": dict(sorted(model.version_labels.items()))}
        found = on_disk(model, path)
        if found is not None:
            entry["on_disk"] = found
        described[model.name] = entry
    return described


def write(path: Path, parsed) -> None:
    original = path.read_text()
    # the file's opening comment stays (text_format writes no comments)
    header = "".join(itertools.takewhile(lambda line: line.startswith("#"),
                                         original.splitlines(keepends=True)))
    # readers (a server polling it) see the old file or the new, never half
    files.replace_atomically(path, header + text_format.MessageToString(parsed),
                             mode=path.stat().st_mode & 0o777)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the models.config to read and edit")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("show")
    labels = commands.add_parser("set")
    labels.add_argument("model")
    labels.add_argument("label")
    labels.add_argument("version")
    load = commands.add_parser("load")
    load.add_argument("model")
    load.add_argument("version")
    for name in ("promote", "rollback"):
        commands.add_parser(name).add_argument("model")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    path = Path(args.config)
    try:
        parsed = model_config.read(path)
        model_config.sources(parsed, path)  # the file as the server would take it
        if args.command != "show":
            change(parsed, args, path)
            model_config.sources(parsed, path)
            write(path, parsed)
    except (Refused, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write {path}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(describe(parsed, path, getattr(args, "model", "")),
                         sort_keys=False, default_flow_style=None), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
