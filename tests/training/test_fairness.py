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
    assert gender["size"].tolist() == [2, 2] and gender["ratings"].tolist() == [2, 2]
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
    assert "(M 0.0400, F 0.1000; 100 and 100 users)" in reasons[0]  # X is too small
    assert "ratio 0.4000" in reasons[1] and "fairness_min_recall_ratio" in reasons[1]
    assert "genre_gap of group M is 0.7000" in reasons[2]


def test_bounds_that_hold_give_no_reason():
    assert fairness.check_bounds(bounds_tables(), {
        "fairness_max_recall_difference": 0.07, "fairness_min_recall_ratio": 0.35,
        "fairness_max_genre_gap": 0.8}, min_group_size=30) == []


def noisy_groups(gap: float, users: int, seed: int = 0):
    """Recall of two groups of `users` users, B's mean `gap` above A's, with per-user noise
    as wide as real per-user recall (0 or 1 mostly)."""
    rng = np.random.default_rng(seed)
    recalls = {"a": rng.binomial(1, 0.2, users), "b": rng.binomial(1, 0.2 + gap, users)}
    names = [f"{g}{i}" for g in recalls for i in range(users)]
    groups = fairness.user_groups(names, ["F" if n[0] == "a" else "M" for n in names],
                                  [30] * len(names))
    recommended = {n: ["hit"] for n in names}
    relevant = {n: ({"hit"} if recalls[n[0]][int(n[1:])] else {"miss"}) for n in names}
    return fairness.retrieval_tables(recommended, relevant, groups, {"hit": 1.0}, {"hit"},
                                     {"hit": "Drama"}, names, ["hit"] * len(names),
                                     attributes=("gender",))


def test_a_gap_within_noise_does_not_block_but_a_real_one_does():
    limits = {"fairness_max_recall_difference": 0.1}
    # 40 users per group: a 0.15 gap in the sample is well within noise of a 0.1 bound
    small = noisy_groups(0.0, 40, seed=3)
    table = small["gender"]
    gap = abs(table.loc["M", "recall_at_10"] - table.loc["F", "recall_at_10"])
    checks = fairness.evaluate_bounds(small, limits, min_group_size=30)
    assert len(checks) == 1 and checks[0].low < 0.1 < checks[0].high
    assert not checks[0].blocks and fairness.check_bounds(small, limits, 30) == []
    assert checks[0].estimate == pytest.approx(gap)
    # 2,000 users per group and a true gap of 0.3: blocked, and the reason says it all
    large = noisy_groups(0.3, 2000)
    reasons = fairness.check_bounds(large, limits, 30)
    assert len(reasons) == 1
    assert "(F 0." in reasons[0] and "2000 and 2000 users" in reasons[0]
    assert "95% interval 0.2" in reasons[0] and "beyond noise" in reasons[0]


def test_ranking_groups_are_sized_by_users_not_ratings():
    # 5 users, 100 ratings each: 500 ratings, still a group too small to gate
    users = [f"u{i}" for i in range(5) for _ in range(100)] + ["v"] * 50 * 40
    groups = fairness.user_groups([f"u{i}" for i in range(5)] + ["v"], ["F"] * 5 + ["M"],
                                  [20] * 5 + [60])
    ratings = np.full(len(users), 3.0)
    predictions = np.where(np.array([u.startswith("u") for u in users]), 5.0, 3.0)
    tables = fairness.ranking_tables(ratings, predictions, ratings, users, groups)
    assert tables["gender"].loc["F", "size"] == 5
    assert fairness.check_bounds(tables, {"fairness_max_rmse_difference": 0.3}, 30) == []


def rating_groups(women_error: float, users: int = 60, seed: int = 0):
    """Ratings of `users` women and men (20 each); the item-mean baseline errs by about 1.3
    for women and 0.9 for men (some groups' ratings are harder to predict), the model
    errs as the baseline does plus `women_error` for women."""
    rng = np.random.default_rng(seed)
    names = [f"{g}{i}" for g in "fm" for i in range(users)]
    who = np.repeat(names, 20)
    women = np.char.startswith(who.astype(str), "f")
    baseline = np.full(len(who), 3.5)
    ratings = baseline + rng.normal(0, np.where(women, 1.3, 0.9))
    predictions = ratings - (ratings - baseline) * (1 + women_error * women)
    groups = fairness.user_groups(names, ["F" if n[0] == "f" else "M" for n in names],
                                  [30] * len(names))
    return fairness.ranking_tables(ratings, predictions, baseline, list(who), groups,
                                   attributes=("gender",))


def test_a_group_hard_to_predict_for_any_model_is_not_blocked_one_served_worse_is():
    limits = {"fairness_max_rmse_excess_over_item_mean": 0.05}
    hard = rating_groups(0.0)
    assert hard["gender"].loc["F", "rmse"] > 1.2  # what an absolute bound would refuse
    assert fairness.check_bounds(hard, limits, 30) == []
    worse = rating_groups(0.2)
    reasons = fairness.check_bounds(worse, limits, 30)
    assert len(reasons) == 1 and "group F's RMSE" in reasons[0]
    assert "above the item-mean baseline's" in reasons[0] and "60 users" in reasons[0]
    assert "95% interval 0.2" in reasons[0] and "beyond noise" in reasons[0]


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


def test_checks_are_plain_json():
    import json
    checks = fairness.evaluate_bounds(noisy_groups(0.3, 200), {
        "fairness_max_recall_difference": 0.1, "fairness_min_recall_ratio": 0.9}, 30)
    assert json.loads(json.dumps([c.as_dict() for c in checks]))[0]["blocks"] is True


def test_a_passing_check_says_it_is_within_its_bound():
    checks = fairness.evaluate_bounds(rating_groups(-0.1), {
        "fairness_max_rmse_excess_over_item_mean": 0.05,
        "fairness_max_rmse_difference": 0.3}, 30)
    assert checks and not any(c.blocks for c in checks)
    assert all(" within fairness_max_rmse_" in c.reason and " above fairness" not in c.reason
               for c in checks)
