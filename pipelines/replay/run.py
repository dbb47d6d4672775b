"""End-to-end replay: what `Recommend` serves, judged on what users did after a cut-off.

  python -m pipelines.replay.run [--data-dir DIR] [--workdir var/replay]
                                 [--out reports/replay] [--set cuts=[0.6,0.7]]

For each cut (a time quantile of the ratings, `replay.yaml`): land only the ratings
before it (and the users and items they name: the catalog and user base as of then), run
the Beam feature job, Feast ingestion, the point-in-time training set and the TFX
pipeline on them, start the model server and the three services on free loopback ports,
and ask `Recommend` (at the cut's timestamp) for every user who rated after the cut;
the candidate service alone gives the two-tower retrieval's answer. In the same run and
on the same pre-cut ratings: most popular, trending over each window, EASE and a blend of
EASE and trending (`baselines.py`). Everything is scored on the ratings after the cut
(`scoring.py`), known users (rated before the cut) and new users apart, and written to
`<out>/replay.{json,md,html}`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pandas as pd

from libs import config as config_lib
from pipelines.data import sources
from pipelines.data.dataset import Dataset, DataError
from pipelines.replay import baselines, online, report, scoring
from pipelines.replay.config import DEFAULT_CONFIG, ReplayConfig
from pipelines.replay.report import MERGED, RETRIEVAL, SERVED
from recsys.v1 import (candidate_pb2, candidate_pb2_grpc, common_pb2, recommend_pb2,
                       recommend_pb2_grpc)
from tools.stack import ROOT, Stack, service_env, unpushed_models

TRAINING_PY = ROOT / ".venv" / "training" / "bin" / "python"
SERVING_PY = ROOT / ".venv" / "serving" / "bin" / "python"


class ReplayError(RuntimeError):
    """A step of a cut failed; the message names it and its log."""


@dataclass
class Answer:
    items: list[str]
    fallback: str = ""  # the fallback reason's name, "" when the models answered
    versions: tuple[int, int] = (0, 0)
    milliseconds: float = 0.0


@dataclass
class CutResult:
    quantile: float
    cut: int
    train_ratings: int
    known_users: int
    new_users: int
    scores: dict[str, dict[str, dict]] = field(default_factory=dict)  # group -> method
    blend: dict = field(default_factory=dict)
    served: dict = field(default_factory=dict)  # versions, fallbacks, latency, gates
    # the answers as the online quality check judges them against their promise
    online: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def cut_time(ratings: pd.DataFrame, quantile: float) -> int:
    return int(np.quantile(ratings.timestamp.to_numpy(), quantile))


def before(data: Dataset, cut: int) -> Dataset:
    """The data as it stood at `cut`: earlier ratings, and the users and items they name
    (an item nobody had rated yet is not in the catalog; a user who had not rated yet is
    unknown)."""
    ratings = data.ratings[data.ratings.timestamp < cut]
    return Dataset(users=data.users[data.users.user_id.isin(ratings.user_id)],
                   items=data.items[data.items.item_id.isin(ratings.item_id)],
                   ratings=ratings, source=f"{data.source} before {cut}")


def _step(name: str, command: list[str], log_dir: Path, show, progress) -> None:
    """Runs one job; lines for which `show` is true are progress, the rest go to its log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=service_env(),
                                   stdout=subprocess.PIPE, stderr=log, text=True)
        for line in process.stdout:
            log.write(line)
            if show(line):
                progress(f"    {line.rstrip()}")
        if process.wait() != 0:
            raise ReplayError(f"{name} failed (exit {process.returncode}); see {log_path}")


def train(workdir: Path, overrides: dict, progress) -> None:
    """The feature jobs and the TFX pipeline on what landed in `workdir`."""
    logs = workdir / "logs"
    quiet = lambda line: line.startswith(("features:", "data:"))  # noqa: E731
    _step("batch_job", [str(TRAINING_PY), "-m", "pipelines.features.batch_job",
                        "--workdir", str(workdir)], logs, quiet, progress)
    _step("ingest", [str(SERVING_PY), "-m", "pipelines.features.ingest", "--workdir",
                     str(workdir)], logs, quiet, progress)
    _step("training_set", [str(SERVING_PY), "-m", "pipelines.features.training_set",
                           "--workdir", str(workdir)], logs, quiet, progress)
    sets = [arg for key, value in overrides.items()
            for arg in ("--set", f"{key}={json.dumps(value)}")]
    _step("pipeline", [str(TRAINING_PY), "-m", "pipelines.training.run", "--workdir",
                       str(workdir), *sets], logs,
          lambda line: line.startswith(("[", "pipeline:", "error")), progress)


