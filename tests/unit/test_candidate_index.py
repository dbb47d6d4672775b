"""A retrieval version's candidate index: exact and IVF search, exclusions inside the
search, files that do not belong together, and loading off the request path."""
from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from libs import candidate_index
from libs.candidate_index import CandidateIndex
from services.candidate.version_index import VersionIndexes


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Embeddings with the structure trained ones have: clusters of unequal size."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, 16))
    members = rng.zipf(1.5, n) % 50
    return (centres[members] + 0.4 * rng.normal(size=(n, 16))).astype(np.float32)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    directory = tmp_path_factory.mktemp("index")
    embeddings = clustered(5000)
    candidate_index.write(directory, [f"i{i}" for i in range(5000)], embeddings)
    return directory, embeddings


def exact_top(embeddings, query, k, exclude=()):
    scores = embeddings @ query
    for item in exclude:
        if item[1:].isdigit():
            scores[int(item[1:])] = -np.inf
    return [f"i{p}" for p in np.argsort(-scores)[:k]]


def test_exact_search_is_the_brute_force_top_k_without_the_excluded(written):
    directory, embeddings = written
    index = CandidateIndex.load(directory, approximate=False)
    query = np.random.default_rng(1).normal(size=16).astype(np.float32)
    best = exact_top(embeddings, query, 100)
    exclude = set(best[::3]) | {"not-in-the-catalog"}
    found = index.search(query, 100, exclude)
    assert [item for item, _ in found] == exact_top(embeddings, query, 100, exclude)
    assert found[0][1] == pytest.approx(float(embeddings[int(found[0][0][1:])] @ query),
                                        rel=1e-5)


def test_ivf_search_filters_inside_the_cells_and_finds_the_true_neighbours(written):
    directory, embeddings = written
    index = CandidateIndex.load(directory, approximate=True, probes=32)
    assert index.approximate and candidate_index.read_meta(directory)["lists"] == 128
    rng = np.random.default_rng(2)
    recalls = []
    for _ in range(50):
        query = rng.normal(size=16).astype(np.float32)
        exclude = set(exact_top(embeddings, query, 60)[::2])  # 30 of the best
        found = [item for item, _ in index.search(query, 100, exclude)]
        assert len(found) == 100 and not exclude & set(found)
        recalls.append(len(set(found) & set(exact_top(embeddings, query, 100, exclude)))
                       / 100)
    assert np.mean(recalls) >= 0.95


def test_k_larger_than_what_is_left_gives_what_is_left(written):
    directory, _ = written
    index = CandidateIndex.load(directory, approximate=False)
    everything = {f"i{i}" for i in range(4998)}
    assert {item for item, _ in index.search(np.ones(16), 10, everything)} == {"i4998",
                                                                               "i4999"}


def test_files_that_do_not_belong_together_are_refused(written, tmp_path):
    directory, _ = written
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    np.save(broken / candidate_index.IDS, np.array(["a", "b"]))
    with pytest.raises(ValueError, match="2 ids"):
        CandidateIndex.load(broken, approximate=False)


def test_a_version_is_searched_once_loaded_and_a_request_never_waits_for_a_load(
        written, tmp_path):
    directory, _ = written
    shutil.copytree(directory, tmp_path / "3" / "assets.extra" / candidate_index.DIRECTORY)
    (tmp_path / "4").mkdir()  # a version without an index (an older export)

    async def run():
        indexes = VersionIndexes(tmp_path, ann_min_items=1000, probes=8)
        assert indexes.get(3) is None  # not loaded yet: the caller uses the model's top-k
        await asyncio.sleep(0.5)
        loaded = indexes.get(3)
        assert loaded is not None and loaded.approximate  # 5,000 items >= 1,000
        await indexes.load_newest()
        return indexes.get(4), indexes.get(4)
    assert asyncio.run(run()) == (None, None)


def test_an_index_of_an_older_format_is_refused_with_what_to_do(written, tmp_path):
    directory, _ = written
    old = tmp_path / "old"
    shutil.copytree(directory, old)
    meta = json.loads((old / candidate_index.META).read_text())
    (old / candidate_index.META).write_text(json.dumps({**meta, "format": 1}))
    with pytest.raises(ValueError, match="format 1.*retrain"):
        CandidateIndex.load(old, approximate=True)
