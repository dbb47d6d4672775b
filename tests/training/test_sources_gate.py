"""The retrieval evaluator's gate on the order the candidate service serves."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the evaluator imports TFRS

import numpy as np  # noqa: E402

from libs import candidate_sources as cs  # noqa: E402
from pipelines.training.components.retrieval_evaluator import sources_checks  # noqa: E402
from pipelines.training.models import sources  # noqa: E402

ITEM_TO_ITEM = cs.FEATURES.index("item_to_item_recent")
POPULAR = cs.FEATURES.index("log_count_all")


def _held_out(seed: int = 0) -> dict:
    """Lists whose positives are marked by the recent items' co-occurrence, not by
    popularity."""
    rng = np.random.default_rng(seed)
    lists = np.repeat(np.arange(200), 30)
    features = rng.normal(size=(len(lists), len(cs.FEATURES)))
    labels = np.zeros(len(lists), bool)
    for start in range(0, len(lists), 30):
        labels[start + np.argsort(-features[start:start + 30, ITEM_TO_ITEM])[:3]] = True
    return {"features": features, "labels": labels, "lists": lists}


def _blend(feature: int) -> cs.Blend:
    weight = np.zeros(len(cs.FEATURES))
    weight[feature] = 1.0
    return cs.Blend(np.zeros(len(cs.FEATURES)), np.ones(len(cs.FEATURES)), weight)


def _model(path, blend: cs.Blend, held_out: dict | None = None):
    """A Trainer's model artifact: the version's sources, and the held-out lists."""
    assets = path / "Format-Serving" / "assets.extra"
    assets.mkdir(parents=True)
    n = 3
    neighbours = np.zeros((n, 1), np.int32), np.zeros((n, 1), np.float32)
    cs.CandidateSources({
        "item_ids": np.array(["a", "b", "c"]), "genres": np.zeros((n, 2)),
        "item_to_item_index": neighbours[0], "item_to_item_weight": neighbours[1],
        "ease_index": neighbours[0], "ease_weight": neighbours[1],
        "blend_mean": blend.mean, "blend_scale": blend.scale,
        "blend_weight": blend.weight}).save(assets / cs.ARTIFACT)
    if held_out is not None:
        np.savez(path / sources.VALIDATION_FILE, **held_out, **blend.arrays())
    return str(path)


def test_a_blend_that_orders_what_users_pick_next_passes(tmp_path):
    model = _model(tmp_path / "new", _blend(ITEM_TO_ITEM), _held_out())
    metrics, reasons = sources_checks(model, None, 1.1, 0.01)
    assert reasons == []
    assert metrics["sources_blend_ndcg_at_10"] > 1.1 * metrics[
        "sources_most_popular_ndcg_at_10"]


def test_a_blend_no_better_than_most_popular_is_refused_with_the_figures(tmp_path):
    model = _model(tmp_path / "new", _blend(POPULAR), _held_out())
    _, reasons = sources_checks(model, None, 1.1, 0.01)
    assert len(reasons) == 1 and "below 1.1 x the most-popular order's" in reasons[0]


def test_a_blend_worse_than_the_last_blessed_one_is_refused(tmp_path):
    blessed = _model(tmp_path / "blessed", _blend(ITEM_TO_ITEM))
    worse = _blend(ITEM_TO_ITEM)
    worse.weight[cs.FEATURES.index("ease")] = 1.5  # mostly noise now
    model = _model(tmp_path / "new", worse, _held_out())
    metrics, reasons = sources_checks(model, blessed, 0.0, 0.01)
    assert metrics["sources_last_blessed_blend_ndcg_at_10"] > metrics[
        "sources_blend_ndcg_at_10"]
    assert len(reasons) == 1 and "worse than the last blessed blend's" in reasons[0]


def test_a_version_without_sources_is_judged_on_the_two_tower_alone(tmp_path):
    model = tmp_path / "new"
    (model / "Format-Serving").mkdir(parents=True)
    assert sources_checks(str(model), None, 1.1, 0.01) == ({}, [])
