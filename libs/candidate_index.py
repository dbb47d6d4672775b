"""A retrieval version's candidate index: every catalog item's embedding from the
candidate tower, and an HNSW graph over them (faiss), written by the Trainer beside the
SavedModel (`<version>/assets.extra/candidate_index/`, which TF Serving ignores) and read
by the candidate service. Index and query tower come from the same training run, so a
version's query embedding is only ever searched in that version's index.

Search is by inner product (the two-tower's score). A graph over inner products finds
few of the true best items (measured on this project's trained embeddings: recall@100
0.77 at 100k items), so the graph is built over the standard reduction to Euclidean
distance: every item gets one more coordinate, sqrt(R^2 - |x|^2) with R the largest norm,
and the query a 0, so the nearest items are those of largest inner product (0.97 at the
same cost). Excluded items (what the user rated,
the request's exclusions) are filtered inside the search: exact search masks their
scores; HNSW skips them while walking the graph (an IDSelector), so k results come back
without asking for k + |exclude|. Exact search is numpy over the embeddings, for
catalogs too small to need the graph.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DIRECTORY = "candidate_index"
IDS, EMBEDDINGS, GRAPH, META = "item_ids.npy", "embeddings.npy", "hnsw.faiss", "meta.json"
FORMAT = 1


def write(directory: str | Path, item_ids, embeddings: np.ndarray, m: int = 32,
          ef_construction: int = 200, threads: int = 0) -> dict:
    """Writes the embeddings and their HNSW graph; returns the index's description."""
    import faiss

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    ids = np.asarray([str(i) for i in item_ids])
    if embeddings.ndim != 2 or len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} item ids for embeddings of shape {embeddings.shape}")
    if threads:
        faiss.omp_set_num_threads(threads)
    norms = np.linalg.norm(embeddings, axis=1)
    radius = float(norms.max()) if len(norms) else 0.0
    lifted = np.hstack([embeddings, np.sqrt(np.maximum(radius ** 2 - norms ** 2, 0))[:, None]])
    graph = faiss.IndexHNSWFlat(lifted.shape[1], m)  # Euclidean, over the lifted vectors
    graph.hnsw.efConstruction = ef_construction
    graph.add(np.ascontiguousarray(lifted, dtype=np.float32))
    faiss.write_index(graph, str(directory / GRAPH))
    np.save(directory / IDS, ids)
    np.save(directory / EMBEDDINGS, embeddings)
    meta = {"format": FORMAT, "items": len(ids), "dimensions": int(embeddings.shape[1]),
            "score": "inner_product", "graph": "hnsw_euclidean_lifted", "radius": radius,
            "hnsw_m": m, "ef_construction": ef_construction}
    (directory / META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_meta(directory: str | Path) -> dict:
    meta = json.loads((Path(directory) / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory}: index format {meta.get('format')}, this code reads "
                         f"{FORMAT}")
    return meta


class CandidateIndex:
    """One version's index, searched exactly or through its HNSW graph."""

    def __init__(self, item_ids: np.ndarray, embeddings: np.ndarray, graph=None,
                 ef_search: int = 128, radius: float = 0.0):
        self.item_ids: list[str] = item_ids.tolist()
        self.embeddings, self.graph, self.ef_search = embeddings, graph, ef_search
        self.radius = radius
        self.position = {item: i for i, item in enumerate(self.item_ids)}

    @classmethod
    def load(cls, directory: str | Path, graph: bool, ef_search: int = 128
             ) -> "CandidateIndex":
        """`graph`: also read the HNSW graph (catalogs searched approximately)."""
        directory = Path(directory)
        meta = read_meta(directory)
        ids = np.load(directory / IDS)
        # the graph holds its own copy of the vectors: then the file is only mapped
        embeddings = np.load(directory / EMBEDDINGS, mmap_mode="r" if graph else None)
        if len(ids) != meta["items"] or embeddings.shape != (meta["items"],
                                                             meta["dimensions"]):
            raise ValueError(f"{directory}: {len(ids)} ids and embeddings of shape "
                             f"{embeddings.shape}, the index says {meta['items']} items")
        found = None
        if graph:
            import faiss
            found = faiss.read_index(str(directory / GRAPH))
            if found.ntotal != meta["items"]:
                raise ValueError(f"{directory}: the graph holds {found.ntotal} items, "
                                 f"the index {meta['items']}")
        return cls(ids, embeddings, found, ef_search, meta["radius"])

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def approximate(self) -> bool:
        return self.graph is not None

    def search(self, query: np.ndarray, k: int, exclude=()) -> list[tuple[str, float]]:
        """The k best items by inner product with `query`, none of `exclude`."""
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        excluded = np.fromiter((p for p in map(self.position.get, exclude) if p is not None),
                               dtype=np.int64)
        k = min(k, len(self) - len(excluded))
        if k <= 0:
            return []
        if self.graph is None:
            return self._exact(query[0], k, excluded)
        import faiss
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        if len(excluded):
            batch = faiss.IDSelectorBatch(excluded)
            params.sel = faiss.IDSelectorNot(batch)
        lifted = np.hstack([query, np.zeros((1, 1), np.float32)])
        distances, positions = self.graph.search(lifted, k, params=params)
        # |q - x'|^2 = |q|^2 + R^2 - 2 q.x: the inner product back from the distance
        offset = float(query[0] @ query[0]) + self.radius ** 2
        return [(self.item_ids[p], (offset - float(d)) / 2)
                for p, d in zip(positions[0], distances[0]) if p >= 0]

    def _exact(self, query: np.ndarray, k: int, excluded: np.ndarray):
        scores = self.embeddings @ query
        scores[excluded] = -np.inf
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[p], float(scores[p])) for p in top]
