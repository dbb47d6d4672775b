"""Candidate sources: neighbours, the listwise blend, and the artifact a version carries."""
import numpy as np
import pandas as pd
import pytest

from libs import candidate_sources as cs, trends
from pipelines.training.models import sources


def test_item_to_item_neighbours_put_what_was_rated_together_first():
    # items 0 and 1 are always rated together, 2 and 3 with anything
    matrix = np.array([[1, 1, 0, 1], [1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]], np.float32)
    found = sources.neighbours(matrix)
    index, weight = found["item_to_item"]
    assert index[0][np.argmax(weight[0])] == 1 and 0 not in index[0]
    scores = cs.neighbour_scores(index, weight, np.array([0]), 4)
    assert np.argmax(scores) == 1 and scores[0] == 0


def test_the_blend_learns_which_feature_marks_what_users_pick_next():
    rng = np.random.default_rng(0)
    lists = np.repeat(np.arange(300), 20)
    features = rng.normal(size=(len(lists), len(cs.FEATURES)))
    ease = cs.FEATURES.index("ease")
    noisy = features[:, ease] + rng.normal(scale=0.5, size=len(lists))
    labels = np.zeros(len(lists), bool)
    for start in range(0, len(lists), 20):  # each list's two best by the noisy signal
        labels[start + np.argsort(-noisy[start:start + 20])[:2]] = True
    assert np.argmax(sources.train_blend(features, labels, lists, hidden=0).weight) == ease
    blend = sources.train_blend(features, labels, lists)
    random_order = sources.list_metrics(rng.normal(size=len(lists)), labels, lists)
    found = sources.list_metrics(blend.score(features), labels, lists)
    assert found["ndcg_at_10"] > 2 * random_order["ndcg_at_10"]
    assert found["recall_at_10"] > 1.5 * random_order["recall_at_10"]


def test_all_rated_metrics_count_what_no_candidate_held_as_a_miss():
    """Online, a user's later ratings count whether or not the sources proposed them:
    the all_rated figures divide by everything rated, and count users with no candidate
    among their ratings as misses."""
    lists = np.array([0, 0, 0, 1, 1])
    labels = np.array([True, False, True, False, True])
    scores = np.array([3.0, 2.0, 1.0, 2.0, 1.0])
    # list 0 rated 4 items (2 among its candidates), list 1 rated 1, list 7 rated 2
    # items none of which was a candidate (it has no labelled list at all)
    rated = np.array([[0, 1, 7], [4, 1, 2]])
    found = sources.list_metrics(scores, labels, lists, rated)
    assert found["recall_at_10"] == pytest.approx(1.0)
    assert found["recall_at_10_all_rated"] == pytest.approx((2 / 4 + 1 / 1 + 0) / 3)
    assert found["hit_rate_at_10_all_rated"] == pytest.approx(2 / 3)


def test_rated_counts_hold_every_new_item_a_user_rated_after_the_cut():
    ratings = _ratings(days=30)
    items = sorted(set(ratings.item_id))
    cut = int(ratings.timestamp.max()) - 5 * trends.DAY
    lists = sources.candidate_lists(ratings, items, np.zeros((len(items), 1), np.float32), cut)
    until = cut + 2 * trends.DAY
    _, counts = lists.rated_counts(until)
    window = ratings[(ratings.timestamp >= cut) & (ratings.timestamp < until)]
    before = set(ratings[ratings.timestamp < cut].user_id)
    expected = window[window.user_id.isin(before)].groupby("user_id").size()
    assert sorted(counts.tolist()) == sorted(expected.tolist())
    labelled = lists.labelled(until)[1].sum()
    assert counts.sum() >= labelled  # candidates rated are among all rated


