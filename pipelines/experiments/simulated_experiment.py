"""One simulated experiment: logs in the router's exposure format
and the outcome format, generated from simulated users (pipelines.experiments.world),
analysed by the same code as real logs.

Each simulated user is drawn (with replacement) from the world, gets a fresh id, is
assigned an arm by the router's own hashing (libs.experiments), arrives at a
random time in the experiment, and has one or more sessions. Each session serves the
arm's top k items the user has not clicked yet; a served item in the user's future is
clicked with `click_probability`, a few minutes later, with the future rating as value.
Half the outcomes carry their request_id, the others are joined by the window.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from libs import config as config_lib
from libs.experiments import ExperimentConfig
from pipelines.experiments import analysis as analysis_lib, exposures
from pipelines.experiments.world import World

DAY = 86_400.0
START = 1_796_083_200.0  # 2026-12-01 00:00 UTC
KEY = "simulated"


@dataclass
class Design:
    users: int = 1_000
    arms: dict[str, str] = field(default_factory=lambda: {"control": "popular",
                                                          "treatment": "ease"})
    weights: dict[str, float] = field(default_factory=lambda: {"control": 50,
                                                               "treatment": 50})
    k: int = 10
    click_probability: float = 0.1
    mean_sessions: float = 2.0
    days: float = 14.0
    with_request_id: float = 0.5  # share of outcomes that carry their request_id
    drop_share: dict[str, float] = field(default_factory=dict)  # arm -> users lost

    def config(self, salt: str) -> ExperimentConfig:
        arms = [{"name": arm, "weight": self.weights[arm], "serves": {}} for arm in self.arms]
        return config_lib.from_dict(ExperimentConfig, {
            "version": "sim", "layers": [{"name": "sim", "experiments": [
                {"key": KEY, "salt": salt, "arms": arms}]}]}, "simulation")


@dataclass
class Logs:
    exposures: list[dict]
    outcomes: list[dict]
    config: ExperimentConfig


def simulate(world: World, design: Design, seed: int) -> Logs:
    rng = np.random.default_rng(seed)
    config = design.config(f"sim-{seed}")
    experiment = config.layers[0].experiments[0]
    exposure_log, outcome_log = [], []
    picks = rng.integers(0, world.size, design.users)
    arrivals = START + rng.uniform(0, design.days * DAY, design.users)
    for n, (pick, arrival) in enumerate(zip(picks, arrivals)):
        user = f"sim{seed}-u{n}"
        arm = experiment.arm_for(user).name
        if rng.random() < design.drop_share.get(arm, 0.0):
            continue  # a logging bug: this user's records never arrive
        ranked, future = world.ranked[design.arms[arm]][pick], world.futures[pick]
        clicked: set[str] = set()
        moment = arrival
        for session in range(1 + rng.poisson(design.mean_sessions - 1)):
            if session:
                moment += rng.exponential(DAY)
            served = [item for item in ranked if item not in clicked][:design.k]
            request = f"{user}-r{session}"
            exposure_log.append({
                "request_id": request, "timestamp": float(moment), "user_id": user,
                "config_version": config.version,
                "assignments": [{"layer": "sim", "experiment": KEY, "arm": arm}],
                "model_versions": {"retrieval": 1, "ranking": 1}, "items": served,
                "fallback": bool(rng.random() < 0.01),
                "latency_ms": float(rng.lognormal(np.log(40), 0.3))})
            for item in served:
                if item in future and rng.random() < design.click_probability:
                    clicked.add(item)
                    outcome = {"user_id": user, "item_id": item,
                               "timestamp": float(moment + rng.exponential(600)),
                               "value": float(future[item])}
                    if rng.random() < design.with_request_id:
                        outcome["request_id"] = request
                    outcome_log.append(outcome)
    return Logs(exposure_log, outcome_log, config)


def analyze(logs: Logs, settings: analysis_lib.Settings) -> analysis_lib.Analysis:
    """The real analysis on the logs, through the same record checks as files."""
    exposure_frame = exposures.exposures_frame(
        (f"exposures:{i + 1}", r) for i, r in enumerate(logs.exposures))
    outcome_frame = exposures.outcomes_frame(
        (f"outcomes:{i + 1}", r) for i, r in enumerate(logs.outcomes))
    joined = exposures.join(exposure_frame, outcome_frame)
    experiment = logs.config.layers[0].experiments[0]
    weights = {arm.name: arm.weight for arm in experiment.arms}
    return analysis_lib.analyze(exposure_frame, joined, KEY, weights, settings)


@dataclass
class Run:
    """What one simulated experiment's analysis concluded."""
    fixed_p: float  # primary metric, at the end (fixed horizon)
    naive_peek_min_p: float  # smallest fixed-horizon p over the interim looks
    sequential_p: float  # always-valid p at the end (= its minimum over the looks)
    difference: float
    srm_p: float
    blocked: bool  # the verdict was withheld (sample ratio mismatch)
    winner: str | None


def run_once(world: World, design: Design, seed: int,
             settings: analysis_lib.Settings) -> Run:
    result = analyze(simulate(world, design, seed), settings)
    metric = settings.metric
    arm = next(iter(result.results))
    naive = [look.fixed_p[metric][arm] for look in result.looks if arm in look.fixed_p[metric]]
    path = result.paths[metric][arm]
    return Run(fixed_p=result.results[arm][metric]["p_value"],
               naive_peek_min_p=min(naive, default=1.0),
               sequential_p=path.p_values[-1] if path.p_values else 1.0,
               difference=result.results[arm][metric]["difference"],
               srm_p=result.srm.p_value, blocked=result.verdict.blocked,
               winner=result.verdict.winner)


def run_many(world: World, design: Design, simulations: int, settings: analysis_lib.Settings,
             first_seed: int = 0) -> list[Run]:
    return [run_once(world, design, first_seed + i, settings) for i in range(simulations)]


def rate(runs: list[Run], reject) -> tuple[float, int, int]:
    hits = sum(bool(reject(run)) for run in runs)
    return hits / max(len(runs), 1), hits, len(runs)
