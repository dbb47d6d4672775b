"""Which data lands for the feature job: MovieLens when present or named, else generated."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from libs import deletion_list
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


@contextmanager
def landing(raw_dir: str | Path):
    """A new directory to write the raw tables into; it replaces raw_dir only when the
    block finishes, so a failed landing keeps what landed before."""
    directory = Path(raw_dir)
    new = directory.with_name(directory.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    try:
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    new.rename(directory)


def land(data: Dataset, raw_dir: str | Path, erased: frozenset[str] = frozenset()) -> None:
    """Writes the three tables as the raw landing layout the feature job reads
    (users.csv, items.csv, ratings.csv), replacing what landed before. `erased`: the
    deletion list's digests (libs/deletion_list.py); those users' rows never land."""
    users, ratings = data.users, data.ratings
    if erased:
        users = users[~users.user_id.astype(str).map(deletion_list.digest).isin(erased)]
        ratings = ratings[ratings.user_id.isin(users.user_id)]
    with landing(raw_dir) as new:
        users.to_csv(new / "users.csv", index=False)
        data.items.to_csv(new / "items.csv", index=False)
        ratings.to_csv(new / "ratings.csv", index=False)
