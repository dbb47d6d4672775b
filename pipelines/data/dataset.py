"""The three tables every data source yields: users, items and ratings."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = ("item_id", "title", "release_year", "genres")
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


class DataError(ValueError):
    """A data file is missing, corrupt or inconsistent; the message names it."""


@dataclass
class Dataset:
    users: pd.DataFrame
    items: pd.DataFrame
    ratings: pd.DataFrame
    source: str

    def check(self) -> "Dataset":
        """Referential and range checks shared by every source."""
        for name, frame, columns in (("users", self.users, USER_COLUMNS),
                                     ("items", self.items, ITEM_COLUMNS),
                                     ("ratings", self.ratings, RATING_COLUMNS)):
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise DataError(f"{self.source}: table {name} lacks columns {missing}")
            if frame.empty:
                raise DataError(f"{self.source}: table {name} is empty")
        unknown_users = ~self.ratings.user_id.isin(self.users.user_id)
        if unknown_users.any():
            example = self.ratings.user_id[unknown_users].iloc[0]
            raise DataError(f"{self.source}: {int(unknown_users.sum())} ratings name users "
                            f"missing from the users table (e.g. user {example!r})")
        unknown_items = ~self.ratings.item_id.isin(self.items.item_id)
        if unknown_items.any():
            example = self.ratings.item_id[unknown_items].iloc[0]
            raise DataError(f"{self.source}: {int(unknown_items.sum())} ratings name items "
                            f"missing from the items table (e.g. item {example!r})")
        bad = ~self.ratings.rating.between(1, 5)
        if bad.any():
            raise DataError(f"{self.source}: {int(bad.sum())} ratings outside 1..5")
        return self
