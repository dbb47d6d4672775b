"""Offline metrics and baselines: worked examples, and baselines that learn what generated
data holds."""
import math

import numpy as np
import pytest

from pipelines.data import prepare, synthetic
from pipelines.training import baselines, evaluation


def test_recall_and_ndcg_by_hand():
    recommended = {"a": ["x", "y", "z"], "b": ["q", "r", "s"]}
    relevant = {"a": {"y", "w"}, "b": {"q"}}
    recall, ndcg = evaluation.recall_ndcg_at_k(recommended, relevant, 3)
    assert recall == pytest.approx((1 / 2 + 1) / 2)
    ideal_a = 1 + 1 / math.log2(3)
    assert ndcg == pytest.approx(((1 / math.log2(3)) / ideal_a + 1.0) / 2)


def test_top_k_accuracy_and_unseen_top_k():
    assert evaluation.top_k_accuracy([["a", "b"], ["c"], ["a"]], ["b", "a", "a"]) == 2 / 3
    assert evaluation.unseen_top_k(["a", "b", "c", "d"], {"b"}, 2) == ["a", "c"]
    assert evaluation.most_popular(["x", "y", "y"]) == ["y", "x"]


def test_ease_ranks_co_rated_items_first():
    # users who rate item 0 also rate item 1; user 2 has rated only item 0
    interactions = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    scores = baselines.ease_scores(interactions, regularization=0.5)
    assert scores[2, 1] > scores[2, 2]


@pytest.fixture(scope="module")
def split():
    data = synthetic.generate(300, 400, 20_000, seed=3)
    rows = data.ratings.merge(data.users, on="user_id").merge(data.items, on="item_id")
    return prepare.split_rows(rows, "random", 0.8, seed=42)


def test_biased_mf_beats_the_global_mean_and_ease_beats_popularity(split):
    train, test = split
    index = baselines.Index.of(train)
    users, items = index.codes(train)
    mf = baselines.fit_biased_mf(users, items, train.rating.to_numpy(), len(index.users),
                                 len(index.items), iterations=6)
    rmse = lambda p: float(np.sqrt(np.mean((p - test.rating.to_numpy()) ** 2)))  # noqa: E731
    assert rmse(mf.predict(*index.codes(test))) < rmse(np.full(len(test), train.rating.mean()))

    seen = index.interactions(train)
    relevant = evaluation.by_user(test.user_id, test.item_id)
    ease = baselines.top_items(baselines.ease_scores(seen), index, 10, seen)
    popular = evaluation.most_popular(train.item_id)
    by_popularity = {u: evaluation.unseen_top_k(
        popular, set(train.item_id[train.user_id == u]), 10) for u in relevant}
    assert evaluation.recall_ndcg_at_k(ease, relevant, 10)[0] > \
        evaluation.recall_ndcg_at_k(by_popularity, relevant, 10)[0]
    assert all(not set(top) & set(train.item_id[train.user_id == u])
               for u, top in list(ease.items())[:20])


def test_unknown_users_and_items_get_the_known_terms():
    model = baselines.BiasedMF(3.0, np.array([0.5]), np.array([-1.0]), np.ones((1, 2)),
                               np.ones((1, 2)))
    assert model.predict(np.array([0, -1, 0, -1]), np.array([0, 0, -1, -1])).tolist() == \
        pytest.approx([4.5, 2.0, 3.5, 3.0])
