"""Drift check: recent features, labels and served predictions against a reference.

  python -m pipelines.monitoring.check [--workdir var] [--checks features,label,predictions]
      [--until now|latest|DATE] [--recent-days 7] [--reference-days 28]
      [--reference-from DATE] [--reference-set serving|newest|window|DIR]
      [--models-config FILE] [--experiments FILE]
      [--raw-dir DIR] [--exposures DIR] [--config FILE] [--set key=value]
      [--out DIR] [--pushgateway HOST:PORT]

features, label  landed ratings in the recent window against the reference training set
                 (default: the ones the served versions of both models learnt from, see
                 served.py; checks against a retrieval-only set are named
                 retrieval_features and retrieval_label; `window`: the landed ratings in
                 the reference window); see features.py
predictions      the router's exposure log, recent window against the reference window:
                 the scores of the served ranking version's answers (see served.py) and
                 the share of fallbacks; see predictions.py
Thresholds: drift.yaml (config.py), overridden by RECSYS_DRIFT_<FIELD> variables and
--set. Writes OUT/drift.json and OUT/drift.html, prints the table, optionally pushes the
scores to a Pushgateway (push.py). Exit code 0: no drift, 1: drift, 2: bad input (a missing
file, an empty or too small window, a malformed line, an invalid config: one line on
stderr naming it; nothing is pushed); a push that fails is 2 too, after the report.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from libs import config as config_lib
from pipelines.monitoring import drift, predictions, push, report
from pipelines.monitoring import served as served_lib
from pipelines.monitoring.config import DEFAULT_CONFIG, DriftConfig
from pipelines.monitoring.features import (PREDICTIONS, Landed, catalogue,
                                           named_training_set, read_set,
                                           serving_training_sets, values)
from pipelines.monitoring.windows import InputError, Window, iso, parse_when, windows

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ("features", "label", "predictions")


def enough(rows: int, window: Window | str, what: str, config: DriftConfig) -> None:
    if rows == 0:
        raise InputError(f"{window}: no {what}")
    if rows < config.min_rows:
        raise InputError(f"{window}: {rows} {what}, fewer than min_rows {config.min_rows} "
                         "(too few to judge)")


def judge(check: str, name: str, kind: str, reference, recent,
          config: DriftConfig) -> drift.Result:
    if kind == "numeric":
        comparison = drift.compare_numeric(reference, recent, config.bins, config.epsilon)
    elif kind == "categorical":
        comparison = drift.compare_categorical(reference, recent, config.max_categories)
    else:
        comparison = drift.share_difference(reference, recent)
    return drift.Result(check, name, comparison,
                        {m: config.threshold(name, m) for m in comparison.scores})


def check_features(args, config: DriftConfig, checks: list[str], document: dict
                   ) -> list[drift.Result]:
    workdir = Path(args.workdir)
    landed = Landed(Path(args.raw_dir) if args.raw_dir else workdir / "data" / "raw")
    until = landed.latest + 1 if args.until == "latest" else args.until
    reference_window, recent_window = windows(until, args.recent_days, args.reference_days,
                                              args.reference_from)
    recent, skipped = landed.window(recent_window)
    enough(len(recent), recent_window, f"landed ratings in {landed.raw_dir}", config)
    references = []  # (check name prefix, rows, where they come from)
    if args.reference_set == "window":
        reference, skipped_ref = landed.window(reference_window)
        enough(len(reference), reference_window, f"landed ratings in {landed.raw_dir}", config)
        references.append(("", reference, f"{reference_window} of {landed.raw_dir}"))
        document["windows"]["features_reference"] = reference_window.to_dict()
        skipped += skipped_ref
    else:
        if args.reference_set == "serving":
            sets = serving_training_sets(workdir, _path(args.models_config),
                                         _path(args.experiments))
        else:
            path, why = named_training_set(args.reference_set, workdir)
            sets = [(path, [], why)]
        for path, served, why in sets:
            reference = read_set(path)
            enough(len(reference), f"training set {path}", "rows", config)
            models = [s.model for s in served]
            # the ranking model's set (or the only one) keeps the plain check names
            prefix = "" if len(sets) == 1 or "ranking" in models else f"{'_'.join(models)}_"
            references.append((prefix, reference, (
                f"training set {path} ({why}; {len(reference):,} ratings "
                f"{iso(reference.timestamp.min())} .. {iso(reference.timestamp.max())})")))
    document["sources"]["features"] = (f"{recent_window} of {landed.raw_dir} against " +
                                       " and ".join(source for *_, source in references))
    document["windows"]["features_recent"] = recent_window.to_dict()
    if skipped:
        document["notes"].append(f"{skipped} landed ratings skipped: the batch job would "
                                 "quarantine them")
    return [judge(prefix + c.check, c.name, c.kind, values(reference, c.name),
                  values(recent, c.name), config)
            for prefix, reference, _ in references
            for c in catalogue() if c.check in checks and c.name not in config.skip]


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def check_predictions(args, config: DriftConfig, document: dict) -> list[drift.Result]:
    directory = Path(args.exposures) if args.exposures else Path(args.workdir) / "exposures"
    until = predictions.latest(directory) + 0.001 if args.until == "latest" else args.until
    reference_window, recent_window = windows(until, args.recent_days, args.reference_days,
                                              args.reference_from)
    served = predictions.read(directory, [reference_window, recent_window])
    for window in (reference_window, recent_window):
        enough(served[window.name].responses, window, f"responses in {directory}", config)
    document["sources"]["predictions"] = (f"{recent_window} against the {reference_window} "
                                          f"of {directory}")
    document["windows"]["predictions_reference"] = reference_window.to_dict()
    document["windows"]["predictions_recent"] = recent_window.to_dict()
    versions = {w: dict(s.ranking_versions) for w, s in served.items()}
    # the scores of the version users get, not a canary's or a version since replaced
    ranking = served_lib.served_versions(Path(args.workdir), _path(args.models_config),
                                         _path(args.experiments)).get("ranking")
    if ranking is not None:
        document["notes"].append(f"scores: ranking version {ranking.version}'s answers "
                                 f"only ({ranking.why}); ranked answers by version: "
                                 f"{versions}")
    elif len({tuple(sorted(v)) for v in versions.values()}) > 1:
        document["notes"].append(f"ranked answers by ranking model version: {versions} (a "
                                 "new version moves the scores by design)")
    reference, recent = (predictions.samples(served[w.name],
                                             ranking.version if ranking else None)
                         for w in (reference_window, recent_window))
    results = []
    for item in PREDICTIONS:
        if item.name in config.skip:
            continue
        if not (len(reference[item.name]) and len(recent[item.name])):
            document["notes"].append(f"{item.name}: not compared, a window has no answers "
                                     "the served ranking version scored")
            continue
        results.append(judge(item.check, item.name, item.kind, reference[item.name],
                             recent[item.name], config))
    return results


def run(args, config: DriftConfig) -> tuple[dict, list[drift.Result]]:
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown or not checks:
        raise InputError(f"--checks {args.checks!r}: choose from {', '.join(CHECKS)}")
    document = {"generated_at": iso(time.time()), "checks": checks, "sources": {},
                "windows": {}, "notes": [], "config": dataclasses.asdict(config)}
    results = []
    if {"features", "label"} & set(checks):
        results += check_features(args, config, checks, document)
    if "predictions" in checks:
        results += check_predictions(args, config, document)
    document["drift"] = any(r.detected for r in results)
    return document, results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="var", help="raw data, training sets, models")
    p.add_argument("--checks", default=",".join(CHECKS), help="comma-separated: "
                   + ", ".join(CHECKS))
    p.add_argument("--until", default="now",
                   help="end of the recent window: now, latest (the newest event of each "
                   "source), epoch seconds or an ISO 8601 date/time (UTC)")
    p.add_argument("--recent-days", type=float, default=7.0, help="recent window length")
    p.add_argument("--reference-days", type=float, default=28.0,
                   help="reference window length; it ends where the recent window starts")
    p.add_argument("--reference-from", default=None,
                   help="start of the reference window instead (date/time)")
    p.add_argument("--reference-set", default="serving",
                   help="features' reference: serving (the training sets the served "
                   "versions of both models learnt from), newest, window (landed ratings "
                   "in the reference window) or a training set directory")
    p.add_argument("--models-config", default="", metavar="FILE",
                   help="the model server's TF Serving models.config (its version labels)")
    p.add_argument("--experiments", default="", metavar="FILE",
                   help="the router's experiment file: its defaults say which version "
                   "users get")
    p.add_argument("--raw-dir", default="", help="landed raw tables (default WORKDIR/data/raw)")
    p.add_argument("--exposures", default="", help="exposure log directory "
                   "(default WORKDIR/exposures)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="thresholds (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field")
    p.add_argument("--out", default=str(ROOT / "reports" / "drift"),
                   help="where drift.json and drift.html go")
    p.add_argument("--pushgateway", default="", metavar="HOST:PORT",
                   help="push the scores there (job recsys_drift)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        # times first: a typo fails before any data is read
        if args.until != "latest":
            args.until = parse_when(args.until, "--until")
        if args.reference_from is not None:
            args.reference_from = parse_when(args.reference_from, "--reference-from")
        config = config_lib.load(DriftConfig, args.config, env_prefix="RECSYS_DRIFT",
                                 overrides=config_lib.parse_overrides(args.set),
                                 overrides_name="--set")
        document, results = run(args, config)
    except (InputError, config_lib.ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data, page = report.write(document, results, Path(args.out))
    for line in (*document["sources"].values(), *document["notes"]):
        print(line)
    print(report.table(results))
    print(report.verdict(results))
    print(f"report: {page}, {data}")
    if args.pushgateway:
        try:
            push.push(args.pushgateway, results, time.time())
        except OSError as err:
            print(f"error: push to the Pushgateway {args.pushgateway} failed: {err}",
                  file=sys.stderr)
            return 2
        print(f"pushed {len(results)} features to {args.pushgateway} (job {push.JOB})")
    return 1 if document["drift"] else 0


if __name__ == "__main__":
    sys.exit(main())
