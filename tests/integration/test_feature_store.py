"""Feast as the feature store: the Beam job's tables ingested into SQLite and a real
Redis, online reads, point-in-time training sets without leakage or lost labels,
incremental materialization."""
from __future__ import annotations

import asyncio
import json
import shutil
import time

import pandas as pd
import pytest
import redis

from libs import config as config_lib
from libs import feature_spec
from pipelines.data import synthetic
from pipelines.data.dataset import Dataset
from libs.feature_store import default_user, open_feast
from pipelines.features import ingest, training_set
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from tests.conftest import ROOT, start_redis

DATA = synthetic.generate(200, 300, 6000, seed=11)


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory):
    """The Beam job's tables for DATA, built once for the module."""
    workdir = tmp_path_factory.mktemp("tables")
    ingest.run_batch_job(workdir, DATA)
    return workdir / "features" / "tables"


def ingested(config, workdir, tables_dir):
    return ingest.ingest(config, workdir, tables_dir=tables_dir, progress=None)


def online_config(kind: str, redis_address: str | None) -> FeatureStoreConfig:
    if kind == "redis":
        return FeatureStoreConfig(online_store=OnlineStore(type="redis",
                                                           connection_string=redis_address))
    return FeatureStoreConfig()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path, tables_dir):
    address = request.getfixturevalue("redis_server") if request.param == "redis" else None
    config = online_config(request.param, address)
    if request.param == "redis":
        config.project = f"t{abs(hash(str(tmp_path))) % 10**8}"  # one Redis, many tests
    return ingested(config, tmp_path, tables_dir)


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


def test_training_rows_never_see_a_rating_from_their_own_moment_or_later(tmp_path,
                                                                        tables_dir):
    store = ingested(FeatureStoreConfig(), tmp_path, tables_dir)
    labels = DATA.ratings.sample(300, random_state=1)
    entity_df = pd.DataFrame({"user_id": labels.user_id.to_numpy(),
                              "event_timestamp": pd.to_datetime(labels.timestamp.to_numpy(),
                                                                unit="s", utc=True)})
    joined = store.get_historical_features(
        entity_df=entity_df, features=["user_activity:user_rating_count"]).to_df()
    assert len(joined) == len(labels)  # first ratings too: nothing before them, not dropped
    for row in joined.itertuples():
        seconds = row.event_timestamp.timestamp()
        before = ((DATA.ratings.user_id == row.user_id)
                  & (DATA.ratings.timestamp < seconds)).sum()
        assert (0 if pd.isna(row.user_rating_count) else row.user_rating_count) == before


