"""The replay's scoring, baselines and landing: what a reader of its table relies on."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from libs import config as config_lib
from pipelines.data.dataset import Dataset
from pipelines.replay import baselines, report, scoring
from pipelines.replay.config import ReplayConfig
from pipelines.replay.run import CutResult, before, cut_time

DAY = baselines.DAY


def ratings(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_recall_and_ndcg_count_hits_against_the_future():
    truth = {"a", "b", "c", "d"}
    assert scoring.recall(["a", "x", "b"], truth, 10) == 0.5
    assert scoring.recall(["x", "y"], truth, 10) == 0.0
    assert scoring.ndcg(["a", "b", "c", "d"], truth, 10) == pytest.approx(1.0)
    # one hit in second place against an ideal of one hit in first place
    assert scoring.ndcg(["x", "a"], {"a"}, 10) == pytest.approx(1 / np.log2(3))
    assert scoring.recall(["x"] * 10 + ["a"], {"a"}, 10) == 0.0  # beyond k


def test_score_reports_intervals_coverage_and_long_tail():
    truth = {"u1": {"a"}, "u2": {"b"}, "u3": {"c"}}
    lists = {"u1": ["a", "z"], "u2": ["z", "y"]}  # u3 got nothing: all misses
    result = scoring.score(lists, truth, 2, head={"a", "z"}, catalog_size=10, samples=500)
    assert result.users == 3
    assert result.recall.mean == pytest.approx(1 / 3)
    assert result.recall.low <= result.recall.mean <= result.recall.high
    assert result.coverage == pytest.approx(3 / 10)  # a, z, y
    assert result.long_tail == pytest.approx(1 / 4)  # y of a, z, z, y


def test_trending_counts_only_the_window_and_lists_skip_seen_items():
    cut = 100 * DAY
    history = baselines.History.of(ratings([
        ("u1", "old", 5, 1 * DAY), ("u2", "old", 5, 2 * DAY), ("u3", "old", 4, 3 * DAY),
        ("u1", "new", 4, 95 * DAY), ("u2", "new", 3, 96 * DAY), ("u3", "mid", 3, 60 * DAY)]))
    scores = baselines.non_personalised(history, cut, (7,))
    popular = baselines.recommend(history, scores["most popular"], ["u3", "stranger"], 2)
    trending = baselines.recommend(history, scores["trending 7d"], ["u3", "stranger"], 2)
    assert popular["stranger"] == ["old", "new"]
    assert trending["stranger"] == ["new", "old"]
    assert trending["u3"] == ["new"]  # the only item u3 has not rated


def test_the_blend_is_chosen_without_the_period_it_is_scored_on():
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(20)}", 4, int(rng.integers(0, 100 * DAY)))
            for u in range(40) for _ in range(8)]
    past = ratings(rows)
    cut = 100 * DAY
    chosen = baselines.choose_blend(past, cut, 14, (7, 14), (0.5, 2.0), 50.0, 5)
    future = ratings([(f"u{u}", "i0", 5, cut + DAY) for u in range(40)])
    again = baselines.choose_blend(pd.concat([past, future]), cut, 14, (7, 14), (0.5, 2.0),
                                   50.0, 5)
    assert chosen == again
    assert chosen.validation_users > 0


def test_landing_keeps_only_what_existed_before_the_cut():
    data = Dataset(
        users=pd.DataFrame({"user_id": ["1", "2"], "age": [30, 40], "gender": ["F", "M"],
                            "occupation": ["other", "other"], "zip_code": ["1", "2"]}),
        items=pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"],
                            "release_year": [1990, 1998], "genres": ["Drama", "Drama"]}),
        ratings=ratings([("1", "a", 4.0, 10), ("1", "b", 4.0, 30), ("2", "b", 5.0, 40)]),
        source="test")
    cut = cut_time(data.ratings, 0.4)
    past = before(data, cut)
    assert list(past.ratings.timestamp) == [10, 30][:len(past.ratings)]
    assert (past.ratings.timestamp < cut).all()
    assert set(past.items.item_id) == set(past.ratings.item_id)
    assert set(past.users.user_id) == {"1"}  # user 2 had not rated yet


def test_a_bad_config_names_the_field():
    with pytest.raises(config_lib.ConfigError, match="cuts"):
        config_lib.load(ReplayConfig, overrides={"cuts": [0.5, 1.5]})
    with pytest.raises(config_lib.ConfigError, match="unknown key"):
        config_lib.load(ReplayConfig, overrides={"cut": [0.5]})


def _interval(mean):
    return {"mean": mean, "low": mean - 0.01, "high": mean + 0.01}


def test_report_compares_the_served_answer_with_the_best_baseline():
    def entry(r, n):
        return {"users": 5, "recall": _interval(r), "ndcg": _interval(n), "coverage": 0.1,
                "long_tail": 0.0}
    result = CutResult(0.8, 1, 10, 5, 0, scores={"known users": {
        "most popular": entry(0.10, 0.20), "trending 14d": entry(0.20, 0.25),
        "EASE": entry(0.05, 0.30), report.SERVED: entry(0.22, 0.30)}})
    assert report.best_baseline(result.scores["known users"], "recall") == ("trending 14d", 0.20)
    assert report.ratios(result)["known users"] == pytest.approx({"recall": 1.1, "ndcg": 1.0})
    table = report.markdown_table([result], ReplayConfig())
    assert "**0.200 [0.190, 0.210]**" in table  # the best baseline stands out
    assert "0.8: recall 1.10x, ndcg 1.00x" in table
