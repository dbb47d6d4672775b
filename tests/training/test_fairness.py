"""Per-group quality and exposure, and the bounds of the fairness gate (fairness.py)."""
import numpy as np
import pandas as pd
import pytest

from pipelines.training import baselines, fairness
from pipelines.training.fairness_report import html

GENRES = {"1": "Action", "2": "Comedy", "3": "Drama|Comedy", "4": "Horror", "5": "Action"}
CATALOG = list(GENRES)
TRAIN_ITEMS = ["1", "1", "1", "2", "2", "3", "5"]  # popularity: 1 > 2 > 3 = 5 > 4 (none)
TRAIN_USERS = ["a", "b", "c", "a", "c", "b", "d"]


def groups():
    # a, b: women aged 20 and 30; c, d: men aged 30 and 60
    return fairness.user_groups(["a", "b", "c", "d"], [b"F", "F", "M", "M"], [20, 30, 30, 60])


def test_user_groups_use_the_feature_store_age_groups_and_decode_genders():
    g = groups()
    assert g.loc["a", "age_group"] == "18-24" and g.loc["d", "age_group"] == "56+"
    assert set(g.gender) == {"F", "M"}


def test_popularity_percentiles_and_head():
    popularity = fairness.popularity_percentiles(TRAIN_ITEMS, CATALOG)
    assert popularity["1"] == 1.0 and popularity["4"] == 0.0
    assert popularity["2"] > popularity["3"] == popularity["5"] > 0
    assert fairness.head_items(TRAIN_ITEMS, CATALOG, 0.4) == {"1", "2"}


def test_total_variation():
    assert fairness.total_variation(np.array([1.0, 0]), np.array([0, 3.0])) == 1.0
    assert fairness.total_variation(np.array([1.0, 1]), np.array([2.0, 2])) == 0.0


def test_retrieval_tables_per_group():
    recommended = {"a": ["1", "2"], "b": ["4", "3"], "c": ["1", "5"], "d": ["1", "2"]}
    relevant = {"a": {"1"}, "b": {"2"}, "c": {"1", "4"}, "d": {"2"}}
    tables = fairness.retrieval_tables(
        recommended, relevant, groups(), fairness.popularity_percentiles(TRAIN_ITEMS, CATALOG),
        fairness.head_items(TRAIN_ITEMS, CATALOG, 0.4), GENRES, TRAIN_USERS, TRAIN_ITEMS)
    gender = tables["gender"]
    assert list(gender.index) == ["F", "M"] and gender["size"].tolist() == [2, 2]
    # recall: a 1, b 0 -> F 0.5; c 0.5, d 1 -> M 0.75
    assert gender.loc["F", "recall_at_10"] == pytest.approx(0.5)
    assert gender.loc["M", "recall_at_10"] == pytest.approx(0.75)
    # long tail (outside {1, 2}): a 0, b 1 -> F 0.5; c 0.5, d 0 -> M 0.25
    assert gender.loc["F", "long_tail_share"] == pytest.approx(0.5)
    assert gender.loc["M", "long_tail_share"] == pytest.approx(0.25)
    # F were shown Action, Comedy, Horror, Drama, Comedy and rated Action, Action,
    # Comedy, Drama, Comedy: total variation 0.5 * (|.2 - .4| + |.2 - 0|)
    assert gender.loc["F", "genre_gap"] == pytest.approx(0.2)
    assert list(tables["age_group"].index) == ["18-24", "25-34", "56+"]


def test_ranking_tables_rmse_per_group():
    ratings = np.array([4.0, 2.0, 5.0, 3.0])
    tables = fairness.ranking_tables(ratings, np.array([4.0, 2.0, 3.0, 3.0]),
                                     np.full(4, 3.5), ["a", "b", "c", "d"], groups())
    gender = tables["gender"]
    assert gender.loc["F", "rmse"] == 0.0
    assert gender.loc["M", "rmse"] == pytest.approx(np.sqrt(2.0))
    assert gender.loc["M", "baseline_rmse"] == pytest.approx(np.sqrt((1.5 ** 2 + 0.5 ** 2) / 2))


def bounds_tables():
    table = pd.DataFrame({"size": [100, 100, 5], "recall_at_10": [0.10, 0.04, 0.0],
                          "genre_gap": [0.1, 0.7, 0.1]}, index=["F", "M", "X"])
    return {"gender": table}


def test_bounds_name_the_field_and_the_groups():
    reasons = fairness.check_bounds(bounds_tables(), {
        "fairness_max_recall_difference": 0.05, "fairness_min_recall_ratio": 0.5,
        "fairness_max_genre_gap": 0.5}, min_group_size=30)
    assert len(reasons) == 3
    assert "fairness_max_recall_difference 0.05" in reasons[0] and "0.0600" in reasons[0]
    assert "(M 0.0400, F 0.1000)" in reasons[0]  # group X is too small to be gated
    assert "ratio 0.4000" in reasons[1] and "fairness_min_recall_ratio" in reasons[1]
    assert "genre_gap of group M is 0.7000" in reasons[2]


def test_bounds_that_hold_give_no_reason():
    assert fairness.check_bounds(bounds_tables(), {
        "fairness_max_recall_difference": 0.07, "fairness_min_recall_ratio": 0.35,
        "fairness_max_genre_gap": 0.8}, min_group_size=30) == []


def test_report_shows_verdict_and_groups():
    tables = fairness.ranking_tables(np.array([4.0, 2.0]), np.array([3.0, 2.0]),
                                     np.array([3.0, 3.0]), ["a", "c"], groups())
    page = html("ranking", tables, {"fairness_max_rmse_difference": 0.1}, 1,
                ["fairness: gender: rmse differs"])
    assert "Not blessed" in page and "rmse differs" in page and "<svg" in page
    assert "<th>F</th>" in page and "fairness_max_rmse_difference = 0.1" in page


def test_item_mean_baseline_is_damped_towards_the_global_mean():
    predicted = baselines.item_mean_ratings(["1", "1", "2"], [5.0, 5.0, 2.0], ["1", "9"],
                                            prior=2.0)
    mean = 4.0
    assert predicted[0] == pytest.approx((10.0 + 2 * mean) / 4)
    assert predicted[1] == pytest.approx(mean)  # unknown item
