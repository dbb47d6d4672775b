"""The Feast feature repository: entities, feature views and one service per model.

Declarative: `definitions(tables_dir)` only builds Feast objects; the parquet tables
under `tables_dir` come from the batch job (`batch_job.py`). Types of the features the
models read come from the feature spec, so Feast, Transform and the services agree.
Views the stream worker updates also take pushes (`<view>_push`).
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import (Entity, FeatureService, FeatureView, Field, FileSource, PushSource,
                   ValueType)
from feast.types import Array, Float32, Int64, String

from libs import feature_spec
from libs.feature_store import CANDIDATE_SERVICE, QUERY_SERVICE, RANKING_SERVICE
from pipelines.features.tables import TIMESTAMP, WINDOW_COUNT

FEAST_TYPE = {"string": String, "int64": Int64, "float": Float32}
# No expiry: a value holds until a newer one replaces it (and MovieLens is from 1997).
NO_TTL = timedelta(0)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="a person who rates and gets recommendations")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="a catalog item (a movie)")


def _spec_fields(names: tuple[str, ...]) -> list[Field]:
    return [Field(name=n, dtype=FEAST_TYPE[feature_spec.BY_NAME[n].dtype]) for n in names
            if n not in ("user_id", "item_id")]


def push_source_name(view: str) -> str:
    return f"{view}_push"


def _source(tables_dir: Path, name: str, push: bool = False):
    batch = FileSource(name=f"{name}_source", path=str(tables_dir / name / "*.parquet"),
                       timestamp_field=TIMESTAMP)
    return PushSource(name=push_source_name(name), batch_source=batch) if push else batch


def definitions(tables_dir: str | Path) -> dict:
    tables_dir = Path(tables_dir).resolve()
    user_profile = FeatureView(
        name="user_profile", entities=[user], ttl=NO_TTL,
        schema=_spec_fields(feature_spec.USER_FEATURES) + [
            Field(name="age_group", dtype=String), Field(name="zip_region", dtype=String)],
        source=_source(tables_dir, "user_profile"))
    item_profile = FeatureView(
        name="item_profile", entities=[item], ttl=NO_TTL,
        schema=_spec_fields(feature_spec.ITEM_FEATURES) + [
            Field(name="title", dtype=String), Field(name="title_tokens", dtype=Array(String))],
        source=_source(tables_dir, "item_profile"))
    user_activity = FeatureView(
        name="user_activity", entities=[user], ttl=NO_TTL,
        schema=[Field(name="user_rating_count", dtype=Int64),
                Field(name="user_mean_rating", dtype=Float32),
                Field(name="genre_affinity", dtype=Array(Float32),
                      description="share of the user's ratings in each genre, in the "
                                  "order of feature_spec.GENRES"),
                Field(name="recent_items", dtype=Array(String))],
        source=_source(tables_dir, "user_activity", push=True))
    item_popularity = FeatureView(
        name="item_popularity", entities=[item], ttl=NO_TTL,
        schema=[Field(name="item_rating_count", dtype=Int64),
                Field(name="item_mean_rating", dtype=Float32),
                Field(name=WINDOW_COUNT, dtype=Int64),
                Field(name="item_daily_counts", dtype=Array(Int64),
                      description="ratings per UTC day, the row's day first "
                                  "(libs/trends.py: windows at any later moment)"),
                Field(name="item_first_rated", dtype=Int64),
                Field(name="item_last_rated", dtype=Int64)],
        source=_source(tables_dir, "item_popularity", push=True))
    user_rated_items = FeatureView(
        name="user_rated_items", entities=[user], ttl=NO_TTL,
        schema=[Field(name="rated_items", dtype=Array(String))],
        source=_source(tables_dir, "user_rated_items", push=True),
        description="serving only: what the candidate service excludes and the "
                    "retrieval model's history feature")
    views = [user_profile, item_profile, user_activity, item_popularity, user_rated_items]
    # What each model (and its service) reads; the services fetch a whole service in
    # one call.
    services = [
        FeatureService(name=QUERY_SERVICE, features=[user_profile, user_rated_items,
                                                     user_activity[["recent_items"]]],
                       description="query tower: the user's features and history, and what "
                                   "to exclude; the candidate sources: the latest items"),
        FeatureService(name=CANDIDATE_SERVICE, features=[item_profile],
                       description="candidate tower: item features"),
        FeatureService(name=RANKING_SERVICE, features=[user_profile, item_profile],
                       description="ranking model: user and item features"),
    ]
    return {"entities": [user, item], "views": views, "services": services}