def _ratings(days: int = 120, users: int = 60, seed: int = 1) -> pd.DataFrame:
    """Each day two new items appear and most users rate the newest few: trending wins."""
    rng = np.random.default_rng(seed)
    rows, start = [], 800_000_000
    for day in range(days):
        newest = [2 * day, 2 * day + 1]
        for user in rng.choice(users, size=users // 4, replace=False):
            for item in {*newest, int(rng.integers(0, 2 * day + 2))}:
                rows.append((f"u{user}", f"i{item}", start + day * trends.DAY
                             + int(rng.integers(0, 3600))))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return frame.drop_duplicates(["user_id", "item_id"])


def test_a_version_s_sources_are_built_before_the_data_ends_and_load_back(tmp_path):
    ratings = _ratings()
    catalog = pd.DataFrame({"item_id": sorted(set(ratings.item_id)), "genres": "Drama"})
    built, held_out = sources.build(ratings, catalog, progress=lambda _: None)
    validation = built.info["validation_ndcg_at_10"]
    assert validation["blend"] >= validation["trending"] - 0.05
    assert len(held_out["features"]) == len(held_out["labels"]) == len(held_out["lists"])
    path = tmp_path / cs.ARTIFACT
    built.save(path)
    loaded = cs.CandidateSources.load(path)
    assert loaded.item_ids == built.item_ids
    assert np.allclose(loaded.blend.weight, built.blend.weight)
    assert loaded.info["pseudo_cuts_days"] == built.info["pseudo_cuts_days"]


def test_training_lists_propose_only_what_the_served_sources_can():
    """The candidate service never proposes an item nobody rated as trending or popular;
    the lists the blend learns from must not either."""
    ratings = _ratings(days=30)
    items = sorted(set(ratings.item_id)) + [f"unrated{k}" for k in range(200)]
    genres = np.zeros((len(items), 1), np.float32)
    cut = int(ratings.timestamp.max()) - 5 * trends.DAY
    lists = sources.candidate_lists(ratings, items, genres, cut)
    rated_before = ratings[ratings.timestamp < cut]
    counts = lists.features[:, cs.FEATURES.index("log_count_all")]
    assert len(counts) and (counts > 0).all()
    assert len(np.unique(lists.lists)) == len(
        set(rated_before.user_id) & set(ratings[ratings.timestamp >= cut].user_id))


def test_a_catalog_too_large_for_dense_neighbours_gets_no_sources(monkeypatch):
    monkeypatch.setattr(sources, "MAX_ITEMS", 3)
    ratings = _ratings(days=10)
    catalog = pd.DataFrame({"item_id": sorted(set(ratings.item_id)), "genres": "Drama"})
    messages = []
    assert sources.build(ratings, catalog, progress=messages.append) == (None, None)
    assert "off" in messages[0]


def test_an_artifact_with_the_wrong_blend_is_refused():
    arrays = {"item_ids": np.array(["a", "b"]), "genres": np.zeros((2, 3)),
              "item_to_item_index": np.zeros((2, 1), int), "item_to_item_weight": np.zeros((2, 1)),
              "ease_index": np.zeros((2, 1), int), "ease_weight": np.zeros((2, 1)),
              "blend_mean": np.zeros(2), "blend_scale": np.ones(2), "blend_weight": np.zeros(2)}
    with pytest.raises(cs.SourcesError, match="blend has"):
        cs.CandidateSources(arrays)
    del arrays["ease_index"]
    with pytest.raises(cs.SourcesError, match="ease_index"):
        cs.CandidateSources(arrays)


def test_too_short_a_history_gets_no_sources_instead_of_failing_the_trainer():
    ratings = _ratings(days=3)
    catalog = pd.DataFrame({"item_id": sorted(set(ratings.item_id)), "genres": "Drama"})
    messages = []
    assert sources.build(ratings, catalog, progress=messages.append) == (None, None)
    assert "no user rated both before and after" in messages[0]


def test_the_gate_s_blend_learns_nothing_from_the_validation_period():
    # every pseudo-cut's labels run to the data's end; the blend the gate judges must
    # not see the last VALIDATION_DAYS, whatever happened in them
    ratings = _ratings()
    catalog = pd.DataFrame({"item_id": sorted(set(ratings.item_id)), "genres": "Drama"})
    start = int(ratings.timestamp.max()) + 1 - sources.VALIDATION_DAYS * trends.DAY
    late = ratings.timestamp >= start
    changed = ratings.copy()
    changed.loc[late, "item_id"] = np.random.default_rng(5).permutation(
        changed.item_id[late].to_numpy())
    changed = changed.drop_duplicates(["user_id", "item_id"])
    built, held_out = sources.build(ratings, catalog, progress=lambda _: None)
    rebuilt, held_out_again = sources.build(changed, catalog, progress=lambda _: None)
    assert np.allclose(held_out["blend_weight"], held_out_again["blend_weight"])
    assert not np.allclose(built.blend.weight, rebuilt.blend.weight)
    assert built.info["validation_days"] == sources.VALIDATION_DAYS


def test_trend_rows_at_request_time_are_the_table_s_and_new_items_start_now():
    table = {"a": [1, 3, 1, 0, 0, 5, 100], "b": [0, 0, 2, 2, 1, 9, 50]}
    orders = cs.TrendOrders(table, ["a", "b", "c"])
    asked = ["b", "new", "a", "c"]  # "c" is in the catalog but was never rated
    assert np.array_equal(orders.rows(asked, missing=900),
                          cs.trend_rows(table, asked, missing=900))
    assert orders.rows(asked, missing=900)[1].tolist() == [0, 0, 0, 0, 0, 0, 900]
    assert np.array_equal(cs.TrendOrders({}).rows(["x"], 7), cs.trend_rows({}, ["x"], 7))
