"""Online quality: what users did with what they were served, by model version, experiment
arm and candidate source, and each served version's accuracy on labels that arrived later
(concept drift) against what its evaluation promised (libs/version_evaluation.py).

Engagement: every outcome but impressions (clicks, plays, ratings), attributed to the
response that served its item (pipelines/experiments/exposures.join); per group:
  responses           answers in the window
  ctr                 engaged served items / items shown (the impressions reported for a
                      response, or all its items when none were reported)
  hit_rate_at_k       share of responses with an engaged item in their top k
  mean_engaged_rank   mean position (1 = first) of the engaged served items
  coverage            distinct items served / items in the catalog
By source: ctr (engaged / served items the source proposed) and share of engagements.

Delayed labels: each user's first answer from a version in the window, among answers old
enough for their labels to be complete (`label_days` before the window's end); what the
user rated in the `label_days` after it, served or not, is what the answer should have held:
  retrieval  recall_at_10, hit_rate_at_10 of the unranked answers (the order the
             retrieval version's candidate service served, what its promise measured)
  ranking    rmse of the served score against the rating later given to that served item
Fallback answers belong to no model and are left out of the model groups.

A version is below its promise when the 95% interval of its online figure lies entirely
worse than the promise by more than `tolerance` (relative), with `min_samples` samples.
Pure pandas/numpy: the CLI (quality_check.py) reads the logs and calls `measure`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from libs import version_evaluation
from pipelines.experiments import exposures as exposure_log

Z95 = 1.959964
LABEL_TYPES = ("rating",)  # what the promises were measured on


@dataclass(frozen=True)
class Settings:
    k: int = 10
    label_seconds: float = 14 * 86_400
    attribution_seconds: float = exposure_log.DEFAULT_WINDOW_SECONDS
    tolerance: float = 0.2
    min_samples: int = 200


def _interval(values: np.ndarray) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the mean's 95% normal interval (None below two values)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    half = Z95 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _figure(scope: str, key: dict, metric: str, value: float, samples: int,
            low: float | None = None, high: float | None = None) -> dict:
    return {"scope": scope, **key, "metric": metric, "value": value, "samples": samples,
            "low": low, "high": high}


def served_items(exposures: pd.DataFrame) -> pd.DataFrame:
    """One row per served item: request_id, item_id, rank (1 = first), source ("" when
    the log has none). Flattened with numpy: a day holds millions of served items."""
    lengths = exposures["items"].map(len).to_numpy(int)
    starts = np.cumsum(lengths) - lengths
    sources = [s if len(s) == n else [""] * n
               for s, n in zip(exposures["sources"], lengths)]
    flat = lambda lists: pd.Series(list(itertools.chain.from_iterable(lists)),  # noqa: E731
                                   dtype=object)
    return pd.DataFrame({
        "request_id": pd.Series(np.repeat(exposures.request_id.to_numpy(), lengths),
                                dtype=object),
        "item_id": flat(exposures["items"]),
        "rank": np.arange(lengths.sum()) - np.repeat(starts, lengths) + 1,
        "source": flat(sources)})


def engagement(exposures: pd.DataFrame, served: pd.DataFrame, outcomes: pd.DataFrame,
               settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per response: shown, engaged, best_rank; per engaged served item: request_id,
    item_id, rank, source). `served`: served_items(exposures)."""
    engaged_outcomes = outcomes[outcomes.type.isna()
                                | outcomes.type.isin(exposure_log.ENGAGEMENTS)]
    joined = exposure_log.join(exposures, engaged_outcomes, settings.attribution_seconds)
    engaged = joined.outcomes[["request_id", "item_id"]].drop_duplicates().merge(
        served, on=["request_id", "item_id"])
    impressions = outcomes[outcomes.type == "impression"]
    shown = exposure_log.join(exposures, impressions, settings.attribution_seconds).outcomes
    shown = shown[["request_id", "item_id"]].drop_duplicates().merge(
        served, on=["request_id", "item_id"]).groupby("request_id").size()
    per = exposures[["request_id"]].copy()
    per["shown"] = per.request_id.map(shown).fillna(
        exposures["items"].map(len)).astype(int)
    per["engaged"] = per.request_id.map(engaged.groupby("request_id").size()).fillna(0)
    per["best_rank"] = per.request_id.map(engaged.groupby("request_id")["rank"].min())
    return per.set_index("request_id"), engaged