def ask(stack: Stack, users: list[str], cut: int, k: int, timeout: float
        ) -> tuple[dict[str, Answer], dict[str, dict[str, Answer]]]:
    """Recommend for every user, and the candidate service's top k (the two-tower alone,
    and all its sources blended), as a product service would ask at the moment of the
    cut."""
    context = common_pb2.Context(timestamp_seconds=cut)
    served, retrieved = {}, {RETRIEVAL: {}, MERGED: {}}
    with grpc.insecure_channel(stack.address("services/router")) as router, \
            grpc.insecure_channel(stack.address("services/candidate")) as candidate:
        recommend = recommend_pb2_grpc.RecommendServiceStub(router)
        candidates = candidate_pb2_grpc.CandidateServiceStub(candidate)
        for user in users:
            start = time.monotonic()
            response = recommend.Recommend(recommend_pb2.RecommendRequest(
                user_id=user, num_results=k, context=context,
                request_id=f"replay-{cut}-{user}"), timeout=timeout)
            served[user] = Answer(
                [i.item_id for i in response.items],
                common_pb2.FallbackReason.Name(response.fallback_reason)
                if response.fallback else "",
                (response.model_versions.retrieval, response.model_versions.ranking),
                (time.monotonic() - start) * 1000)
            for name, sources in ((RETRIEVAL, ["two_tower"]), (MERGED, [])):
                found = candidates.GetCandidates(candidate_pb2.CandidateRequest(
                    user_id=user, num_candidates=k, context=context, sources=sources),
                    timeout=timeout)
                retrieved[name][user] = Answer(
                    [i.item_id for i in found.items],
                    common_pb2.FallbackReason.Name(found.fallback_reason) if found.fallback
                    else "", (found.model_version, 0))
    return served, retrieved


def serve_and_ask(workdir: Path, users: list[str], cut: int, config: ReplayConfig,
                  progress) -> tuple[dict, dict, dict]:
    unpushed = unpushed_models(str(workdir))
    for line in unpushed:  # the stack serves without it, answers flagged MODEL_NOT_SERVED
        progress(f"    {line}")
    stack = Stack.on_free_ports(workdir)
    stack.start()
    try:
        served, retrieved = ask(stack, users, cut, config.k,
                                config.request_timeout_ms / 1000)
    finally:
        stack.stop()
    latency = [a.milliseconds for a in served.values()]
    reasons = pd.Series([a.fallback for a in served.values() if a.fallback]).value_counts()
    info = {"unpushed": unpushed, "versions": sorted({a.versions for a in served.values()}),
            "fallbacks": {str(k): int(v) for k, v in reasons.items()},
            "latency_ms_p50": float(np.percentile(latency, 50)),
            "latency_ms_p99": float(np.percentile(latency, 99))}
    return served, retrieved, info


def baseline_lists(history: baselines.History, ratings: pd.DataFrame, cut: int,
                   users: list[str], config: ReplayConfig) -> tuple[dict, baselines.BlendChoice]:
    windows = tuple(config.trending_days)
    vectors = baselines.non_personalised(history, cut, windows)
    choice = baselines.choose_blend(ratings, cut, config.validation_days, windows,
                                    tuple(config.blend_weights), config.ease_lambda, config.k)
    ease = baselines.ease(history, config.ease_lambda)
    lists = {name: baselines.recommend(history, v, users, config.k)
             for name, v in vectors.items()}
    known = [u for u in users if u in history.users]
    lists["EASE"] = baselines.recommend(history, ease, known, config.k)
    lists["EASE + trending"] = baselines.recommend(
        history, baselines.blend(ease, vectors[f"trending {choice.days}d"], choice.weight),
        known, config.k)
    return lists, choice


