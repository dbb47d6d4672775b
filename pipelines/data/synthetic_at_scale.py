"""Large synthetic data streamed into the landing layout: millions of users, items, events.

  python -m pipelines.data.synthetic_at_scale --workdir var --users 1000000 \\
      --items 1000000 --events 20000000 [--days 365] [--seed 42]

Writes `<workdir>/data/raw/{users,items,ratings}.csv` (what the batch job reads) chunk by
chunk: memory is bounded by the catalog (a few values per item and fortnight: about
0.7 GB at 1M items over a year) and one chunk of events, never by the number of events.
The skew is the one production logs show:
- popularity is Zipf over items, times their quality;
- a share of the catalog is released during the span, and a new item gets a launch boost
  that decays over weeks, so what is trending is not what is popular overall;
- users join during the span, each active for a while, and come back in sessions whose
  items share a genre the user likes; activity per user is long-tailed;
- ratings depend on taste (driven by demographics, as in `synthetic.py`), item quality
  and user bias.
Items are drawn per event by importance resampling: a few candidates from the popularity
of the event's fortnight, one kept with weight exp(2 x taste affinity), instead of
scoring the whole catalog per user as the small generator does.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from libs import feature_spec
from pipelines.data import sources
from pipelines.data.synthetic import DAY, START

EPOCH_DAYS = 14          # popularity (launch boosts, releases) is redrawn per fortnight
CANDIDATES = 8           # popularity draws per event, one kept by taste
NEW_SHARE = 0.3          # share of the catalog released during the span
LAUNCH_BOOST, LAUNCH_DAYS = 10.0, 21.0  # a new item's extra weight and its decay
SESSION_FOCUS = 1.5      # extra affinity for the genre a session is about
MAX_EVENTS_PER_USER = 20_000
CHUNK_EVENTS = 250_000


@dataclass
class Catalog:
    genres: np.ndarray      # (items, genres) bool
    genre_norm: np.ndarray  # (items, genres) float32, rows sum to 1
    quality: np.ndarray     # (items,) float32
    popularity: np.ndarray  # (items,) float64, Zipf x quality
    released: np.ndarray    # (items,) seconds after START; negative: before the span


def _catalog(rng, num_items: int, span: int) -> Catalog:
    n_genres = len(feature_spec.GENRES)
    genre_freq = rng.dirichlet(np.full(n_genres, 0.8))
    genres = np.zeros((num_items, n_genres), dtype=bool)
    counts = rng.integers(1, 4, num_items)
    for lo in range(0, num_items, 100_000):  # Gumbel top-k: 1-3 distinct genres each
        hi = min(lo + 100_000, num_items)
        keys = np.log(genre_freq) + rng.gumbel(size=(hi - lo, n_genres))
        ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
        genres[lo:hi] = ranks < counts[lo:hi, None]
    quality = rng.normal(0, 0.45, num_items).astype(np.float32)
    popularity = (1.0 / np.arange(1, num_items + 1))[rng.permutation(num_items)]
    popularity *= np.exp(quality)
    released = np.where(rng.random(num_items) < NEW_SHARE,
                        rng.integers(0, span, num_items), -rng.integers(1, 3650 * DAY,
                                                                        num_items))
    genre_norm = (genres / genres.sum(axis=1, keepdims=True)).astype(np.float32)
    return Catalog(genres, genre_norm, quality, popularity, released)


def _items_frame(catalog: Catalog, rng) -> pd.DataFrame:
    n = len(catalog.quality)
    old_years = np.clip(np.round(rng.normal(1988, 12, n)), 1922, 1997).astype(int)
    new_years = pd.to_datetime(START + np.maximum(catalog.released, 0), unit="s").year
    years = np.where(catalog.released >= 0, new_years, old_years)
    names = np.array(feature_spec.GENRES)
    genres = [feature_spec.GENRE_SEPARATOR.join(names[row]) for row in catalog.genres]
    ids = np.arange(1, n + 1).astype(str)
    return pd.DataFrame({"item_id": ids,
                         "title": [f"Synthetic Movie {i} ({y})" for i, y in zip(ids, years)],
                         "release_year": years, "genres": genres})


def _event_counts(rng, num_users: int, num_items: int, num_events: int) -> np.ndarray:
    """Long-tailed events per user adding up to num_events, none above the cap."""
    cap = min(MAX_EVENTS_PER_USER, max(1, num_items // 4))
    if num_events > cap * num_users:
        raise ValueError(f"events={num_events:,} is more than {cap:,} per user for "
                         f"{num_users:,} users")
    activity = rng.lognormal(0, 1.2, num_users)
    counts = np.zeros(num_users, dtype=np.int64)
    left = num_events
    while left:
        open_ = counts < cap
        share = np.where(open_, activity, 0.0)
        counts += rng.multinomial(left, share / share.sum())
        left = int(np.clip(counts - cap, 0, None).sum())
        counts = np.minimum(counts, cap)
    return counts


class _Users:
    """Demographics and taste as in synthetic.py; join time and lifetime per user."""

    def __init__(self, rng, span: int):
        self.rng, self.span = rng, span
        n_genres = len(feature_spec.GENRES)
        self.segment_taste = rng.normal(0, 1.0, (len(feature_spec.AGE_BOUNDARIES) + 1, 2,
                                                 n_genres))

    def chunk(self, lo: int, hi: int) -> tuple[pd.DataFrame, dict]:
        rng, n = self.rng, hi - lo
        ages = np.clip(rng.gamma(6.0, 5.5, n).astype(int) + 7, 7, 73)
        genders = rng.choice(feature_spec.GENDERS, n, p=[0.29, 0.71])
        taste = (self.segment_taste[np.digitize(ages, feature_spec.AGE_BOUNDARIES),
                                    (genders == "M").astype(int)]
                 + rng.normal(0, 0.6, (n, len(feature_spec.GENRES)))).astype(np.float32)
        frame = pd.DataFrame({
            "user_id": np.arange(lo + 1, hi + 1).astype(str), "age": ages,
            "gender": genders, "occupation": rng.choice(feature_spec.OCCUPATIONS, n),
            "zip_code": np.char.zfill(rng.integers(1000, 99999, n).astype(str), 5)})
        joined = rng.integers(0, int(self.span * 0.9), n)
        left = np.minimum(self.span, joined + DAY + rng.exponential(self.span / 3, n)
                          .astype(np.int64))
        return frame, {"span": self.span, "taste": taste,
                       "bias": rng.normal(0, 0.35, n).astype(np.float32),
                       "joined": joined, "left": left,
                       "session_length": 1 + rng.poisson(5, n)}


def _times_and_focus(rng, counts: np.ndarray, users: dict):
    """Per event (grouped by user): its user (chunk index), time and session genre."""
    user = np.repeat(np.arange(len(counts)), counts)
    k = np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)  # within user
    session = k // users["session_length"][user]
    # events are grouped by user, then session: a session starts where either changes
    starts = np.ones(len(user), dtype=bool)
    starts[1:] = (user[1:] != user[:-1]) | (session[1:] != session[:-1])
    session_key = np.cumsum(starts) - 1
    session_user = user[starts]
    n_sessions = len(session_user)
    joined, left = users["joined"][session_user], users["left"][session_user]
    session_start = joined + (rng.random(n_sessions) * (left - joined)).astype(np.int64)
    focus = np.argmax(users["taste"][session_user]
                      + rng.gumbel(size=(n_sessions, len(feature_spec.GENRES))), axis=1)
    elapsed = np.cumsum(rng.exponential(150.0, len(user)))  # minutes apart in a session
    first = np.flatnonzero(starts)[session_key]
    times = session_start[session_key] + (elapsed - elapsed[first]).astype(np.int64)
    times = np.minimum(times, users["span"] - 1)
    return user, times, focus[session_key]


class _Sampler:
    """Draws items for events by importance resampling: candidates from the popularity of
    the event's fortnight, half of them among the items of the session's genre, then one
    kept with weight exp(2 x affinity)."""

    def __init__(self, catalog: Catalog, rng):
        self.catalog, self.rng = catalog, rng
        genre, item = np.nonzero(catalog.genres.T)  # items grouped by genre
        self.genre_items = item
        self.genre_bounds = np.searchsorted(genre, np.arange(catalog.genres.shape[1] + 1))
        self._cumulative: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _cdfs(self, epoch: int, uniform: bool) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative weights over the catalog and over the items grouped by genre."""
        if (epoch, uniform) not in self._cumulative:  # kept: chunks come in any time order
            c = self.catalog
            start = epoch * EPOCH_DAYS * DAY  # released before the fortnight: rateable
            age_days = (start - c.released) / DAY
            weight = np.where(c.released <= start, c.popularity, 0.0)
            weight *= 1 + np.where(c.released >= 0,
                                   LAUNCH_BOOST * np.exp(-age_days / LAUNCH_DAYS), 0.0)
            if uniform:  # whole catalog only: no genre draws
                self._cumulative[epoch, uniform] = (np.cumsum(weight > 0), None)
            else:
                self._cumulative[epoch, uniform] = (np.cumsum(weight),
                                                    np.cumsum(weight[self.genre_items]))
        return self._cumulative[epoch, uniform]

    @staticmethod
    def _pick(cdf: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray):
        """Index in [lo, hi) drawn with the weights whose running sum is cdf."""
        base = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
        target = base + u * (cdf[hi - 1] - base)
        return np.clip(np.searchsorted(cdf, target, side="right"), lo, hi - 1)

    def draw(self, taste: np.ndarray, times: np.ndarray, focus: np.ndarray,
             uniform: bool = False) -> np.ndarray:
        c, rng = self.catalog, self.rng
        half = CANDIDATES if uniform else CANDIDATES // 2
        candidates = np.empty((len(times), CANDIDATES), dtype=np.int64)
        epochs = times // (EPOCH_DAYS * DAY)
        for epoch in np.unique(epochs):
            rows = np.flatnonzero(epochs == epoch)
            overall, by_genre = self._cdfs(int(epoch), uniform)
            n = len(overall)
            candidates[rows, :half] = self._pick(
                overall, np.zeros((len(rows), 1), np.int64), np.full((len(rows), 1), n),
                rng.random((len(rows), half)))
            if uniform:
                continue
            lo = self.genre_bounds[focus[rows]][:, None]
            hi = self.genre_bounds[focus[rows] + 1][:, None]
            picked = self._pick(by_genre, lo, hi, rng.random((len(rows), CANDIDATES - half)))
            candidates[rows, half:] = self.genre_items[picked]
        if uniform:  # any released item: the way out for users who rated most of a genre
            return candidates[:, 0]
        # an empty genre (or nothing of it released yet) yields items of other genres or
        # not yet released: those get no weight, as do the unreleased of the whole catalog
        affinity = np.einsum("eg,ecg->ec", taste, c.genre_norm[candidates])
        affinity += SESSION_FOCUS * c.genres[candidates, focus[:, None]]
        affinity[c.released[candidates] > times[:, None]] = -np.inf
        keep = np.argmax(2.0 * affinity + rng.gumbel(size=affinity.shape), axis=1)
        return candidates[np.arange(len(times)), keep]


