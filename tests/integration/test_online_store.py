"""The services' thin readers (libs/online_store.py) against rows Feast itself wrote:
materialized into SQLite and a real Redis, and pushed as the stream worker pushes. Every
feature of every view must read back as Feast's get_online_features gives it; a Feast
upgrade that changes its layout fails here."""
from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from libs.feature_store import open_feast
from libs.feature_store_config import FeatureStoreConfig, OnlineStore
from libs.online_store import EntityRead, RedisReader, SqliteReader
from pipelines.data import synthetic
from pipelines.features import ingest
from pipelines.features.definitions import push_source_name
from tests.conftest import ROOT

DATA = synthetic.generate(150, 200, 4000, seed=5)
VIEWS = {"user_id": ("user_profile", "user_activity", "user_rated_items"),
         "item_id": ("item_profile", "item_popularity")}


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tables")
    ingest.run_batch_job(workdir, DATA)
    return workdir / "features" / "tables"


@pytest.fixture(params=["sqlite", "redis"])
def written(request, tmp_path, tables_dir):
    """(Feast store, our reader) over the same online store, filled by Feast."""
    config = FeatureStoreConfig()
    if request.param == "redis":
        address = request.getfixturevalue("redis_server")
        config = FeatureStoreConfig(project=f"contract{abs(hash(str(tmp_path))) % 10**6}",
                                    online_store=OnlineStore(type="redis",
                                                             connection_string=address))
    store = ingest.ingest(config, tmp_path, tables_dir=tables_dir, progress=None)
    if request.param == "redis":
        reader = RedisReader(config.project, timeout_seconds=1,
                             **config.online_store.redis_address())
    else:
        reader = SqliteReader(config.project, str(tmp_path / "features" / "online.db"))
    return store, reader


def every_feature(store, join_key: str) -> EntityRead:
    return EntityRead(join_key, tuple((view, f.name) for view in VIEWS[join_key]
                                      for f in store.get_feature_view(view).features))


def feast_rows(store, read: EntityRead, ids: list[str]) -> list[dict | None]:
    columns = store.get_online_features(
        features=[f"{view}:{name}" for view, name in read.features],
        entity_rows=[{read.join_key: i} for i in ids]).to_dict()
    rows = [{n: columns[n][row] for n in read.names} for row in range(len(ids))]
    return [None if all(v is None for v in row.values()) else row for row in rows]


def assert_same(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for mine, feast in zip(ours, theirs):
        if feast is None:
            assert mine is None
            continue
        assert mine.keys() == feast.keys()
        for name, value in feast.items():
            assert mine[name] == pytest.approx(value) if isinstance(value, float) \
                else mine[name] == value, name


def test_every_feature_reads_back_as_feast_wrote_it(written):
    store, reader = written
    users = list(DATA.users.user_id) + ["nobody"]
    items = list(DATA.items.item_id) + ["nothing"]
    user_read, item_read = every_feature(store, "user_id"), every_feature(store, "item_id")
    ours = asyncio.run(reader.read([(user_read, users), (item_read, items)]))
    assert ours[0][-1] is None and ours[1][-1] is None
    assert sum(row is not None for row in ours[0]) == len(DATA.users)
    assert_same(ours[0], feast_rows(store, user_read, users))
    assert_same(ours[1], feast_rows(store, item_read, items))


def test_a_pushed_row_replaces_the_materialized_one(written):
    store, reader = written
    user = DATA.users.user_id.iloc[0]
    pushed = {"user_id": user, "rated_items": ["i-new", "i-old"],
              "event_timestamp": pd.Timestamp.now(tz="UTC")}
    store.push(push_source_name("user_rated_items"), pd.DataFrame([pushed]))
    read = EntityRead("user_id", (("user_rated_items", "rated_items"),
                                  ("user_profile", "age")))
    row = asyncio.run(reader.read([(read, [user])]))[0][0]
    assert row["rated_items"] == ["i-new", "i-old"]
    assert row["age"] == DATA.users.age.iloc[0]
    assert_same([row], feast_rows(store, read, [user]))


def test_the_services_client_reads_through_the_thin_reader(tmp_path, tables_dir):
    """open_feast reads what each feature service names, typed by the feature spec."""
    store = ingest.ingest(FeatureStoreConfig(), tmp_path, tables_dir=tables_dir,
                          progress=None)
    client = open_feast(ROOT / "pipelines/features/local.yaml", tmp_path / "features")
    user = DATA.users.user_id.iloc[2]
    items = list(DATA.items.item_id.iloc[:30])

    async def both():
        return (await client.query_features(user),
                await client.ranking_features(user, items))
    query, ranking = asyncio.run(both())
    expected = feast_rows(store, every_feature(store, "user_id"), [user])[0]
    assert query.rated_items == set(expected["rated_items"])
    assert query.recent_items == expected["recent_items"]
    genres = feast_rows(store, EntityRead("item_id", (("item_profile", "genres"),)), items)
    assert ranking.items["genres"] == [row["genres"] for row in genres]
