"""Feature rows with event timestamps, as plain functions of raw rows.

The batch job (`batch_job.py`, Apache Beam) folds them over each entity's history; the
stream worker (`stream.py`) applies the same update to one new event, so batch and
streaming compute a feature the same way. Each value is stamped with the moment it
became true, so a point-in-time join never sees the future:
  user_profile     one row per user, holding from the epoch (profiles are static)
  item_profile     one row per item, likewise, with its title's words
  user_activity    after each rating: the user's count, mean, genre affinity (share of
                   their ratings in each of the spec's genres) and recent items so far,
                   stamped one second after it (a label never sees itself)
  item_popularity  after each rating: the item's count and mean so far, its count
                   over the trailing window, its ratings per day over the last
                   libs.trends.DAYS days (windows at any later moment come from it),
                   its first and latest rating times, stamped likewise
  user_rated_items every item the user rated, as of the last rating (serving only: the
                   candidate service excludes them and passes them to the retrieval model
                   as its history feature, `rated_items`; training derives that feature
                   from its train split instead, pipelines/data/prepare.py)
Pure Python: both environments import it.
"""
from __future__ import annotations

import collections
import re
from datetime import datetime, timezone

from libs import feature_spec, trends
from libs.feature_spec import age_group  # defined with the spec's boundaries

POPULARITY_WINDOW_DAYS = 30
TIMESTAMP = "event_timestamp"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Tables stamped at the epoch, so reloaded in full on every run.
SNAPSHOTS = ("user_profile", "item_profile")
NAMES = ("user_profile", "item_profile", "user_activity", "item_popularity",
         "user_rated_items")
WINDOW_COUNT = f"item_rating_count_{POPULARITY_WINDOW_DAYS}d"
GENRE_INDEX = {genre: i for i, genre in enumerate(feature_spec.GENRES)}


class RowError(ValueError):
    """A raw row is corrupt or outside the schema: which field, and why."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


def stamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _int(fields: dict, name: str, low: int, high: int) -> int:
    try:
        value = int(fields[name])
    except (TypeError, ValueError):
        raise RowError(name, f"{name} is not an integer: {fields[name]!r}") from None
    if not low <= value <= high:
        raise RowError(name, f"{name} {value} outside {low}..{high}")
    return value


def _id(fields: dict, name: str) -> str:
    value = (fields[name] or "").strip()
    if not value:
        raise RowError(name, f"{name} is empty")
    return value


def _in_vocabulary(fields: dict, name: str, vocabulary) -> str:
    value = fields[name]
    if value not in vocabulary:
        raise RowError(name, f"{name} {value!r} is not one of the spec's values")
    return value


def parse_user(fields: dict) -> dict:
    return {"user_id": _id(fields, "user_id"), "age": _int(fields, "age", 1, 120),
            "gender": _in_vocabulary(fields, "gender", feature_spec.GENDERS),
            "occupation": _in_vocabulary(fields, "occupation", feature_spec.OCCUPATIONS),
            "zip_code": fields["zip_code"] or ""}


def parse_item(fields: dict) -> dict:
    genres = fields["genres"] or ""
    unknown = set(genres.split(feature_spec.GENRE_SEPARATOR)) - set(feature_spec.GENRES)
    if unknown:
        raise RowError("genres", f"genres {sorted(unknown)} are not in the spec")
    return {"item_id": _id(fields, "item_id"), "title": fields["title"] or "",
            "release_year": _int(fields, "release_year", 1800, 2100), "genres": genres}


def parse_rating(fields: dict) -> dict:
    try:
        rating = float(fields["rating"])
    except (TypeError, ValueError):
        raise RowError("rating", f"rating is not a number: {fields['rating']!r}") from None
    if not 1.0 <= rating <= 5.0:
        raise RowError("rating", f"rating {rating} outside 1..5")
    return {"user_id": _id(fields, "user_id"), "item_id": _id(fields, "item_id"),
            "rating": rating, "timestamp": _int(fields, "timestamp", 0, 2**40)}


def user_profile_row(user: dict) -> dict:
    return {"user_id": user["user_id"], "age": user["age"], "age_group": age_group(user["age"]),
            "gender": user["gender"], "occupation": user["occupation"],
            "zip_region": user["zip_code"][:1], TIMESTAMP: EPOCH}


def title_tokens(title: str) -> list[str]:
    """Lower-case words of a title, without the "(1995)" year MovieLens appends."""
    words = re.findall(r"[a-z0-9']+", re.sub(r"\(\d{4}\)\s*$", "", title.lower()))
    return [w for w in words if w not in ("the", "a", "an")]


def item_profile_row(item: dict) -> dict:
    return {"item_id": item["item_id"], "title": item["title"],
            "title_tokens": title_tokens(item["title"]), "genres": item["genres"],
            "release_year": item["release_year"], TIMESTAMP: EPOCH}


def rating_row(rating: dict) -> dict:
    """The label event as the training set's entity row reads it."""
    return {"user_id": rating["user_id"], "item_id": rating["item_id"],
            "rating": rating["rating"], TIMESTAMP: stamp(rating["timestamp"])}


