"""Proves the experiment analysis by simulation, on MovieLens 100K users:

  power    EASE (treatment) against most popular (control) at several sizes: how often
           the fixed-horizon analysis names EASE the winner, and how often the
           always-valid (mSPRT) test rejects
  A/A      both arms serve EASE, so every rejection is a false positive: the rate of the
           fixed-horizon test at the end, of the same test looked at `looks` times and
           stopped at the first p < alpha (peeking), and of the sequential test over the
           same looks, each with a 95% Clopper-Pearson interval
  SRM      one arm's logging loses 10% of its users: how often the SRM check blocks the
           verdict (and how often it fires in the A/A runs, where it should not)
  canary   the canary decision (canary_decision.py) on outcomes, judged at every look: a
           worse candidate (most popular replacing EASE) must not be promoted (at most
           alpha of the time), an equal one (EASE for EASE) and a better one (EASE
           replacing most popular) should be

  python -m pipelines.experiments.simulation [--data-dir ../shared/data/ml-100k]
Prints the figures, writes report.html (and an example run's logs and their analysis
through the CLI's code path) under --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import html as escape
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt

from pipelines.data import movielens
from pipelines.data.dataset import DataError
from pipelines.experiments import (analysis as analysis_lib, analyze, canary_decision, report,
                                   stats, world)
from pipelines.experiments import simulated_experiment as experiment

ROOT = Path(__file__).resolve().parents[2]
AA = {"control": "ease", "treatment": "ease"}


@dataclass
class Study:
    sizes: tuple[int, ...] = (250, 500, 1000, 2000)
    power_runs: int = 100
    aa_users: int = 1000
    aa_runs: int = 1000
    srm_users: int = 10_000
    srm_runs: int = 40
    srm_drop: float = 0.10
    looks: int = 10
    alpha: float = 0.05
    click_probability: float = 0.1
    canary_users: int = 10_000
    canary_runs: int = 40
    canary_margin: float = 0.1


def _settings(study: Study) -> analysis_lib.Settings:
    return analysis_lib.Settings(alpha=study.alpha, looks=study.looks)


def _share(runs, reject) -> dict:
    share, hits, total = experiment.rate(runs, reject)
    low, high = stats.binomial_interval(hits, total)
    return {"rate": share, "hits": hits, "runs": total, "ci95": [low, high]}


def power(world_: world.World, study: Study, seed: int = 10_000) -> list[dict]:
    settings, rows = _settings(study), []
    for size in study.sizes:
        design = experiment.Design(users=size, click_probability=study.click_probability)
        runs = experiment.run_many(world_, design, study.power_runs, settings, seed)
        rows.append({"users": size,
                     "fixed": _share(runs, lambda r: r.winner == "treatment"),
                     "sequential": _share(runs, lambda r: r.sequential_p < study.alpha
                                          and r.difference > 0),
                     "wrong_winner": _share(runs, lambda r: r.winner == "control"),
                     "mean_difference": sum(r.difference for r in runs) / len(runs)})
        seed += study.power_runs
    return rows


def false_positives(world_: world.World, study: Study, seed: int = 20_000) -> dict:
    design = experiment.Design(users=study.aa_users, arms=AA,
                               click_probability=study.click_probability)
    runs = experiment.run_many(world_, design, study.aa_runs, _settings(study), seed)
    alpha = study.alpha
    return {"users": study.aa_users, "looks": study.looks,
            "fixed_horizon": _share(runs, lambda r: r.fixed_p < alpha),
            "naive_peeking": _share(runs, lambda r: r.naive_peek_min_p < alpha),
            "sequential_peeking": _share(runs, lambda r: r.sequential_p < alpha),
            "srm_false_alarm": _share(runs, lambda r: r.srm_p < 0.001)}


def sample_ratio(world_: world.World, study: Study, seed: int = 30_000) -> dict:
    design = experiment.Design(users=study.srm_users, arms=AA,
                               click_probability=study.click_probability,
                               drop_share={"treatment": study.srm_drop})
    runs = experiment.run_many(world_, design, study.srm_runs, _settings(study), seed)
    return {"users": study.srm_users, "dropped": study.srm_drop,
            "detected": _share(runs, lambda r: r.srm_p < 0.001),
            "verdict_blocked": _share(runs, lambda r: r.blocked)}


CANARIES = {"worse": {"stable": "ease", "canary": "popular"},
            "as good": {"stable": "ease", "canary": "ease"},
            "better": {"stable": "popular", "canary": "ease"}}


def canary_decisions(world_: world.World, study: Study, seed: int = 40_000) -> dict:
    """Per kind of candidate, how often the canary decision promotes it."""
    settings = analysis_lib.Settings(alpha=study.alpha, looks=study.looks, control="stable")
    rules = canary_decision.Rules(margin=study.canary_margin)
    out = {"users": study.canary_users, "margin": study.canary_margin}
    for kind, arms in CANARIES.items():
        design = experiment.Design(users=study.canary_users, arms=arms,
                                   weights={"stable": 50, "canary": 50},
                                   click_probability=study.click_probability)
        actions = []
        for run in range(study.canary_runs):
            result = experiment.analyze(experiment.simulate(world_, design, seed + run),
                                        settings)
            actions.append(canary_decision.decide(result, rules, final=True).action)
        out[kind] = _share(actions, lambda action: action == "promote")
        seed += study.canary_runs
    return out


def _plot(figures: dict) -> str:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    sizes = [row["users"] for row in figures["power"]]
    for kind in ("fixed", "sequential"):
        rates = [row[kind]["rate"] for row in figures["power"]]
        lows = [row[kind]["rate"] - row[kind]["ci95"][0] for row in figures["power"]]
        highs = [row[kind]["ci95"][1] - row[kind]["rate"] for row in figures["power"]]
        left.errorbar(sizes, rates, yerr=[lows, highs], marker="o", capsize=3,
                      label=f"{kind} horizon" if kind == "fixed" else "sequential (mSPRT)")
    left.set_xscale("log")
    left.set_xlabel("users per experiment")
    left.set_ylabel("power")
    left.set_ylim(0, 1.05)
    left.set_title("EASE vs most popular: power", fontsize=10)
    left.legend(fontsize=8)
    aa = figures["aa"]
    labels = ["fixed horizon", f"naive, {aa['looks']} looks", f"mSPRT, {aa['looks']} looks"]
    keys = ["fixed_horizon", "naive_peeking", "sequential_peeking"]
    rates = [aa[k]["rate"] for k in keys]
    right.bar(labels, rates, yerr=[[aa[k]["rate"] - aa[k]["ci95"][0] for k in keys],
                                   [aa[k]["ci95"][1] - aa[k]["rate"] for k in keys]],
              capsize=4, color=["#4c78a8", "#e45756", "#54a24b"])
    right.axhline(figures["study"]["alpha"], color="#b00", linestyle="--", label="alpha")
    right.set_title(f"A/A false-positive rate ({aa['fixed_horizon']['runs']} runs, "
                    f"{aa['users']} users)", fontsize=10)
    right.legend(fontsize=8)
    figure.tight_layout()
    return report.svg(figure)


def _percent(share: dict) -> str:
    low, high = share["ci95"]
    return f"{share['rate']:.1%} ({share['hits']}/{share['runs']}, 95% CI {low:.1%}-{high:.1%})"


def summary(figures: dict) -> list[str]:
    aa, srm = figures["aa"], figures["srm"]
    lines = [f"users from: {figures['source']}; alpha {figures['study']['alpha']}; "
             f"runtime {figures['seconds']:.0f} s"]
    for row in figures["power"]:
        lines.append(f"power at {row['users']:>5} users: fixed horizon {_percent(row['fixed'])}"
                     f"; sequential {_percent(row['sequential'])}; wrong winner "
                     f"{row['wrong_winner']['hits']}")
    lines += [f"A/A ({aa['users']} users): fixed-horizon FPR {_percent(aa['fixed_horizon'])}",
              f"A/A peeking {aa['looks']} looks, naive test: FPR {_percent(aa['naive_peeking'])}",
              f"A/A peeking {aa['looks']} looks, mSPRT: FPR "
              f"{_percent(aa['sequential_peeking'])}",
              f"A/A SRM false alarms (p < 0.001): {_percent(aa['srm_false_alarm'])}",
              f"SRM ({srm['users']} users, {srm['dropped']:.0%} of one arm lost): detected "
              f"{_percent(srm['detected'])}"]
    canary = figures.get("canary")
    if canary:
        lines += [f"canary ({canary['users']} users, margin {canary['margin']:.0%}): {kind} "
                  f"candidate promoted {_percent(canary[kind])}" for kind in CANARIES]
    return lines


def html(figures: dict, example_link: str) -> str:
    items = "".join(f"<li>{escape.escape(line)}</li>" for line in summary(figures))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Experiment analysis "
            f"simulation</title><style>{report.STYLE}</style></head><body>"
            "<h1>Does the experiment analysis work? Simulated experiments</h1>"
            f"<p>{escape.escape(__doc__.split(chr(10) + chr(10))[0])}</p>"
            f"<ul>{items}</ul>{_plot(figures)}"
            f"<p>One simulated experiment, analysed from its log files: "
            f"<a href='{example_link}'>{example_link}</a></p></body></html>\n")


def example(world_: world.World, study: Study, out: Path) -> None:
    """One experiment written as log files and config, analysed through the CLI's path."""
    out.mkdir(parents=True, exist_ok=True)
    design = experiment.Design(users=study.sizes[-1], click_probability=study.click_probability)
    logs = experiment.simulate(world_, design, seed=1)
    for name, records in (("exposures.jsonl", logs.exposures),
                          ("outcomes.jsonl", logs.outcomes)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    layer = logs.config.layers[0]
    (out / "experiments.json").write_text(json.dumps(dataclasses.asdict(logs.config)))
    result = analyze.run(out / "exposures.jsonl", out / "outcomes.jsonl", layer.experiments[0].key,
                         analysis_lib.Settings(alpha=study.alpha),
                         config_path=out / "experiments.json")
    analyze.write(result, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(movielens.DEFAULT_DIR))
    parser.add_argument("--synthetic", action="store_true",
                        help="generated users instead of MovieLens")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(Study.sizes))
    parser.add_argument("--power-runs", type=int, default=Study.power_runs)
    parser.add_argument("--aa-users", type=int, default=Study.aa_users)
    parser.add_argument("--aa-runs", type=int, default=Study.aa_runs)
    parser.add_argument("--srm-users", type=int, default=Study.srm_users)
    parser.add_argument("--srm-runs", type=int, default=Study.srm_runs)
    parser.add_argument("--looks", type=int, default=Study.looks)
    parser.add_argument("--canary-users", type=int, default=Study.canary_users)
    parser.add_argument("--canary-runs", type=int, default=Study.canary_runs)
    parser.add_argument("--out", default=str(ROOT / "reports" / "experiments" / "simulation"))
    args = parser.parse_args(argv)
    study = Study(sizes=tuple(args.sizes), power_runs=args.power_runs, aa_users=args.aa_users,
                  aa_runs=args.aa_runs, srm_users=args.srm_users, srm_runs=args.srm_runs,
                  looks=args.looks, canary_users=args.canary_users,
                  canary_runs=args.canary_runs)
    started = time.perf_counter()
    try:
        users = (world.synthetic_world(users=943, items=1682, ratings=100_000)
                 if args.synthetic else world.movielens_world(args.data_dir))
    except DataError as err:
        print(f"error: {err} (or pass --synthetic)", file=sys.stderr)
        return 2
    figures = {"source": users.source, "study": dataclasses.asdict(study)}
    for name, step in (("power", power), ("aa", false_positives), ("srm", sample_ratio),
                       ("canary", canary_decisions)):
        print(f"simulating: {name} ...", flush=True)
        figures[name] = step(users, study)
    out = Path(args.out)
    example(users, study, out / "example")
    figures["seconds"] = time.perf_counter() - started
    (out / "simulation.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out / "report.html").write_text(html(figures, "example/report.html"))
    print("\n".join(summary(figures)))
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
