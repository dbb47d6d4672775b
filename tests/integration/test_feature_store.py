"""Feast as the feature store: batch ingestion into SQLite and a real Redis, online reads,
point-in-time training sets without leakage, incremental materialization."""
from __future__ import annotations

import asyncio
import time

import pandas as pd
import pytest
import redis

from libs import config as config_lib
from pipelines.data import synthetic
from pipelines.data.dataset import Dataset
from libs.feature_store import default_user, open_feast
from pipelines.features import ingest, tables
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from tests.conftest import ROOT, start_redis

DATA = synthetic.generate(200, 300, 6000, seed=11)


def online_config(kind: str, redis_address: str | None) -> FeatureStoreConfig:
    if kind == "redis":
        return FeatureStoreConfig(online_store=OnlineStore(type="redis",
                                                           connection_string=redis_address))
    return FeatureStoreConfig()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    address = request.getfixturevalue("redis_server") if request.param == "redis" else None
    config = online_config(request.param, address)
    if request.param == "redis":
        config.project = f"t{abs(hash(str(tmp_path))) % 10**8}"  # one Redis, many tests
    return ingest.ingest(DATA, config, tmp_path, progress=None)


def test_online_read_returns_each_entitys_latest_values(store):
    user = DATA.users.iloc[0]
    rated = DATA.ratings[DATA.ratings.user_id == user.user_id].sort_values("timestamp")
    item = DATA.items.iloc[0]
    views = ("user_profile", "item_profile", "user_activity")
    features = [f"{view}:{f.name}" for view in views
                for f in store.get_feature_view(view).features]
    row = store.get_online_features(
        features=features,
        entity_rows=[{"user_id": user.user_id, "item_id": item.item_id}]).to_dict()
    assert row["age"] == [user.age] and row["occupation"] == [user.occupation]
    assert row["genres"] == [item.genres] and row["release_year"] == [item.release_year]
    assert row["user_rating_count"] == [len(rated)]
    assert row["user_mean_rating"][0] == pytest.approx(rated.rating.mean(), rel=1e-5)
    assert row["recent_items"][0][0] == rated.item_id.iloc[-1]


def test_unknown_entities_read_as_missing(store):
    row = store.get_online_features(
        features=["user_profile:age", "item_profile:genres"],
        entity_rows=[{"user_id": "nobody", "item_id": "nothing"}]).to_dict()
    assert row["age"] == [None] and row["genres"] == [None]


def test_training_rows_never_see_a_rating_from_their_own_moment_or_later(tmp_path):
    store = ingest.ingest(DATA, FeatureStoreConfig(), tmp_path, progress=None)
    labels = DATA.ratings.sample(300, random_state=1)
    entity_df = pd.DataFrame({"user_id": labels.user_id.to_numpy(),
                              "event_timestamp": pd.to_datetime(labels.timestamp.to_numpy(),
                                                                unit="s", utc=True)})
    joined = store.get_historical_features(
        entity_df=entity_df, features=["user_activity:user_rating_count"]).to_df()
    for row in joined.itertuples():
        seconds = row.event_timestamp.timestamp()
        before = ((DATA.ratings.user_id == row.user_id)
                  & (DATA.ratings.timestamp < seconds)).sum()
        assert (0 if pd.isna(row.user_rating_count) else row.user_rating_count) == before


def test_a_later_run_brings_new_ratings_and_new_users_online(tmp_path):
    cut = DATA.ratings.timestamp.quantile(0.5)
    # the first run knows neither the later ratings nor the last user
    early = Dataset(DATA.users.iloc[:-1], DATA.items,
                    DATA.ratings[(DATA.ratings.timestamp <= cut)
                                 & (DATA.ratings.user_id != DATA.users.user_id.iloc[-1])],
                    "early half")
    store = ingest.ingest(early, FeatureStoreConfig(), tmp_path, progress=None)
    user = DATA.ratings[DATA.ratings.timestamp > cut].user_id.iloc[0]
    count = lambda s: s.get_online_features(  # noqa: E731
        features=["user_activity:user_rating_count"],
        entity_rows=[{"user_id": user}]).to_dict()["user_rating_count"][0] or 0
    before = count(store)
    newcomer = DATA.users.user_id.iloc[-1]
    store = ingest.ingest(DATA, FeatureStoreConfig(), tmp_path, progress=None)
    assert count(store) == (DATA.ratings.user_id == user).sum() > before
    profile = store.get_online_features(features=["user_profile:age"],
                                        entity_rows=[{"user_id": newcomer}]).to_dict()
    assert profile["age"] == [DATA.users.age.iloc[-1]]


