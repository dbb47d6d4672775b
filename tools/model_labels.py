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
import sys
from pathlib import Path

import yaml

from libs import model_config
from libs.config import ConfigError
from libs.model_labels import Refused, describe, edit


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
        if args.command == "show":
            parsed = model_config.read(path)
            model_config.sources(parsed, path)  # the file as the server would take it
            shown = describe(parsed, path)
        else:
            shown = edit(path, args.command, args.model, getattr(args, "label", ""),
                         getattr(args, "version", ""))
    except (Refused, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write {path}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(shown, sort_keys=False, default_flow_style=None), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
