"""The loop's scenario, simulated: the population's taste shifts (titles that were not out
when the stable model trained take off), the loop retrains on what users did since, and
the canary of what it pushed is judged on outcomes, as the controller judges it
(canary_decision.py through the experiment analysis, one look a day). Per seeded run, a
good candidate (the retrained model) must be promoted and a deliberately worse one (the
history's most popular list) rolled back.

  python -m pipelines.loop.scenario [--data-dir ../shared/data/ml-100k] [--runs 10]
      [--users 10000] [--out reports/loop-demo]

Simulated users: pipelines.experiments.world (`taking_off`) and simulated_experiment.
Prints each run's decision; writes OUT/scenario.json and OUT/timeline.html (per run:
the shift, the retraining, the canary's looks, the decision). Exit code 0 when every
decision was right, 1 when one was not, 2 bad input.
"""
from __future__ import annotations

import argparse
import html as escape
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt

from pipelines.data import movielens
from pipelines.data.dataset import DataError
from pipelines.experiments import (analysis as analysis_lib, canary_decision, report,
                                   simulated_experiment as experiment, world as world_lib)

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = {"good": "retrained", "bad": "popular"}  # kind -> the policy it serves
RIGHT = {"good": "promote", "bad": "rollback"}


@dataclass
class Scenario:
    runs: int = 10  # per kind of candidate
    users: int = 10_000  # arriving during the canary, half of them in each arm
    items_taking_off: int = 40
    click_probability: float = 0.1
    canary_days: float = 7.0
    looks: int = 7
    margin: float = 0.1
    alpha: float = 0.05


def canary(world: world_lib.World, scenario: Scenario, kind: str, seed: int) -> dict:
    """One canary of a `kind` candidate against the stale stable model: the decision,
    and when the controller would have taken it (rollbacks at the first look that
    shows them, promotion at the end)."""
    design = experiment.Design(users=scenario.users, days=scenario.canary_days,
                               arms={"stable": "stale", "canary": CANDIDATES[kind]},
                               weights={"stable": 50, "canary": 50},
                               click_probability=scenario.click_probability)
    settings = analysis_lib.Settings(alpha=scenario.alpha, looks=scenario.looks,
                                     control="stable")
    result = experiment.analyze(experiment.simulate(world, design, seed), settings)
    decision = canary_decision.decide(result, canary_decision.Rules(margin=scenario.margin),
                                      final=True)
    looks = [(look.time - experiment.START) / experiment.DAY for look in result.looks]
    decided_at = looks[-1]
    highs = result.paths["conversion"]["canary"].highs
    if decision.action == "rollback" and highs:
        first_worse = next((n for n, high in enumerate(highs) if high < 0), len(highs) - 1)
        decided_at = looks[len(looks) - len(highs) + first_worse]
    return {"kind": kind, "seed": seed, "action": decision.action,
            "right": decision.action == RIGHT[kind], "decided_after_days": decided_at,
            "looks_days": looks, "reasons": decision.reasons,
            "figures": decision.figures}


def run(ratings, source: str, scenario: Scenario, progress=print) -> dict:
    started = time.perf_counter()
    world, shift = world_lib.taking_off(ratings, source, scenario.items_taking_off)
    progress(f"shift: {len(shift['items_taking_off'])} titles take off ("
             f"{shift['share_of_future']:.1%} of what users rate next); the stable model "
             f"never saw them; retrained on the new ratings in {shift['retrain_seconds']:.2f} s")
    runs = []
    for kind in CANDIDATES:
        for n in range(scenario.runs):
            one = canary(world, scenario, kind, seed=1000 * (kind == "bad") + n)
            runs.append(one)
            progress(f"{kind} candidate, run {n + 1}/{scenario.runs}: {one['action']} after "
                     f"{one['decided_after_days']:.1f} days ({one['reasons'][0]})")
    right = sum(r["right"] for r in runs)
    return {"source": source, "scenario": asdict(scenario), "shift": shift, "runs": runs,
            "right": right, "of": len(runs), "seconds": time.perf_counter() - started}


def _timeline(document: dict) -> str:
    runs = document["runs"]
    figure, axes = plt.subplots(figsize=(10, 0.32 * len(runs) + 1.4))
    for row, one in enumerate(runs):
        colour = "#54a24b" if one["action"] == "promote" else "#e45756"
        axes.barh(row, one["decided_after_days"], left=0, height=0.5, color=colour,
                  alpha=0.35 if one["right"] else 0.9)
        axes.plot(one["looks_days"], [row] * len(one["looks_days"]), "|", color="#555")
        axes.plot(one["decided_after_days"], row, "o", color=colour)
    axes.set_yticks(range(len(runs)),
                    [f"{one['kind']} #{one['seed'] % 1000 + 1}" for one in runs], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("days of canary after the retrained version was pushed "
                    "(| a look; green promoted, red rolled back)")
    axes.set_title(f"{document['right']} of {document['of']} decisions right", fontsize=10)
    figure.tight_layout()
    return report.svg(figure)


def summary(document: dict) -> list[str]:
    shift, runs = document["shift"], document["runs"]
    lines = [f"users from {document['source']}; {document['scenario']['users']} users per "
             f"canary; runtime {document['seconds']:.0f} s",
             f"shift: {len(shift['items_taking_off'])} titles take off: "
             f"{shift['share_of_future']:.1%} of the ratings that follow; retraining "
             f"{shift['retrain_seconds']:.2f} s"]
    for kind in CANDIDATES:
        mine = [r for r in runs if r["kind"] == kind]
        days = sorted(r["decided_after_days"] for r in mine)
        lines.append(f"{kind} candidate ({CANDIDATES[kind]}): right in "
                     f"{sum(r['right'] for r in mine)} of {len(mine)} (should "
                     f"{RIGHT[kind]}); decided after {days[0]:.1f}-{days[-1]:.1f} days")
    return lines


def html(document: dict) -> str:
    items = "".join(f"<li>{escape.escape(line)}</li>" for line in summary(document))
    rows = "".join(
        f"<tr><td>{r['kind']}</td><td>{r['seed']}</td><td>{r['action']}</td>"
        f"<td>{'yes' if r['right'] else 'NO'}</td><td>{r['decided_after_days']:.1f}</td>"
        f"<td>{escape.escape(r['reasons'][0])}</td></tr>" for r in document["runs"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>The loop's scenario"
            f"</title><style>{report.STYLE}</style></head><body>"
            "<h1>The loop's scenario: taste shifts, retrain, canary on outcomes</h1>"
            f"<p>{escape.escape(__doc__.split(chr(10) + chr(10))[0])}</p>"
            f"<ul>{items}</ul>{_timeline(document)}<table><tr><th>candidate</th>"
            "<th>seed</th><th>decision</th><th>right</th><th>days</th><th>why</th></tr>"
            f"{rows}</table></body></html>\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--runs", type=int, default=Scenario.runs)
    parser.add_argument("--users", type=int, default=Scenario.users)
    parser.add_argument("--out", default="reports/loop-demo")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.users < 100:
        print("error: --runs must be at least 1 and --users at least 100", file=sys.stderr)
        return 2
    try:
        ratings = movielens.load(args.data_dir).ratings
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    document = run(ratings, f"MovieLens 100K ({args.data_dir})",
                   Scenario(runs=args.runs, users=args.users))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.json").write_text(json.dumps(document, indent=2, default=str))
    (out / "timeline.html").write_text(html(document))
    print("\n".join(summary(document)))
    print(f"report: {out / 'timeline.html'}")
    return 0 if document["right"] == document["of"] else 1


if __name__ == "__main__":
    sys.exit(main())
