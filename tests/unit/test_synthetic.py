import numpy as np
import pandas as pd
import pytest

from libs import feature_spec
from pipelines.data import movielens, synthetic


def test_same_seed_same_data_other_seed_other_data():
    a = synthetic.generate(200, 300, 5000, seed=1)
    b = synthetic.generate(200, 300, 5000, seed=1)
    c = synthetic.generate(200, 300, 5000, seed=2)
    pd.testing.assert_frame_equal(a.ratings, b.ratings)
    assert not a.ratings.equals(c.ratings)


def test_tables_shapes_and_types_match_movielens():
    data = synthetic.generate(300, 500, 10_000)
    assert len(data.ratings) == 10_000
    assert not data.ratings.duplicated(["user_id", "item_id"]).any()
    assert set(data.users.gender) <= set(feature_spec.GENDERS)
    assert set(data.users.occupation) <= set(feature_spec.OCCUPATIONS)
    genres = set("|".join(data.items.genres).split("|"))
    assert genres <= set(feature_spec.GENRES)


def test_popularity_is_long_tailed():
    counts = synthetic.generate(1000, 1000, 50_000).ratings.item_id.value_counts()
    top_decile_share = counts.iloc[:100].sum() / counts.sum()
    assert top_decile_share > 0.3  # uniform popularity would give 0.1


def test_taste_depends_on_demographics_so_a_model_can_learn_it():
    data = synthetic.generate(2000, 800, 80_000, seed=3)
    rows = data.ratings.merge(data.users, on="user_id").merge(data.items, on="item_id")
    rows["segment"] = rows.gender + pd.cut(rows.age, [0, *feature_spec.AGE_BOUNDARIES, 200]
                                           ).astype(str)
    rows["genre"] = rows.genres.str.split("|").str[0]
    train, test = rows.iloc[::2], rows.iloc[1::2]
    means = train.groupby(["segment", "genre"]).rating.mean().rename("pred")
    joined = test.join(means, on=["segment", "genre"]).fillna({"pred": train.rating.mean()})
    rmse_segment = np.sqrt(((joined.rating - joined.pred) ** 2).mean())
    rmse_global = np.sqrt(((test.rating - train.rating.mean()) ** 2).mean())
    assert rmse_segment < rmse_global - 0.03


def test_round_trip_through_movielens_format(tmp_path):
    data = synthetic.generate(100, 150, 2000)
    loaded = movielens.load(synthetic.write_movielens_format(data, tmp_path))
    assert len(loaded.ratings) == 2000
    assert list(loaded.items.genres) == list(data.items.genres)


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="more than half"):
        synthetic.generate(10, 10, 1000)
