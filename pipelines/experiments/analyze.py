"""Analyse one experiment from the router's exposure log and the outcome events.

  python -m pipelines.experiments.analyze --exposures LOGS --outcomes EVENTS \
      --experiment KEY [--control ARM] [--alpha 0.05] [--out DIR] \
      [--outcome-types click,play,rating] [--pre-period-outcomes EVENTS] \
      [--config services/router/experiments.yaml]

Writes DIR/report.html and DIR/analysis.json and prints the verdict table. Bad input
(a missing file, a malformed line, an unknown experiment, an arm without users) is one
line on stderr naming the file, line or field, and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from libs import config as config_lib
from libs.experiments import ExperimentConfig
from pipelines.experiments import analysis as analysis_lib, exposures, report

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "services" / "router" / "experiments.yaml"


def experiment_arms(config_path: str | Path, key: str) -> tuple[dict[str, float], set[str]]:
    """The experiment's arm weights (config order) and its QA allowlist."""
    try:
        config = config_lib.load(ExperimentConfig, config_path)
    except (config_lib.ConfigError, OSError) as err:
        raise exposures.InputError(f"{config_path}: {err}") from None
    for layer in config.layers:
        for experiment in layer.experiments:
            if experiment.key == key:
                return ({arm.name: arm.weight for arm in experiment.arms},
                        set(experiment.allowlist))
    known = [e.key for layer in config.layers for e in layer.experiments]
    raise exposures.InputError(f"{config_path}: unknown experiment {key!r} "
                               f"(experiments: {', '.join(known) or 'none'})")


def run(exposures_path, outcomes_path, key: str, settings: analysis_lib.Settings,
        config_path=DEFAULT_CONFIG, pre_period_path=None,
        window_seconds: float = exposures.DEFAULT_WINDOW_SECONDS,
        outcome_types=exposures.ENGAGEMENTS) -> analysis_lib.Analysis:
    weights, allowlist = experiment_arms(config_path, key)
    exposure_frame = exposures.read_exposures(exposures_path)
    joined = exposures.join(exposure_frame,
                            exposures.read_outcomes(outcomes_path, outcome_types),
                            window_seconds)
    pre_period = (exposures.read_outcomes(pre_period_path, outcome_types)
                  if pre_period_path else None)
    return analysis_lib.analyze(exposure_frame, joined, key, weights, settings,
                                pre_period, allowlist)


def write(result: analysis_lib.Analysis, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (out / "report.html").write_text(report.html(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", required=True,
                        help="exposure log: a .jsonl file, a directory of them, or a glob")
    parser.add_argument("--outcomes", required=True,
                        help="outcome events (.jsonl or .csv; the router's outcome_log_dir)")
    parser.add_argument("--outcome-types", default=",".join(exposures.ENGAGEMENTS),
                        help="which typed events count as outcomes, comma-separated, of "
                        f"{', '.join(exposures.OUTCOME_TYPES)} (events without a type "
                        "always count)")
    parser.add_argument("--experiment", required=True, help="experiment key")
    parser.add_argument("--control", default="", help="control arm (default: the first)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--metric", default="conversion", choices=analysis_lib.METRICS,
                        help="the metric the verdict is decided on")
    parser.add_argument("--decision", default="fixed", choices=("fixed", "sequential"),
                        help="sequential: decide on the always-valid p-value (looking early)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="experiment config (arm weights for the SRM check)")
    parser.add_argument("--pre-period-outcomes", default=None,
                        help="outcomes before the experiment: CUPED covariate")
    parser.add_argument("--window-hours", type=float, default=24.0,
                        help="attribution window for outcomes without a request_id")
    parser.add_argument("--fallback-margin", type=float, default=0.01)
    parser.add_argument("--latency-margin", type=float, default=0.10)
    parser.add_argument("--out", default=str(ROOT / "reports" / "experiments"))
    args = parser.parse_args(argv)
    settings = analysis_lib.Settings(alpha=args.alpha, control=args.control,
                                     metric=args.metric, decision=args.decision,
                                     fallback_margin=args.fallback_margin,
                                     latency_margin=args.latency_margin)
    types = [t.strip() for t in args.outcome_types.split(",") if t.strip()]
    unknown = sorted(set(types) - set(exposures.OUTCOME_TYPES))
    if unknown or not types:
        parser.error(f"--outcome-types: {', '.join(unknown) or 'none given'}; choose from "
                     f"{', '.join(exposures.OUTCOME_TYPES)}")
    try:
        result = run(args.exposures, args.outcomes, args.experiment, settings, args.config,
                     args.pre_period_outcomes, args.window_hours * 3600, types)
    except exposures.InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write(result, out)
    print(report.verdict_table(result))
    print(f"report: {out / 'report.html'}, {out / 'analysis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
