"""The Beam feature job: corrupt rows are quarantined and counted, never in the tables;
a failed run keeps the previous tables."""
import json

import pandas as pd
import pytest

from libs import deletion_list
from pipelines.data import sources, synthetic
from pipelines.data.dataset import DataError
from pipelines.features import batch_job

DATA = synthetic.generate(40, 60, 1000, seed=9)
BAD_RATINGS = [
    "1,2,6,890000000",           # rating out of range
    "1,2,four,890000000",        # not a number
    "1,2,3",                     # a field missing
    "ghost,2,3,890000000",       # unknown user
    "1,nothing,3,890000000",     # unknown item
    "1,2,3,yesterday",           # timestamp not an integer
]


@pytest.fixture
def raw(tmp_path):
    raw_dir = tmp_path / "data" / "raw"
    sources.land(DATA, raw_dir)
    with open(raw_dir / "ratings.csv", "a") as f:
        f.write("\n".join(BAD_RATINGS) + "\n")
    with open(raw_dir / "users.csv", "a") as f:
        f.write("999,30,F,astronaut,12345\n")  # occupation outside the spec
        f.write(f"{DATA.users.user_id.iloc[0]},40,M,writer,12345\n")  # duplicate id
    events = raw_dir / "events"
    events.mkdir()
    (events / "stream-1.csv").write_text(
        "user_id,item_id,rating,timestamp\n"
        f"{DATA.users.user_id.iloc[1]},{DATA.items.item_id.iloc[1]},5,"
        f"{int(DATA.ratings.timestamp.max()) + 10}\n")
    return raw_dir


def test_corrupt_rows_are_quarantined_counted_and_kept_out(raw, tmp_path):
    out = tmp_path / "features" / "tables"
    report = batch_job.run(raw, out, progress=None)
    assert report["read"] == {"users": len(DATA.users) + 2, "items": len(DATA.items),
                              "ratings": len(DATA.ratings) + len(BAD_RATINGS) + 1}
    assert report["quarantined"] == {
        "ratings.rating": 2, "ratings.row": 1, "ratings.user_id": 1, "ratings.item_id": 1,
        "ratings.timestamp": 1, "users.occupation": 1, "users.user_id": 1}
    quarantined = [json.loads(line) for path in (out / "quarantine").glob("*.jsonl")
                   for line in path.read_text().splitlines()]
    assert len(quarantined) == 8 and all(q["reason"] for q in quarantined)
    assert any("astronaut" in q["reason"] for q in quarantined)

    labels = pd.read_parquet(out / "ratings")
    assert len(labels) == len(DATA.ratings) + 1  # the streamed event is in, the bad are not
    assert set(labels.user_id) <= set(DATA.users.user_id)
    profiles = pd.read_parquet(out / "user_profile")
    assert len(profiles) == len(DATA.users) and "999" not in set(profiles.user_id)
    activity = pd.read_parquet(out / "user_activity")
    assert activity.groupby("user_id").user_rating_count.max().sum() == len(labels)


def test_a_failed_run_keeps_the_previous_tables(raw, tmp_path):
    out = tmp_path / "features" / "tables"
    batch_job.run(raw, out, progress=None)
    before = sorted(p.name for p in out.rglob("*.parquet"))
    (raw / "items.csv").write_text("id;name\n1;x\n")
    with pytest.raises(DataError, match="items.csv: header"):
        batch_job.run(raw, out, progress=None)
    assert sorted(p.name for p in out.rglob("*.parquet")) == before


def test_rows_of_erased_users_are_dropped_before_anything_reads_them(raw, tmp_path):
    erased = str(DATA.users.user_id.iloc[0])  # has ratings and a duplicate profile row
    out = tmp_path / "features" / "tables"
    report = batch_job.run(raw, out, progress=None,
                           erased=frozenset({deletion_list.digest(erased)}))
    theirs = (int((DATA.ratings.user_id.astype(str) == erased).sum())
              + sum(row.startswith(f"{erased},") for row in BAD_RATINGS))  # corrupt too
    assert theirs > 0 and report["erased"] == {"users": 2, "ratings": theirs}
    assert "users.user_id" not in report["quarantined"]  # the duplicate is not kept there
    for table in ("user_profile", "user_activity", "user_rated_items", "ratings"):
        assert erased not in set(pd.read_parquet(out / table).user_id), table
    quarantine = "".join(p.read_text() for p in (out / "quarantine").glob("*.jsonl"))
    assert f'"{erased},' not in quarantine
