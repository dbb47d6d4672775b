"""Item trends: windows read from one feature-store row, and the trending order the
popularity fallback serves."""
from __future__ import annotations

from libs import trends

DAY = trends.DAY


def test_histogram_shifts_with_the_days_and_drops_what_leaves_it():
    counts = trends.next_daily_counts(None, None, 10 * DAY)
    counts = trends.next_daily_counts(counts, 10 * DAY, 10 * DAY + 5)
    assert counts[:2] == [2, 0]
    counts = trends.next_daily_counts(counts, 10 * DAY + 5, 13 * DAY)
    assert counts[:4] == [1, 0, 0, 2] and len(counts) == trends.DAYS
    later = trends.next_daily_counts(counts, 13 * DAY, (13 + trends.DAYS) * DAY)
    assert sum(later) == 1  # everything older than the histogram fell out


def test_windows_at_a_later_moment_skip_the_days_since_the_row():
    daily = [1, 2, 3] + [0] * (trends.DAYS - 3)  # days 20, 19, 18
    assert trends.window_counts(daily, 20 * DAY, 20 * DAY, (1, 3, 7)) == [1, 6, 6]
    assert trends.window_counts(daily, 20 * DAY, 21 * DAY, (1, 3, 7)) == [0, 3, 6]
    assert trends.window_counts(daily, 20 * DAY, 60 * DAY, (1, 30)) == [0, 0]
    assert trends.window_counts(None, 0, 5, (1, 7)) == [0, 0]


def test_trending_ranks_by_the_window_then_by_all_time():
    ranked = trends.trending({"new": 5, "old": 0, "mid": 5},
                             {"new": 6, "old": 500, "mid": 40, "never": 1})
    assert [item for item, _ in ranked] == ["mid", "new", "old", "never"]
    assert ranked[0][1] == 1.0 and all(s > 0 for _, s in ranked)
