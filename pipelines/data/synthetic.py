"""Generates MovieLens-shaped data: the embedded default where MovieLens is absent.

Users have demographics and a genre taste that depends on them (so a model can learn
it from features), items have genres, a year and a Zipf-distributed popularity (the long
tail), ratings have timestamps. Deterministic by seed; generated in chunks of users so
millions of ratings fit in little memory.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from libs import feature_spec
from pipelines.data.dataset import Dataset

DAY = 86_400
START = 874_724_710  # same epoch range as MovieLens 100K (autumn 1997)


def generate(num_users: int = 943, num_items: int = 1682, num_ratings: int = 100_000,
             seed: int = 42, chunk_users: int = 2_000) -> Dataset:
    if min(num_users, num_items, num_ratings) <= 0:
        raise ValueError("num_users, num_items and num_ratings must be positive")
    if num_ratings > num_users * num_items // 2:
        raise ValueError(f"num_ratings={num_ratings} is more than half of all "
                         f"{num_users}x{num_items} user-item pairs")
    rng = np.random.default_rng(seed)
    genres = feature_spec.GENRES
    n_genres = len(genres)

    # Users: demographics, then a taste vector driven by the demographic segment.
    ages = np.clip(rng.gamma(6.0, 5.5, num_users).astype(int) + 7, 7, 73)
    genders = rng.choice(feature_spec.GENDERS, num_users, p=[0.29, 0.71])
    occupations = rng.choice(feature_spec.OCCUPATIONS, num_users)
    age_bucket = np.digitize(ages, feature_spec.AGE_BOUNDARIES)
    segment_taste = rng.normal(0, 1.0, (len(feature_spec.AGE_BOUNDARIES) + 1, 2, n_genres))
    taste = (segment_taste[age_bucket, (genders == "M").astype(int)]
             + rng.normal(0, 0.6, (num_users, n_genres)))
    user_bias = rng.normal(0, 0.35, num_users)

    # Items: 1-3 genres, year, quality and a long-tailed popularity.
    genre_freq = rng.dirichlet(np.full(n_genres, 0.8))
    item_genres = np.zeros((num_items, n_genres), dtype=bool)
    for i, k in enumerate(rng.integers(1, 4, num_items)):
        item_genres[i, rng.choice(n_genres, k, replace=False, p=genre_freq)] = True
    years = np.clip(np.round(rng.normal(1988, 12, num_items)), 1922, 1998).astype(int)
    quality = rng.normal(0, 0.45, num_items)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.9
    popularity = popularity[rng.permutation(num_items)] * np.exp(quality)
    log_pop = np.log(popularity / popularity.sum())

    # Ratings per user: long-tailed counts that add up to num_ratings.
    counts = rng.lognormal(0, 0.9, num_users)
    counts = np.maximum(1, np.round(counts / counts.sum() * num_ratings)).astype(int)
    counts = np.minimum(counts, num_items // 2)
    while counts.sum() != num_ratings:  # fix rounding, never below 1 or above the cap
        diff = num_ratings - counts.sum()
        idx = rng.choice(num_users, abs(diff))
        counts[idx] += np.sign(diff)
        counts = np.clip(counts, 1, num_items // 2)

    genre_norm = item_genres / item_genres.sum(axis=1, keepdims=True)
    frames = []
    for lo in range(0, num_users, chunk_users):
        hi = min(lo + chunk_users, num_users)
        affinity = taste[lo:hi] @ genre_norm.T  # (chunk, items)
        # Gumbel top-k: distinct items drawn with p ~ popularity * exp(2 * affinity)
        keys = log_pop + 2.0 * affinity + rng.gumbel(size=affinity.shape)
        width = int(counts[lo:hi].max())
        top = np.argpartition(-keys, width - 1, axis=1)[:, :width]
        for row, user in enumerate(range(lo, hi)):
            n = counts[user]
            chosen = top[row][np.argsort(-keys[row, top[row]])][:n]
            score = (3.55 + 0.9 * affinity[row, chosen] + quality[chosen] + user_bias[user]
                     + rng.normal(0, 0.7, n))
            first = START + rng.integers(0, 150 * DAY)
            times = np.sort(first + rng.integers(0, 60 * DAY, n))
            frames.append(pd.DataFrame({
                "user_id": str(user + 1), "item_id": (chosen + 1).astype(str),
                "rating": np.clip(np.round(score), 1, 5), "timestamp": times,
            }))
    ratings = pd.concat(frames, ignore_index=True)

    users = pd.DataFrame({
        "user_id": [str(u + 1) for u in range(num_users)], "age": ages.astype("int64"),
        "gender": genders, "occupation": occupations,
        "zip_code": [f"{z:05d}" for z in rng.integers(1000, 99999, num_users)],
    })
    items = pd.DataFrame({
        "item_id": [str(i + 1) for i in range(num_items)],
        "title": [f"Synthetic Movie {i + 1} ({years[i]})" for i in range(num_items)],
        "release_year": years.astype("int64"),
        "genres": [feature_spec.GENRE_SEPARATOR.join(g for g, on in zip(genres, row) if on)
                   for row in item_genres],
    })
    ratings["timestamp"] = ratings.timestamp.astype("int64")
    return Dataset(users=users, items=items, ratings=ratings,
                   source=f"synthetic(users={num_users}, items={num_items}, "
                          f"ratings={num_ratings}, seed={seed})").check()


def write_movielens_format(dataset: Dataset, directory: str | Path) -> Path:
    """Writes u.data / u.user / u.item so `movielens.load` reads it back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    r = dataset.ratings
    pd.DataFrame({"u": r.user_id, "i": r.item_id, "r": r.rating.astype(int),
                  "t": r.timestamp}).to_csv(directory / "u.data", sep="\t", header=False,
                                             index=False)
    dataset.users[["user_id", "age", "gender", "occupation", "zip_code"]].to_csv(
        directory / "u.user", sep="|", header=False, index=False)
    items = dataset.items
    flags = pd.DataFrame({g: items.genres.str.split("|").apply(lambda gs, g=g: int(g in gs))
                          for g in feature_spec.GENRES})
    out = pd.concat([items[["item_id", "title"]].reset_index(drop=True),
                     pd.DataFrame({"release": "01-Jan-" + items.release_year.astype(str),
                                   "video": "", "url": ""}), flags], axis=1)
    out.to_csv(directory / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for u.data, u.user, u.item")
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    try:
        data = generate(args.users, args.items, args.ratings, args.seed)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {len(data.ratings):,} ratings to {write_movielens_format(data, args.out)}")


if __name__ == "__main__":
    main()