def test_activity_tables_stamp_each_value_after_the_ratings_it_counts():
    activity = tables.user_activity(DATA)
    first = activity.sort_values(tables.TIMESTAMP).groupby("user_id").first()
    earliest = DATA.ratings.groupby("user_id").timestamp.min()
    stamps = first[tables.TIMESTAMP].map(lambda t: t.timestamp())
    assert (stamps > earliest.loc[first.index]).all()


def test_local_and_production_configs_pass_the_schema_and_mistakes_are_named(tmp_path):
    local = config_lib.load(FeatureStoreConfig, ROOT / "pipelines/features/local.yaml")
    production = config_lib.load(FeatureStoreConfig,
                                 ROOT / "pipelines/features/production.yaml")
    assert local.online_store.type == "sqlite" and production.online_store.type == "redis"
    assert production.offline_store.type == "bigquery" and "://" in production.registry
    bad = tmp_path / "bad.yaml"
    bad.write_text("online_store: {type: memcached}\n")
    with pytest.raises(config_lib.ConfigError, match="online_store.type' must be one of"):
        config_lib.load(FeatureStoreConfig, bad)
    bad.write_text("online_store: {type: redis, conection_string: x}\n")
    with pytest.raises(config_lib.ConfigError, match="unknown key.*conection_string"):
        config_lib.load(FeatureStoreConfig, bad)


def test_redis_stopped_mid_run_fails_fast_with_a_connection_error(tmp_path):
    address, process = start_redis()
    try:
        config = online_config("redis", address)
        store = ingest.ingest(DATA, config, tmp_path, progress=None)
        rows = [{"user_id": DATA.users.user_id.iloc[0]}]
        assert store.get_online_features(features=["user_profile:age"],
                                         entity_rows=rows).to_dict()["age"][0] is not None
    finally:
        process.terminate()
        process.wait(10)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        store.get_online_features(features=["user_profile:age"], entity_rows=rows)
    assert time.monotonic() - started < 0.5  # the services' fallback can count on it


def test_feature_client_reads_typed_rows_and_defaults_missing_ones(tmp_path):
    ingest.ingest(DATA, FeatureStoreConfig(), tmp_path, progress=None)
    client = open_feast(ROOT / "pipelines/features/local.yaml", tmp_path / "features")
    user, item = DATA.users.iloc[3], DATA.items.iloc[5]
    query = asyncio.run(client.query_features(user.user_id))
    assert query.user == {"user_id": user.user_id, "age": user.age, "gender": user.gender,
                          "occupation": user.occupation}
    assert query.rated_items == set(DATA.ratings[DATA.ratings.user_id == user.user_id]
                                    .item_id)
    assert asyncio.run(client.query_features("stranger")).user is None
    ranking = asyncio.run(client.ranking_features(user.user_id, [item.item_id, "ghost"]))
    assert ranking.items["genres"] == [item.genres, "unknown"]
    assert ranking.items["release_year"] == [item.release_year, 1990]
    assert ranking.items["item_id"] == [item.item_id, "ghost"] and not ranking.degraded


def test_cached_item_features_survive_a_redis_outage(tmp_path):
    address, process = start_redis()
    try:
        config = online_config("redis", address)
        ingest.ingest(DATA, config, tmp_path, progress=None)
        config_file = tmp_path / "redis.yaml"
        config_file.write_text(f"online_store: {{type: redis, connection_string: "
                               f"'{address}'}}\n")
        client = open_feast(config_file, tmp_path / "features", item_cache_seconds=60)
        user, items = DATA.users.user_id.iloc[0], list(DATA.items.item_id.iloc[:5])
        first = asyncio.run(client.ranking_features(user, items))
        assert not first.degraded
    finally:
        process.terminate()
        process.wait(10)
    second = asyncio.run(client.ranking_features(user, items + ["never-seen"]))
    assert second.degraded and second.user == default_user(user)
    assert second.items["genres"][:5] == first.items["genres"]  # from the cache
    assert second.items["genres"][5] == "unknown"