def _engagement_figures(scope: str, key: dict, group: pd.DataFrame, per: pd.DataFrame,
                        engaged: pd.DataFrame, catalog_size: int | None,
                        settings: Settings) -> list[dict]:
    rows = per.loc[group.request_id]
    n = len(rows)
    hits = (rows.best_rank <= settings.k).to_numpy(float)
    out = [_figure(scope, key, "responses", float(n), n),
           _figure(scope, key, "ctr", float(rows.engaged.sum() / max(rows.shown.sum(), 1)),
                   int(rows.shown.sum())),
           _figure(scope, key, f"hit_rate_at_{settings.k}", *_share(hits))]
    ranks = engaged[engaged.request_id.isin(group.request_id)]["rank"].to_numpy(float)
    if len(ranks):
        mean, low, high = _interval(ranks)
        out.append(_figure(scope, key, "mean_engaged_rank", mean, len(ranks), low, high))
    if catalog_size:
        distinct = len({i for items in group["items"] for i in items})
        out.append(_figure(scope, key, "coverage", distinct / catalog_size, n))
    return out


def _share(values: np.ndarray) -> tuple[float, int, float | None, float | None]:
    """(mean, samples, low, high) of values in [0, 1], the interval clipped to it."""
    if not len(values):
        return 0.0, 0, None, None
    mean, low, high = _interval(values)
    if low is None:
        return mean, len(values), None, None
    return mean, len(values), max(low, 0.0), min(high, 1.0)


