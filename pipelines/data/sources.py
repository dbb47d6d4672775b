"""Which data a job trains or ingests: MovieLens when present or named, else generated."""
from __future__ import annotations

from pipelines.data import movielens, synthetic
from pipelines.data.dataset import Dataset


def load(data_dir: str = "", synthetic_data: bool = False, users: int = 943,
         items: int = 1682, ratings: int = 100_000, seed: int = 42) -> Dataset:
    if synthetic_data:
        return synthetic.generate(users, items, ratings, seed)
    if data_dir:
        return movielens.load(data_dir)
    if movielens.default_dir():
        return movielens.load(movielens.default_dir())
    return synthetic.generate(users, items, ratings, seed)