def replay_cut(data: Dataset, quantile: float, workdir: Path, config: ReplayConfig,
               progress) -> CutResult:
    ratings = data.ratings
    cut = cut_time(ratings, quantile)
    past = before(data, cut)
    after = ratings[ratings.timestamp >= cut]
    history = baselines.History.of(past.ratings)
    truth = {"known users": scoring.future_items(after, set(history.users)),
             "new users": scoring.future_items(after[~after.user_id.isin(history.users)])}
    users = sorted(set(truth["known users"]) | set(truth["new users"]))
    result = CutResult(quantile, cut, len(past.ratings), len(truth["known users"]),
                       len(truth["new users"]))
    progress(f"cut {quantile} ({pd.Timestamp(cut, unit='s'):%Y-%m-%d %H:%M}): "
             f"{len(past.ratings):,} ratings before, {result.known_users} known and "
             f"{result.new_users} new users after")
    start = time.monotonic()
    # from scratch, as a new user would: an earlier run's blessed models would be the
    # gates' reference and its versions would be served
    shutil.rmtree(workdir, ignore_errors=True)
    sources.land(past, workdir / "data" / "raw")
    train(workdir, config.pipeline_overrides, progress)
    result.seconds["train"] = round(time.monotonic() - start, 1)

    start = time.monotonic()
    served, retrieved, result.served = serve_and_ask(workdir, users, cut, config, progress)
    result.seconds["serve"] = round(time.monotonic() - start, 1)
    result.online = online.judge(workdir, after, cut)

    start = time.monotonic()
    lists, choice = baseline_lists(history, past.ratings, cut, users, config)
    result.blend = vars(choice)
    if served:
        lists[SERVED] = {u: a.items for u, a in served.items()}
        for name, answers in retrieved.items():
            lists[name] = {u: a.items for u, a in answers.items()}
    head = scoring.head_items(past.ratings.item_id.value_counts(), config.head_fraction)
    for group, group_truth in truth.items():
        result.scores[group] = {
            name: scoring.score(found, group_truth, config.k, head, len(history.items),
                                config.bootstrap_samples, config.seed).as_dict()
            for name, found in lists.items()
            if group == "known users" or name == SERVED
            or report.is_non_personalised(name)}
    result.seconds["baselines_and_scoring"] = round(time.monotonic() - start, 1)
    _save_lists(workdir / "replay_lists.json", lists, served)
    report.progress_lines(result, progress)
    return result


def _save_lists(path: Path, lists: dict, served: dict[str, Answer]) -> None:
    """Every list scored, and what Recommend said of each answer, for inspection."""
    path.write_text(json.dumps({"lists": lists, "served": {
        u: {"fallback": a.fallback, "versions": a.versions, "ms": round(a.milliseconds, 2)}
        for u, a in served.items()}}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--data-dir", default="",
                        help="MovieLens 100K directory (default: ../shared/data/ml-100k)")
    parser.add_argument("--workdir", default="var/replay",
                        help="one training workdir per cut goes here")
    parser.add_argument("--out", default="reports/replay")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        config = config_lib.load(ReplayConfig, args.config, env_prefix="RECSYS_REPLAY",
                                 overrides=config_lib.parse_overrides(args.set),
                                 overrides_name="--set")
        data = sources.load(args.data_dir)
    except (config_lib.ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data.ratings = data.ratings.astype({"user_id": str, "item_id": str})
    data.users = data.users.astype({"user_id": str})
    data.items = data.items.astype({"item_id": str})
    print(f"replay: {data.source}, {len(data.ratings):,} ratings, cuts {config.cuts}",
          flush=True)
    started, results = time.monotonic(), []
    progress = lambda line: print(line, flush=True)  # noqa: E731
    try:
        for quantile in config.cuts:
            results.append(replay_cut(data, quantile, Path(args.workdir) / f"cut-{quantile}",
                                      config, progress))
    except (ReplayError, RuntimeError, TimeoutError, grpc.RpcError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = report.write(results, config, data.source, time.monotonic() - started,
                         Path(args.out))
    print(report.markdown_table(results, config))
    print("reports: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