def _events(sampler: _Sampler, rng, counts, users: dict, num_items: int) -> dict:
    user, times, focus = _times_and_focus(rng, counts, users)
    taste = users["taste"][user]
    items = sampler.draw(taste, times, focus)
    for attempt in range(41):  # a user rates an item once: redraw repeats, the heaviest
        repeat = pd.Series(user * num_items + items).duplicated().to_numpy()
        if not repeat.any() or attempt == 40:  # users' last ones from the whole catalog
            break
        items[repeat] = sampler.draw(taste[repeat], times[repeat], focus[repeat],
                                     uniform=attempt >= 20)
    unique = ~repeat  # what 40 redraws left repeated is dropped
    user, times, items, taste = user[unique], times[unique], items[unique], taste[unique]
    c = sampler.catalog
    score = (3.55 + 0.9 * np.einsum("eg,eg->e", taste, c.genre_norm[items])
             + c.quality[items] + users["bias"][user] + rng.normal(0, 0.7, len(items)))
    return {"user": user, "item": items, "time": times,
            "rating": np.clip(np.round(score), 1, 5).astype(np.int64)}


def land(raw_dir: str | Path, num_users: int, num_items: int, num_events: int,
         days: int = 365, seed: int = 42, progress=print) -> dict:
    """Writes the three raw tables under raw_dir (replacing what landed) and returns
    what was written: counts, time range and the skew measured on it."""
    if min(num_users, num_items, num_events, days) <= 0:
        raise ValueError("users, items, events and days must be positive")
    progress = progress or (lambda _message: None)
    rng = np.random.default_rng(seed)
    span = days * DAY
    start = time.monotonic()
    catalog = _catalog(rng, num_items, span)
    counts = _event_counts(rng, num_users, num_items, num_events)
    item_counts = np.zeros(num_items, dtype=np.int64)
    stats = {"events": 0, "sessions_events_within_1h": 0, "new_item_events": 0}
    users = _Users(rng, span)
    sampler = _Sampler(catalog, rng)
    bounds = np.searchsorted(np.cumsum(counts), np.arange(CHUNK_EVENTS, num_events,
                                                          CHUNK_EVENTS), side="right")
    bounds = [0, *sorted(set(int(b) for b in bounds) - {0, num_users}), num_users]
    with sources.landing(raw_dir) as new:
        _items_frame(catalog, rng).to_csv(new / "items.csv", index=False)
        for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
            frame, chunk = users.chunk(lo, hi)
            frame.to_csv(new / "users.csv", index=False, mode="a", header=i == 0)
            events = _events(sampler, rng, counts[lo:hi], chunk, num_items)
            pd.DataFrame({"user_id": events["user"] + lo + 1, "item_id": events["item"] + 1,
                          "rating": events["rating"],
                          "timestamp": START + events["time"]}).to_csv(
                new / "ratings.csv", index=False, mode="a", header=i == 0)
            np.add.at(item_counts, events["item"], 1)
            stats["events"] += len(events["item"])
            stats["new_item_events"] += int((catalog.released[events["item"]] >= 0).sum())
            same_user = events["user"][1:] == events["user"][:-1]
            stats["sessions_events_within_1h"] += int(
                (same_user & (np.abs(np.diff(events["time"])) < 3600)).sum())
            if hi == num_users or hi * 20 // num_users > lo * 20 // num_users:  # 5% steps
                progress(f"data: {stats['events']:,} / {num_events:,} events, "
                         f"{hi:,} / {num_users:,} users ({time.monotonic() - start:.0f}s)")
    top = np.sort(item_counts)[::-1]
    seconds = time.monotonic() - start
    return {"users": num_users, "items": num_items, "events": stats["events"],
            "days": days, "seed": seed, "seconds": round(seconds, 1),
            "events_per_second": round(stats["events"] / seconds),
            "users_with_events": int((counts > 0).sum()),
            "items_rated": int((item_counts > 0).sum()),
            "top_1pct_items_event_share": round(
                float(top[:max(1, num_items // 100)].sum() / stats["events"]), 3),
            "new_item_event_share": round(stats["new_item_events"] / stats["events"], 3),
            "next_event_within_1h_share": round(
                stats["sessions_events_within_1h"] / stats["events"], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var", help="lands in <workdir>/data/raw")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--days", type=int, default=365, help="time span of the events")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        written = land(Path(args.workdir) / "data" / "raw", args.users, args.items,
                       args.events, args.days, args.seed)
    except ValueError as err:
        parser.error(str(err))
    print(" ".join(f"{key}={value}" for key, value in written.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