def _in_order(ratings) -> list[dict]:
    return sorted(ratings, key=lambda r: (r["timestamp"], r["item_id"]))


def next_user_activity(previous: dict | None, rating: dict) -> dict:
    """`rating` carries its item's `genres`."""
    count = (previous["user_rating_count"] if previous else 0) + 1
    total = (previous["user_mean_rating"] * (count - 1) if previous else 0.0) + rating["rating"]
    recent = [rating["item_id"]] + list(previous["recent_items"] if previous else [])
    # the shares are stored (float32); the counts behind them are whole numbers
    genre_counts = [round(share * (count - 1)) for share in previous["genre_affinity"]] \
        if previous else [0] * len(feature_spec.GENRES)
    for genre in set(rating["genres"].split(feature_spec.GENRE_SEPARATOR)):
        genre_counts[GENRE_INDEX[genre]] += 1
    return {"user_id": rating["user_id"], "user_rating_count": count,
            "user_mean_rating": total / count,
            "genre_affinity": [n / count for n in genre_counts],
            "recent_items": recent[:feature_spec.RECENT_ITEMS],
            TIMESTAMP: stamp(rating["timestamp"] + 1)}


def _last_per_stamp(rows: list[dict]) -> list[dict]:
    """Several ratings in one second: the row that includes them all holds."""
    return [row for row, after in zip(rows, rows[1:] + [None])
            if after is None or after[TIMESTAMP] != row[TIMESTAMP]]


def user_activity_rows(ratings) -> list[dict]:
    """One entity's ratings -> its activity after each of them."""
    rows, previous = [], None
    for rating in _in_order(ratings):
        previous = next_user_activity(previous, rating)
        rows.append(previous)
    return _last_per_stamp(rows)


def next_item_popularity(previous: dict | None, rating: dict) -> dict:
    """The stream's update: the window count only grows until the next batch run, which
    recomputes it exactly (events leaving the window are not tracked online); the daily
    counts shift with the days, so they stay exact (a late event counts on the latest
    rating's day)."""
    count = (previous["item_rating_count"] if previous else 0) + 1
    total = (previous["item_mean_rating"] * (count - 1) if previous else 0.0) + rating["rating"]
    seconds = rating["timestamp"]
    previous_row = previous or {}  # a row written before these fields existed lacks them
    last = previous_row.get("item_last_rated")
    return {"item_id": rating["item_id"], "item_rating_count": count,
            "item_mean_rating": total / count,
            WINDOW_COUNT: (previous[WINDOW_COUNT] if previous else 0) + 1,
            "item_daily_counts": trends.next_daily_counts(
                previous_row.get("item_daily_counts"), last, seconds),
            "item_first_rated": previous_row.get("item_first_rated") or seconds,
            "item_last_rated": max(seconds, last or seconds),
            TIMESTAMP: stamp(max(seconds, last or seconds) + 1)}


def item_popularity_rows(ratings) -> list[dict]:
    rows, previous, window = [], None, collections.deque()
    for rating in _in_order(ratings):
        previous = next_item_popularity(previous, rating)
        window.append(rating["timestamp"])
        while window[0] <= rating["timestamp"] - POPULARITY_WINDOW_DAYS * 86_400:
            window.popleft()
        previous[WINDOW_COUNT] = len(window)
        rows.append(previous)
    return _last_per_stamp(rows)


def user_rated_items_row(ratings) -> dict:
    ratings = list(ratings)
    return {"user_id": ratings[0]["user_id"],
            "rated_items": sorted({r["item_id"] for r in ratings}),
            TIMESTAMP: stamp(max(r["timestamp"] for r in ratings) + 1)}


def next_user_rated_items(previous: dict | None, rating: dict) -> dict:
    items = set(previous["rated_items"] if previous else ()) | {rating["item_id"]}
    return {"user_id": rating["user_id"], "rated_items": sorted(items),
            TIMESTAMP: stamp(rating["timestamp"] + 1)}
