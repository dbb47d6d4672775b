"""Feature tables with event timestamps, computed from the three raw tables.

Each table is what one feature view reads from the offline store. Values are stamped
with the moment they became true, so a point-in-time join never sees the future:
  user_profile     one row per user, stamped before any rating (profiles are static)
  item_profile     one row per item, likewise
  user_activity    one row per rating: the user's count, mean and recent items so far,
                   stamped one second after it (a label never sees itself)
  item_popularity  one row per item and day with ratings: counts and mean so far and
                   over the trailing window
  user_rated_items one row per user: every item rated, as of the last rating (serving
                   only: the candidate service excludes them; training never reads it)
"""
from __future__ import annotations

import pandas as pd

from pipelines.data.dataset import Dataset

RECENT_ITEMS = 10
POPULARITY_WINDOW_DAYS = 30
TIMESTAMP = "event_timestamp"
EPOCH = pd.Timestamp(0, tz="UTC").to_pydatetime()
# Tables stamped at a fixed profile time, so reloaded in full on every run.
SNAPSHOTS = ("user_profile", "item_profile")


def _stamp(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds, unit="s", utc=True)


def profile_time(data: Dataset) -> pd.Timestamp:
    """Profiles hold from before the first rating."""
    return _stamp(pd.Series([data.ratings.timestamp.min() - 86_400])).iloc[0]


def user_profile(data: Dataset) -> pd.DataFrame:
    users = data.users
    return pd.DataFrame({
        "user_id": users.user_id.astype(str), "age": users.age.astype("int64"),
        "gender": users.gender, "occupation": users.occupation,
        "zip_region": users.zip_code.astype(str).str[:1],
        TIMESTAMP: profile_time(data)})


def item_profile(data: Dataset) -> pd.DataFrame:
    items = data.items
    return pd.DataFrame({
        "item_id": items.item_id.astype(str), "title": items.title, "genres": items.genres,
        "release_year": items.release_year.astype("int64"), TIMESTAMP: profile_time(data)})


def user_activity(data: Dataset) -> pd.DataFrame:
    r = data.ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    grouped = r.groupby("user_id", sort=False)
    count = grouped.cumcount() + 1
    mean = grouped.rating.cumsum() / count
    recent = grouped.item_id.transform(
        lambda items: [list(items.iloc[max(0, i + 1 - RECENT_ITEMS):i + 1])[::-1]
                       for i in range(len(items))])
    table = pd.DataFrame({
        "user_id": r.user_id.astype(str), "user_rating_count": count.astype("int64"),
        "user_mean_rating": mean.astype("float32"), "recent_items": recent,
        TIMESTAMP: _stamp(r.timestamp + 1)})
    # several ratings in one second: the row that includes them all holds
    return table.drop_duplicates(["user_id", TIMESTAMP], keep="last").reset_index(drop=True)


def user_rated_items(data: Dataset) -> pd.DataFrame:
    grouped = data.ratings.groupby("user_id")
    return pd.DataFrame({
        "rated_items": grouped.item_id.agg(lambda items: sorted(set(items))),
        TIMESTAMP: _stamp(grouped.timestamp.max() + 1)}).reset_index()


def popular_items(data: Dataset, n: int = 1000) -> list[list]:
    """[item_id, score] of the most rated items, score 1.0 for the top one."""
    counts = data.ratings.item_id.value_counts().head(n)
    return [[str(item), round(count / counts.iloc[0], 6)] for item, count in counts.items()]


def item_popularity(data: Dataset) -> pd.DataFrame:
    r = data.ratings.assign(day=data.ratings.timestamp // 86_400)
    daily = r.groupby(["item_id", "day"]).rating.agg(["count", "sum"]).reset_index()
    daily = daily.sort_values(["item_id", "day"])
    grouped = daily.groupby("item_id", sort=False)
    total_count = grouped["count"].cumsum()
    total_sum = grouped["sum"].cumsum()
    window = (daily.set_index(pd.to_datetime(daily.day, unit="D"))
              .groupby("item_id")["count"]
              .rolling(f"{POPULARITY_WINDOW_DAYS}D").sum()
              .reset_index(drop=True))
    end_of_day = _stamp((daily.day + 1) * 86_400 - 1)
    return pd.DataFrame({
        "item_id": daily.item_id.astype(str).to_numpy(),
        "item_rating_count": total_count.astype("int64").to_numpy(),
        "item_mean_rating": (total_sum / total_count).astype("float32").to_numpy(),
        f"item_rating_count_{POPULARITY_WINDOW_DAYS}d": window.astype("int64").to_numpy(),
        TIMESTAMP: end_of_day.to_numpy()})


def all_tables(data: Dataset) -> dict[str, pd.DataFrame]:
    return {"user_profile": user_profile(data), "item_profile": item_profile(data),
            "user_activity": user_activity(data), "item_popularity": item_popularity(data),
            "user_rated_items": user_rated_items(data)}
