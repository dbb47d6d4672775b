"""Online quality check: the router's exposure and outcome logs joined, by model version,
experiment arm and candidate source, and each served version's accuracy on the labels
that came later against its evaluation's promise (quality.py says what each figure is).

  python -m pipelines.monitoring.quality_check [--workdir var] [--exposures DIR]
      [--outcomes DIR] [--until now|latest|DATE] [--days 1] [--label-days 14] [--k 10]
      [--tolerance 0.2] [--min-samples 200] [--attribution-hours 24]
      [--sample-users 1.0] [--raw-dir DIR]
      [--out DIR] [--pushgateway HOST:PORT]

Engagement is measured on the answers of the last `--days`; the delayed-label figures on
the answers of the `--days` before `--label-days` ago, whose labels are complete. Promises:
WORKDIR/model_repo/<model>/<version>/evaluation.json. Writes OUT/quality.json and
OUT/quality.html, prints the verdicts, optionally pushes every figure (job
recsys_online_quality, push.py). Exit code 0: no version below its promise, 1: one is,
2: bad input (a missing directory, an empty window, a malformed line: one line on stderr
naming it; nothing is pushed); a push that fails is 2 too, after the report.
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import pandas as pd

from libs import version_evaluation
from pipelines.experiments import exposures as exposure_log
from pipelines.monitoring import predictions, push, quality, quality_report
from pipelines.monitoring.windows import DAY, InputError, Window, iso, parse_when

ROOT = Path(__file__).resolve().parents[2]


def _records(directory: Path, window: Window, what: str, sample_users: float):
    """The lines of the log files whose day overlaps `window`, of a stable `sample_users`
    share of the users (by a hash of the id: the same users every run, every log)."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no {what} directory")
    limit = sample_users * 2 ** 32
    for path in predictions.log_files(directory):
        if predictions.day_overlaps(path, [window]):
            for where, record in exposure_log.json_lines(path):
                user = record.get("user_id")
                # a line without a user id goes through: the parser names the error
                if sample_users >= 1 or not isinstance(user, str) \
                        or zlib.crc32(user.encode()) < limit:
                    yield where, record


