"""The one feature spec: names, types, defaults and encodings of every raw feature.

Read by the data preparation (types of the tf.Examples), the TFX Transform
(`pipelines/training/models/preprocessing.py`), the model export signatures and the
serving side (`libs/feature_store.py`, the candidate and ranking services), so training
and serving cannot disagree about a feature. Pure Python: both environments import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment",
    "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
    "other", "programmer", "retired", "salesman", "scientist", "student", "technician",
    "writer",
)
GENDERS = ("F", "M")
AGE_BOUNDARIES = (18, 25, 35, 45, 50, 56)  # MovieLens 1M's age groups
GENRE_SEPARATOR = "|"
ITEM_SEPARATOR = " "  # between the item ids of a history feature
RECENT_ITEMS = 10  # the user's latest rated items the feature store keeps, newest first


def age_group(age: int) -> str:
    """The spec's age buckets as labels: "<18", "18-24", ..., "56+" (the feature store's
    user_profile.age_group; the evaluation's slices and fairness groups)."""
    bounds = AGE_BOUNDARIES
    if age < bounds[0]:
        return f"<{bounds[0]}"
    for low, high in zip(bounds, bounds[1:]):
        if age < high:
            return f"{low}-{high - 1}"
    return f"{bounds[-1]}+"


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # "string" | "int64" | "float"
    entity: str  # "user" | "history" | "item" | "context" | "label"
    default: Any
    encoding: str  # how Transform encodes it, see preprocessing.py
    vocabulary: tuple = ()
    boundaries: tuple = ()
    max_length: int = 0  # history features: how many items Transform keeps
    description: str = ""


FEATURES: tuple[Feature, ...] = (
    # ids: the vocabulary is learned from the training data by Transform
    Feature("user_id", "string", "user", "", "learned_vocabulary",
            description="user identifier"),
    Feature("age", "int64", "user", 30, "bucketize", boundaries=AGE_BOUNDARIES),
    Feature("gender", "string", "user", "", "fixed_vocabulary", vocabulary=GENDERS),
    Feature("occupation", "string", "user", "other", "fixed_vocabulary",
            vocabulary=OCCUPATIONS),
    Feature("item_id", "string", "item", "", "learned_vocabulary",
            description="item identifier"),
    # the user's rated items (YouTube-DNN style history). Not a stored feature: data
    # preparation derives it from the train split only (pipelines/data/prepare.py), the
    # candidate service from the online `user_rated_items` view; ids sorted as that view
    # keeps them, so training and serving see the same string
    Feature("rated_items", "string", "history", "", "item_history", max_length=256,
            description=f"item ids the user rated, sorted, joined by '{ITEM_SEPARATOR}'"),
    Feature("genres", "string", "item", "unknown", "multi_hot", vocabulary=GENRES,
            description=f"genre names joined by '{GENRE_SEPARATOR}'"),
    Feature("release_year", "int64", "item", 1990, "scale", boundaries=(1920, 2000),
            description="scaled linearly so the boundaries map to 0 and 1"),
    Feature("timestamp", "int64", "context", 0, "time_of_week",
            description="seconds since the epoch of the request or rating"),
    Feature("rating", "float", "label", 0.0, "label"),
)
BY_NAME = {f.name: f for f in FEATURES}
LABEL = "rating"

USER_FEATURES = tuple(f.name for f in FEATURES if f.entity == "user")
HISTORY_FEATURES = tuple(f.name for f in FEATURES if f.entity == "history")
ITEM_FEATURES = tuple(f.name for f in FEATURES if f.entity == "item")
CONTEXT_FEATURES = tuple(f.name for f in FEATURES if f.entity == "context")

# Inputs of the exported signatures that the services call.
RETRIEVAL_INPUTS = USER_FEATURES + HISTORY_FEATURES + CONTEXT_FEATURES
RANKING_INPUTS = USER_FEATURES + ITEM_FEATURES + CONTEXT_FEATURES
# What the feature store holds per label event (the training set's columns); history
# features are derived after the train/eval split, so they cannot leak eval items.
STORED_FEATURES = tuple(f.name for f in FEATURES if f.entity != "history")

def transformed_name(name: str) -> str:
    """Name of the Transform output (model input) made from raw feature `name`."""
    return f"{name}_xf"


@dataclass(frozen=True)
class ModelNames:
    retrieval: str = "retrieval"
    ranking: str = "ranking"


MODEL_NAMES = ModelNames()


def join_items(item_ids) -> str:
    """A history feature's raw value: the ids sorted (as the online view keeps them)."""
    return ITEM_SEPARATOR.join(sorted(item_ids))


def default_row(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: BY_NAME[n].default for n in names}


def coerce(name: str, value: Any) -> Any:
    """Converts a stored or requested value to the spec's type; None -> default."""
    feature = BY_NAME[name]
    if value is None or (isinstance(value, float) and value != value):
        return feature.default
    if feature.dtype == "string":
        return str(value)
    if feature.dtype == "int64":
        return int(value)
    return float(value)


