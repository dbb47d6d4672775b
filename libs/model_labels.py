"""Version labels of a TF Serving models.config, edited safely (the operator's CLI is
tools/model_labels.py, which says what each command does; the loop's controller labels
its canaries through `edit`). A refused change raises Refused naming the field and
leaves the file untouched; the file is replaced atomically, so a server polling it reads
the old config or the new, never half of one.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

from google.protobuf import text_format

from libs import files, model_config
from libs.experiments import LABEL

STABLE, CANARY = "stable", "canary"


class Refused(ValueError):
    """A change the file cannot take; the message names the field."""


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


def change(parsed, command: str, name: str, path: Path, label: str = "",
           version: str = "") -> None:
    """One command (set, load, promote, rollback) applied to the parsed file."""
    model = find(parsed, name, path)
    if command == "set" and not LABEL.fullmatch(label):
        raise Refused(f"field 'label' must be a label such as stable or canary "
                      f"(letters, digits, _ . -), got {label!r}")
    if command in ("set", "load"):
        version = version_number(str(version))
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
        if command == "set":
            model.version_labels[label] = version
    elif command == "promote":
        version = labelled(model, CANARY, path)
        check_version(model, version, path)
        model.version_labels[STABLE] = version  # canary stays: same version, no change
        load_only(model, [version])
    elif command == "rollback":
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


def edit(path: Path, command: str, name: str, label: str = "", version: str = "") -> dict:
    """`command` applied to the models.config at `path` (checked as the server would take
    it, before and after; replaced atomically); what the model looks like then."""
    parsed = model_config.read(path)
    model_config.sources(parsed, path)
    change(parsed, command, name, path, label, version)
    model_config.sources(parsed, path)
    write(path, parsed)
    return describe(parsed, path, name)