def read_logs(exposures_dir: Path, outcomes_dir: Path, until: float | str, days: float,
              label_days: float, sample_users: float = 1.0
              ) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(exposures, every outcome, until) over the window both checks need; InputError
    when the engagement window holds no answer."""
    if until == "latest":
        until = predictions.latest(exposures_dir) + 0.001
    window = Window("checked", until - (days + label_days) * DAY, until)
    exposures = exposure_log.exposures_frame(
        _records(exposures_dir, window, "exposure log (the router's exposure_log_dir)",
                 sample_users))
    exposures = exposures[window.holds(exposures.timestamp)].reset_index(drop=True)
    start = until - days * DAY
    if not (exposures.timestamp >= start).any():
        raise InputError(f"{exposures_dir}: no responses between {iso(start)} and "
                         f"{iso(until)}")
    outcomes = exposure_log.outcomes_frame(
        _records(outcomes_dir, window, "outcome log (the router's outcome_log_dir)",
                 sample_users),
        exposure_log.OUTCOME_TYPES)
    outcomes = outcomes[window.holds(outcomes.timestamp)].reset_index(drop=True)
    return exposures, outcomes, until


def catalog_size(raw_dir: Path) -> int | None:
    """Items in the landed catalog (None when there is none: coverage is left out)."""
    from pipelines.features import batch_job

    path = raw_dir / batch_job.RAW_TABLES["items"]
    if not path.is_file():
        return None
    try:
        return int(pd.read_csv(path, usecols=["item_id"], dtype=str).item_id.nunique())
    except (OSError, ValueError) as err:  # pandas says ValueError for a missing column
        raise InputError(f"{path}: cannot read the catalog's item_id column: {err}") from None


def promises(workdir: Path, figures: list[dict]) -> tuple[dict, list[str]]:
    """(model, version) -> evaluation.json of every version the figures name; notes on
    the ones that have none or a malformed one."""
    found, notes = {}, []
    for model, version in sorted({(f["model"], f["version"]) for f in figures
                                  if f["scope"] == "delayed"}):
        path = workdir / "model_repo" / model / str(version) / version_evaluation.FILE
        try:
            found[(model, version)] = version_evaluation.read(path)
        except version_evaluation.EvaluationError as err:
            notes.append(str(err))
    return found, notes


def run(args) -> tuple[dict, list[dict], list[dict]]:
    settings = quality.Settings(k=args.k, label_seconds=args.label_days * DAY,
                                attribution_seconds=args.attribution_hours * 3600,
                                tolerance=args.tolerance, min_samples=args.min_samples)
    workdir = Path(args.workdir)
    exposures_dir = Path(args.exposures) if args.exposures else workdir / "exposures"
    outcomes_dir = Path(args.outcomes) if args.outcomes else workdir / "outcomes"
    exposures, outcomes, until = read_logs(exposures_dir, outcomes_dir, args.until,
                                           args.days, args.label_days, args.sample_users)
    start = until - args.days * DAY
    raw_dir = Path(args.raw_dir) if args.raw_dir else workdir / "data" / "raw"
    figures = quality.measure(exposures, outcomes, start, until, catalog_size(raw_dir),
                              settings)
    found, notes = promises(workdir, figures)
    verdicts = quality.judge(figures, found, settings)
    document = {
        "generated_at": iso(time.time()),
        "engagement_window": {"start": iso(start), "end": iso(until)},
        "label_window": {"start": iso(start - settings.label_seconds),
                         "end": iso(until - settings.label_seconds)},
        "sources": {"exposures": str(exposures_dir), "outcomes": str(outcomes_dir)},
        "responses": int((exposures.timestamp >= start).sum()), "outcomes": len(outcomes),
        "notes": notes,
        "settings": vars(args) | {"until": until},
        "below_promise": any(v["status"] == "below" for v in verdicts)}
    return document, figures, verdicts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="var", help="model repository (promises), raw data")
    p.add_argument("--exposures", default="", help="exposure log directory "
                   "(default WORKDIR/exposures)")
    p.add_argument("--outcomes", default="", help="outcome log directory "
                   "(default WORKDIR/outcomes)")
    p.add_argument("--until", default="now", help="end of the window: now, latest (the "
                   "newest answer), epoch seconds or an ISO 8601 date/time (UTC)")
    p.add_argument("--days", type=float, default=1.0, help="engagement window length")
    p.add_argument("--label-days", type=float, default=14.0,
                   help="how long after an answer its labels count (the promise's)")
    p.add_argument("--k", type=int, default=10, help="hit rate at k")
    p.add_argument("--tolerance", type=float, default=0.2,
                   help="how far (relative) below its promise a version may fall")
    p.add_argument("--min-samples", type=int, default=200,
                   help="fewer users (or rated items) than this: not judged")
    p.add_argument("--attribution-hours", type=float, default=24.0,
                   help="an outcome without a request id joins the latest answer that "
                   "served its item within this many hours")
    p.add_argument("--sample-users", type=float, default=1.0,
                   help="measure this share of the users (the same ones every run): "
                   "memory and time scale with it")
    p.add_argument("--raw-dir", default="", help="landed raw tables, for the catalog's "
                   "size (default WORKDIR/data/raw)")
    p.add_argument("--out", default=str(ROOT / "reports" / "quality"),
                   help="where quality.json and quality.html go")
    p.add_argument("--pushgateway", default="", metavar="HOST:PORT",
                   help=f"push every figure there (job {push.QUALITY_JOB})")
    return p


def _check(args) -> None:
    for name in ("days", "label_days", "attribution_hours"):
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive")
    if args.k < 1 or args.min_samples < 1:
        raise InputError("--k and --min-samples must be at least 1")
    if not 0 <= args.tolerance < 1:
        raise InputError("--tolerance must be in [0, 1)")
    if not 0 < args.sample_users <= 1:
        raise InputError("--sample-users must be in (0, 1]")
    if args.until != "latest":
        args.until = parse_when(args.until, "--until")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        _check(args)
        document, figures, verdicts = run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data, page = quality_report.write(document, figures, verdicts, Path(args.out))
    for note in document["notes"]:
        print(note)
    print(f"{document['responses']:,} answers, {document['outcomes']:,} outcome events")
    print(quality_report.table(verdicts) if verdicts
          else "no delayed labels yet: nothing judged")
    print(f"report: {page}, {data}")
    if args.pushgateway:
        try:
            push.push_quality(args.pushgateway, figures, verdicts, time.time())
        except OSError as err:
            print(f"error: push to the Pushgateway {args.pushgateway} failed: {err}",
                  file=sys.stderr)
            return 2
        print(f"pushed {len(figures)} figures to {args.pushgateway} "
              f"(job {push.QUALITY_JOB})")
    return 1 if document["below_promise"] else 0


if __name__ == "__main__":
    sys.exit(main())