def delayed_labels(exposures: pd.DataFrame, ratings: pd.DataFrame, start: float,
                   until: float, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(retrieval: per user and version, recall and hit within the top 10 of their first
    unranked answer; ranking: per rated served item, its squared error), over the answers
    of [start, until) moved `label_seconds` back, whose labels are complete."""
    label = settings.label_seconds
    complete = exposures[(exposures.timestamp >= start - label)
                         & (exposures.timestamp < until - label) & ~exposures.fallback]
    unranked = complete[(complete.retrieval_version > 0) & (complete.ranking_version == 0)]
    first = (unranked.sort_values("timestamp")
             .drop_duplicates(["user_id", "retrieval_version"]))
    pairs = first[["user_id", "retrieval_version", "timestamp", "items"]].merge(
        ratings[["user_id", "item_id", "timestamp"]].rename(columns={"timestamp": "rated"}),
        on="user_id")
    # a rating logged in the answer's millisecond came after it (logs keep milliseconds)
    before = pairs[pairs.rated < pairs.timestamp][["user_id", "retrieval_version",
                                                   "item_id"]]
    later = pairs[(pairs.rated >= pairs.timestamp)
                  & (pairs.rated <= pairs.timestamp + label)]
    later = later.merge(before, how="left", indicator=True,
                        on=["user_id", "retrieval_version", "item_id"])
    later = later[later._merge == "left_only"].drop_duplicates(
        ["user_id", "retrieval_version", "item_id"])
    later = later.assign(hit=[item in set(items[:10]) for item, items
                              in zip(later.item_id, later["items"])])
    retrieval = later.groupby(["user_id", "retrieval_version"]).hit.agg(["sum", "size"])
    retrieval = retrieval.assign(recall=retrieval["sum"] / retrieval["size"],
                                 hit=retrieval["sum"] > 0).reset_index()

    ranked = complete[(complete.ranking_version > 0)
                      & (complete.scores.map(len) == complete["items"].map(len))]
    scored = ranked[["request_id", "ranking_version", "items", "scores"]].explode(
        ["items", "scores"]).dropna(subset=["items"])
    scored = scored.rename(columns={"items": "item_id", "scores": "score"})
    rated = exposure_log.join(ranked, ratings, settings.label_seconds).outcomes
    errors = rated.merge(scored, on=["request_id", "item_id"]).drop_duplicates(
        ["request_id", "item_id"])
    errors = errors.assign(squared=(errors.value - errors.score.astype(float)) ** 2)
    return retrieval, errors[["ranking_version", "squared"]]


def measure(exposures: pd.DataFrame, outcomes: pd.DataFrame, start: float, until: float,
            catalog_size: int | None, settings: Settings) -> list[dict]:
    """Every online figure (dicts: scope, model/version | experiment/arm | source, metric,
    value, samples, low, high): engagement over the answers of [start, until), delayed
    labels over those `label_seconds` earlier. `outcomes`: every type."""
    labelled = exposures
    exposures = exposures[exposures.timestamp >= start]
    served = served_items(exposures)
    per, engaged = engagement(exposures, served, outcomes, settings)
    figures = []
    answered = exposures[~exposures.fallback]
    for model in ("retrieval", "ranking"):
        column = f"{model}_version"
        for version, group in answered[answered[column] > 0].groupby(column):
            figures += _engagement_figures("version", {"model": model,
                                                       "version": int(version)},
                                           group, per, engaged, catalog_size, settings)
    arms = pd.DataFrame([(rid, experiment, arm) for rid, assigned
                         in zip(exposures.request_id, exposures.assignments)
                         for experiment, arm in assigned.items()],
                        columns=["request_id", "experiment", "arm"])
    arms = arms.merge(exposures[["request_id", "items", "fallback"]], on="request_id")
    for (experiment, arm), group in arms.groupby(["experiment", "arm"]):
        key = {"experiment": experiment, "arm": arm}
        figures += _engagement_figures("arm", key, group, per, engaged, catalog_size,
                                       settings)
        figures.append(_figure("arm", key, "fallback_share", float(group.fallback.mean()),
                               len(group)))
    for source, count in served[served.source != ""].groupby("source").size().items():
        hits = engaged[engaged.source == source]
        figures += [_figure("source", {"source": source}, "ctr", len(hits) / count,
                            int(count)),
                    _figure("source", {"source": source}, "engagement_share",
                            len(hits) / max(len(engaged), 1), len(engaged))]

    ratings = outcomes[outcomes.type.isna() | outcomes.type.isin(LABEL_TYPES)]
    retrieval, errors = delayed_labels(labelled, ratings, start, until, settings)
    for version, group in retrieval.groupby("retrieval_version"):
        key = {"model": "retrieval", "version": int(version)}
        figures.append(_figure("delayed", key, "recall_at_10",
                               *_share(group.recall.to_numpy(float))))
        figures.append(_figure("delayed", key, "hit_rate_at_10",
                               *_share(group.hit.to_numpy(float))))
    for version, group in errors.groupby("ranking_version"):
        mean, low, high = _interval(group.squared.to_numpy(float))
        bounds = (None, None) if low is None else (math.sqrt(max(low, 0.0)), math.sqrt(high))
        figures.append(_figure("delayed", {"model": "ranking", "version": int(version)},
                               "rmse", math.sqrt(mean), len(group), *bounds))
    return figures


def judge(figures: list[dict], promises: dict[tuple[str, int], dict],
          settings: Settings) -> list[dict]:
    """One verdict per delayed-label figure: `below`, `holds`, `too few` samples, `no
    promise` (no evaluation.json, or it promises nothing for this metric) or `not
    comparable` (its labels were counted over other days). `promises`: (model, version)
    -> the version's evaluation.json (libs/version_evaluation.read)."""
    verdicts = []
    for f in figures:
        if f["scope"] != "delayed":
            continue
        found = promises.get((f["model"], f["version"])) or {}
        promise = found.get("promise", {}).get(f["metric"])
        days = found.get("label_days")
        verdict = {"model": f["model"], "version": f["version"], "metric": f["metric"],
                   "online": f["value"], "low": f["low"], "high": f["high"],
                   "samples": f["samples"], "promise": promise}
        higher = version_evaluation.higher_is_better(f["model"], f["metric"])
        if promise is None:
            status = "no promise"
        elif days is not None and abs(days * 86_400 - settings.label_seconds) > 1:
            status = "not comparable"
        elif f["samples"] < settings.min_samples or f["low"] is None:
            status = "too few"
        elif higher:
            status = "below" if f["high"] < promise * (1 - settings.tolerance) else "holds"
        else:
            status = "below" if f["low"] > promise * (1 + settings.tolerance) else "holds"
        verdicts.append({**verdict, "status": status, "label_days": days})
    return verdicts