def test_training_set_rows_hold_the_profile_as_of_each_label(tmp_path, tables_dir):
    """A profile value stamped after a label never appears in that label's row."""
    local_tables = tmp_path / "features" / "tables"
    shutil.copytree(tables_dir, local_tables)
    user = DATA.ratings.user_id.value_counts().index[0]
    times = DATA.ratings[DATA.ratings.user_id == user].timestamp.sort_values()
    changed_at = int(times.iloc[len(times) // 2])
    old = DATA.users.set_index("user_id").occupation[user]
    new = "librarian" if old != "librarian" else "writer"
    profile = pd.read_parquet(local_tables / "user_profile")
    update = profile[profile.user_id == user].assign(
        occupation=new, event_timestamp=pd.Timestamp(changed_at, unit="s", tz="UTC"))
    update.to_parquet(local_tables / "user_profile" / "update.parquet", index=False)
    ingested(FeatureStoreConfig(), tmp_path, local_tables)

    snapshot = training_set.build(FeatureStoreConfig(), tmp_path, progress=None)
    span_dir = tmp_path / training_set.SETS_DIR / f"span-{snapshot['span']}"
    rows = pd.read_parquet(span_dir / "ratings.parquet")
    assert len(rows) == snapshot["rows"] == len(DATA.ratings)
    mine = rows[rows.user_id == user]
    assert set(mine[mine.timestamp < changed_at].occupation) == {old}
    assert set(mine[mine.timestamp >= changed_at].occupation) == {new}
    assert snapshot["span"] == DATA.ratings.timestamp.max()
    assert json.loads((span_dir / "snapshot.json").read_text()) == snapshot


def test_the_same_data_gives_the_same_snapshot_hash_and_new_data_a_new_one(tmp_path,
                                                                           tables_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    for workdir in (first, second):
        shutil.copytree(tables_dir, workdir / "features" / "tables")
        ingested(FeatureStoreConfig(), workdir, workdir / "features" / "tables")
    one = training_set.build(FeatureStoreConfig(), first, progress=None)
    rows = pd.read_parquet(first / training_set.SETS_DIR / f"span-{one['span']}"
                           / "ratings.parquet")
    assert training_set.content_hash(rows, training_set.catalog(
        first / "features" / "tables")) == one["content_sha256"]
    # joined a few label events at a time (as 20M are): the same set, the same hash
    assert training_set.build(FeatureStoreConfig(), second, progress=None,
                              chunk_rows=777) == one
    assert pd.read_parquet(second / training_set.SETS_DIR / f"span-{one['span']}"
                           / "ratings.parquet").equals(rows)
    later = DATA.ratings.iloc[:1].assign(timestamp=int(DATA.ratings.timestamp.max()) + 60)
    ingest.run_batch_job(second, Dataset(DATA.users, DATA.items,
                                  pd.concat([DATA.ratings, later]), "one rating later"))
    ingested(FeatureStoreConfig(), second, second / "features" / "tables")
    newer = training_set.build(FeatureStoreConfig(), second, progress=None)
    assert newer["span"] > one["span"] and newer["rows"] == one["rows"] + 1
    assert newer["content_sha256"] != one["content_sha256"]


def test_a_later_run_brings_new_ratings_and_new_users_online(tmp_path):
    cut = DATA.ratings.timestamp.quantile(0.5)
    # the first run knows neither the later ratings nor the last user
    early = Dataset(DATA.users.iloc[:-1], DATA.items,
                    DATA.ratings[(DATA.ratings.timestamp <= cut)
                                 & (DATA.ratings.user_id != DATA.users.user_id.iloc[-1])],
                    "early half")
    ingest.run_batch_job(tmp_path, early)
    store = ingest.ingest(FeatureStoreConfig(), tmp_path, progress=None)
    user = DATA.ratings[DATA.ratings.timestamp > cut].user_id.iloc[0]
    count = lambda s: s.get_online_features(  # noqa: E731
        features=["user_activity:user_rating_count"],
        entity_rows=[{"user_id": user}]).to_dict()["user_rating_count"][0] or 0
    before = count(store)
    newcomer = DATA.users.user_id.iloc[-1]
    ingest.run_batch_job(tmp_path, DATA)
    store = ingest.ingest(FeatureStoreConfig(), tmp_path, progress=None)
    assert count(store) == (DATA.ratings.user_id == user).sum() > before
    profile = store.get_online_features(features=["user_profile:age"],
                                        entity_rows=[{"user_id": newcomer}]).to_dict()
    assert profile["age"] == [DATA.users.age.iloc[-1]]


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
    bad.write_text("offline_store: {memory_limit: 4 gigs}\n")
    with pytest.raises(config_lib.ConfigError, match="offline_store.memory_limit' must be"):
        config_lib.load(FeatureStoreConfig, bad)


def test_redis_stopped_mid_run_fails_fast_with_a_connection_error(tmp_path, tables_dir):
    address, process = start_redis()
    try:
        config = online_config("redis", address)
        store = ingested(config, tmp_path, tables_dir)
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


def test_feature_client_reads_typed_rows_and_defaults_missing_ones(tmp_path, tables_dir):
    ingested(FeatureStoreConfig(), tmp_path, tables_dir)
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


def test_cached_item_features_survive_a_redis_outage(tmp_path, tables_dir):
    address, process = start_redis()
    try:
        config = online_config("redis", address)
        ingested(config, tmp_path, tables_dir)
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


def test_training_rows_and_serving_reads_give_the_model_the_same_inputs(tmp_path,
                                                                        tables_dir):
    """The offline path (training set) and the online path (the services' client) agree
    on every model input of the same user and item."""
    ingested(FeatureStoreConfig(), tmp_path, tables_dir)
    snapshot = training_set.build(FeatureStoreConfig(), tmp_path, tables_dir, progress=None)
    rows = pd.read_parquet(tmp_path / training_set.SETS_DIR / f"span-{snapshot['span']}"
                           / "ratings.parquet").tail(20)
    client = open_feast(ROOT / "pipelines/features/local.yaml", tmp_path / "features",
                        item_cache_seconds=0)
    for row in rows.itertuples():
        online = asyncio.run(client.ranking_features(row.user_id, [row.item_id]))
        assert online.user == {n: getattr(row, n) for n in feature_spec.USER_FEATURES}
        assert {n: values[0] for n, values in online.items.items()} == {
            n: getattr(row, n) for n in feature_spec.ITEM_FEATURES}


def test_each_items_newest_popularity_row_is_the_same_read_whole_or_in_batches(tables_dir):
    table = pd.read_parquet(tables_dir / "item_popularity")
    newest = table.loc[table.groupby("item_id").item_last_rated.idxmax()]
    for batch_rows in (10**9, 333):
        found = ingest.latest_item_popularity(tables_dir, batch_rows).set_index("item_id")
        assert len(found) == len(newest)
        assert (found.item_last_rated[newest.item_id].to_numpy()
                == newest.item_last_rated.to_numpy()).all()
        assert (found.item_rating_count[newest.item_id].to_numpy()
                == newest.item_rating_count.to_numpy()).all()
