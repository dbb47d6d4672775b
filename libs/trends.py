"""An item's recent popularity as of any moment, from one row of the feature store.

The `item_popularity` row written after an item's latest rating holds
`item_daily_counts`: its ratings per UTC day over the `DAYS` days ending with that
rating's day (index 0 is that day). At any later moment, `window_counts` sums the days
still inside each window, so the ranking service (at request time), the trending
candidate source and the training examples (at each query time) read the same numbers
from the same row. Pure Python: both environments import it.
"""
from __future__ import annotations

DAY = 86_400
DAYS = 30
WINDOWS = (1, 3, 7, 14, 30)  # days; window w = the w calendar days ending today


def day(seconds: int) -> int:
    return int(seconds) // DAY


def next_daily_counts(previous: list[int] | None, previous_seconds: int | None,
                      seconds: int) -> list[int]:
    """The histogram after one more rating at `seconds`, given the one stamped at
    `previous_seconds` (None for the item's first rating)."""
    if previous is None or previous_seconds is None:
        counts = [0] * DAYS
    else:
        shift = max(0, day(seconds) - day(previous_seconds))
        counts = ([0] * min(shift, DAYS) + list(previous))[:DAYS]
    counts[0] += 1
    return counts


def window_counts(daily: list[int] | None, row_seconds: int, at: int,
                  windows: tuple[int, ...] = WINDOWS) -> list[int]:
    """Ratings in each window ending at `at`, from a histogram stamped at `row_seconds`
    (at or before `at`); an item without a row has none."""
    if not daily:
        return [0] * len(windows)
    lag = max(0, day(at) - day(row_seconds))
    return [int(sum(daily[:max(0, w - lag)])) for w in windows]


TRENDING_DAYS = 14  # the popularity fallback and the trending source rank by this window


def trending(recent: dict[str, int], total: dict[str, int]) -> list[tuple[str, float]]:
    """Items by ratings in the trending window, ties (and items outside it) by all-time
    ratings; scores scaled so the first is 1. What most users rate next on time-ordered
    data (the replay's baselines: pipelines/replay)."""
    top_total = max(total.values(), default=0) + 1
    scores = {item: recent.get(item, 0) + count / top_total for item, count in total.items()}
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[0][1] if ranked and ranked[0][1] > 0 else 1.0
    return [(item, score / top) for item, score in ranked]


# An item's trend row: its ratings in each of WINDOWS, all time, and its first rating's time
# (what the candidate sources' blend reads: libs/candidate_sources.py).
TREND_COLUMNS = (*(f"count_{w}d" for w in WINDOWS), "count_all", "first_rated")


def trend_row(daily: list[int] | None, row_seconds: int, at: int, count: int,
              first_seconds: int) -> list[int]:
    """An item's trend row as of `at` from its item_popularity row."""
    return [*window_counts(daily, row_seconds, at), int(count), int(first_seconds)]


def trend_table(events, at: int) -> dict[str, list[int]]:
    """Each item's trend row as of `at` from its (item, seconds) events before `at`: the
    same numbers trend_row reads from the feature store."""
    today, table = day(at), {}
    for item, seconds in events:
        row = table.get(item)
        if row is None:
            row = table[item] = [0] * len(WINDOWS) + [0, int(seconds)]
        age = today - day(seconds)
        for k, w in enumerate(WINDOWS):
            row[k] += age < w
        row[-2] += 1
        row[-1] = min(row[-1], int(seconds))
    return table
