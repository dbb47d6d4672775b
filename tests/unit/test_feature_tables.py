"""Feature rows: stamped after what they count, and the stream's one-event update agrees
with the batch job's fold over history."""
import numpy as np
import pytest

from pipelines.data import synthetic
from pipelines.features import tables

DATA = synthetic.generate(50, 80, 2000, seed=3)
RATINGS = [{"user_id": r.user_id, "item_id": r.item_id, "rating": float(r.rating),
            "timestamp": int(r.timestamp), "genres": r.genres}
           for r in DATA.ratings.merge(DATA.items, on="item_id").itertuples()]


def of_user(user_id):
    return [r for r in RATINGS if r["user_id"] == user_id]


def test_activity_is_stamped_after_the_ratings_it_counts():
    for user_id in DATA.users.user_id[:20]:
        ratings = of_user(user_id)
        for row in tables.user_activity_rows(ratings):
            counted = [r for r in ratings if r["timestamp"] < row["event_timestamp"].timestamp()]
            assert row["user_rating_count"] == len(counted)
            assert row["user_mean_rating"] == pytest.approx(
                sum(r["rating"] for r in counted) / len(counted))
            comedy = tables.GENRE_INDEX["Comedy"]
            assert row["genre_affinity"][comedy] == pytest.approx(
                sum("Comedy" in r["genres"].split("|") for r in counted) / len(counted))


def test_ratings_in_the_same_second_give_one_row_that_includes_them_all():
    base = {"user_id": "u", "rating": 4.0, "timestamp": 100, "genres": "Drama"}
    rows = tables.user_activity_rows([{**base, "item_id": "a"}, {**base, "item_id": "b"},
                                      {**base, "item_id": "c", "timestamp": 200}])
    assert [r["user_rating_count"] for r in rows] == [2, 3]
    assert rows[-1]["recent_items"] == ["c", "b", "a"]


def test_one_event_at_a_time_equals_the_batch_fold():
    user_id = DATA.ratings.user_id.value_counts().index[0]
    ratings = sorted(of_user(user_id), key=lambda r: (r["timestamp"], r["item_id"]))
    activity = rated = None
    for rating in ratings:
        activity = tables.next_user_activity(activity, rating)
        rated = tables.next_user_rated_items(rated, rating)
    assert activity == tables.user_activity_rows(ratings)[-1]
    assert rated == tables.user_rated_items_row(ratings)


def test_popularity_window_counts_only_the_trailing_days():
    day = 86_400
    ratings = [{"user_id": "u", "item_id": "i", "rating": 5.0, "timestamp": t * day,
                "genres": "Drama"}
               for t in (0, 10, 20, 45)]
    rows = tables.item_popularity_rows(ratings)
    assert [r["item_rating_count"] for r in rows] == [1, 2, 3, 4]
    assert [r[tables.WINDOW_COUNT] for r in rows] == [1, 2, 3, 2]  # day 0 and 10 aged out


def test_daily_counts_give_every_window_at_any_later_moment():
    from libs import trends
    day = 86_400
    rng = np.random.default_rng(1)
    times = sorted(int(t) for t in rng.integers(0, 60 * day, 300))
    ratings = [{"user_id": "u", "item_id": "i", "rating": 3.0, "timestamp": t,
                "genres": "Drama"} for t in times]
    rows = tables.item_popularity_rows(ratings)
    assert rows[-1]["item_first_rated"] == times[0]
    assert rows[-1]["item_last_rated"] == times[-1]
    for at in (times[-1], times[-1] + 3 * day, times[-1] + 40 * day, 61 * day + 5):
        row = [r for r in rows if r["item_last_rated"] <= at][-1]
        expected = [sum(1 for t in times if trends.day(at) - w < trends.day(t) <= trends.day(at))
                    for w in trends.WINDOWS]
        assert trends.window_counts(row["item_daily_counts"], row["item_last_rated"],
                                    at) == expected


def test_profile_rows_carry_age_groups_and_title_words():
    assert [tables.age_group(a) for a in (7, 18, 24, 25, 55, 56, 90)] == [
        "<18", "18-24", "18-24", "25-34", "50-55", "56+", "56+"]
    assert tables.title_tokens("American President, The (1995)") == [
        "american", "president"]


@pytest.mark.parametrize("parser,fields,field", [
    (tables.parse_rating, {"user_id": "1", "item_id": "2", "rating": "6", "timestamp": "9"},
     "rating"),
    (tables.parse_rating, {"user_id": "1", "item_id": "2", "rating": "x", "timestamp": "9"},
     "rating"),
    (tables.parse_rating, {"user_id": "", "item_id": "2", "rating": "3", "timestamp": "9"},
     "user_id"),
    (tables.parse_rating, {"user_id": "1", "item_id": "2", "rating": "3", "timestamp": "-1"},
     "timestamp"),
    (tables.parse_user, {"user_id": "1", "age": "30", "gender": "F",
                         "occupation": "astronaut", "zip_code": "1"}, "occupation"),
    (tables.parse_item, {"item_id": "1", "title": "t", "release_year": "1995",
                         "genres": "Comedy|Space Opera"}, "genres"),
])
def test_rows_outside_the_spec_are_refused_naming_the_field(parser, fields, field):
    with pytest.raises(tables.RowError) as caught:
        parser(fields)
    assert caught.value.field == field
