"""The loop's retraining: the steps of `make train` and of the retrain CronJob, in order,
stopping at the first that fails. Drift means the data moved, so the training set is
rebuilt from everything landed (the stream's events included) before the pipeline runs;
retraining on the old set would learn the old taste again.

  python -m pipelines.loop.retrain [--workdir var] [--config FEATURE_STORE_YAML]
      [--training-python PATH] [--set key=value ...]   (--set: pipeline overrides)

Exit code: 0, or the failing step's (its name on stderr); each step's output goes to
this command's output (the controller's retrain.log).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING_PYTHON = ROOT / ".venv" / "training" / "bin" / "python"


def steps(workdir: str, config: str, training_python: str,
          overrides: list[str]) -> list[tuple[str, list[str]]]:
    """(name, command) in order; the feature job and the pipeline need the training
    environment, Feast the serving one (this process's)."""
    store = ["--config", config] if config else []
    return [
        ("feature tables", [training_python, "-m", "pipelines.features.batch_job",
                            "--workdir", workdir]),
        ("ingest", [sys.executable, "-m", "pipelines.features.ingest", "--workdir",
                    workdir, *store]),
        ("training set", [sys.executable, "-m", "pipelines.features.training_set",
                          "--workdir", workdir, *store]),
        ("pipeline", [training_python, "-m", "pipelines.training.run", "--workdir", workdir,
                      *[a for o in overrides for a in ("--set", o)]]),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--config", default="", help="feature store config (default: "
                        "pipelines/features/local.yaml)")
    parser.add_argument("--training-python", default=str(TRAINING_PYTHON))
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="KEY=VALUE", help="pipeline config override")
    args = parser.parse_args(argv)
    if not Path(args.training_python).exists():
        print(f"error: --training-python {args.training_python} does not exist (make setup)",
              file=sys.stderr)
        return 2
    for name, command in steps(args.workdir, args.config, args.training_python,
                               args.overrides):
        started = time.monotonic()
        print(f"retrain: {name}", flush=True)
        code = subprocess.run(command, cwd=ROOT).returncode
        if code != 0:
            print(f"error: retraining step '{name}' failed (exit {code})", file=sys.stderr)
            return code
        print(f"retrain: {name} done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
