import numpy as np
import pandas as pd
import pytest

from pipelines.data import sources, synthetic_at_scale as scale
from pipelines.data.synthetic import DAY, START
from pipelines.features.batch_job import raw_files


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    raw = tmp_path_factory.mktemp("scale") / "raw"
    written = scale.land(raw, 3_000, 5_000, 60_000, days=120, seed=1, progress=None)
    return raw, written, pd.read_csv(raw / "ratings.csv"), pd.read_csv(raw / "items.csv")


def test_lands_the_layout_the_batch_job_reads_with_every_event_asked_for(landed):
    raw, written, ratings, items = landed
    raw_files(raw)  # raises on a missing table or a wrong header
    assert written["events"] == len(ratings) == 60_000
    assert len(pd.read_csv(raw / "users.csv")) == 3_000 and len(items) == 5_000
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    assert ratings.rating.between(1, 5).all()
    assert ratings.timestamp.between(START, START + 120 * DAY - 1).all()
    assert ratings.item_id.isin(items.item_id).all()


def test_popularity_is_a_long_tail_and_trends_move(landed):
    _, written, ratings, items = landed
    assert written["top_1pct_items_event_share"] > 0.15  # uniform: 0.01
    counts = ratings.item_id.value_counts()
    assert counts.iloc[0] > 50 * counts.median()
    # what was most rated in the last two weeks is not simply the all-time top: new
    # releases climb it
    recent = ratings[ratings.timestamp > ratings.timestamp.max() - 14 * DAY]
    top_recent = recent.item_id.value_counts().index[:50]
    assert len(set(top_recent) & set(counts.index[:50])) < 40
    new = set(items.item_id[items.release_year >= 1997])  # released during the span
    assert top_recent.isin(new).mean() > counts.index[:50].isin(new).mean() + 0.1


def test_users_come_in_sessions_of_related_items(landed):
    _, written, ratings, items = landed
    assert written["next_event_within_1h_share"] > 0.4
    genres = items.set_index("item_id").genres.str.split("|").apply(set)
    ordered = ratings.sort_values(["user_id", "timestamp"])
    genre = genres.reindex(ordered.item_id).to_numpy()
    share = np.array([bool(a & b) for a, b in zip(genre[1:], genre[:-1])])
    same_user = ordered.user_id.to_numpy()[1:] == ordered.user_id.to_numpy()[:-1]
    close = np.diff(ordered.timestamp.to_numpy()) < 3600
    # consecutive events of a session share a genre far more often than of two sessions
    assert share[same_user & close].mean() > share[same_user & ~close].mean() + 0.2


def test_no_item_is_rated_before_its_release():
    rng = np.random.default_rng(0)
    catalog = scale._catalog(rng, 2_000, 200 * DAY)
    sampler = scale._Sampler(catalog, rng)
    times = rng.integers(0, 200 * DAY, 20_000)
    for uniform in (False, True):
        items = sampler.draw(np.zeros((len(times), 19), np.float32), times,
                             rng.integers(0, 19, len(times)), uniform=uniform)
        assert (catalog.released[items] <= times).all()
    assert (catalog.released >= 0).mean() == pytest.approx(scale.NEW_SHARE, abs=0.05)


def test_same_seed_same_data(tmp_path):
    a = scale.land(tmp_path / "a", 500, 800, 5_000, seed=3, progress=None)
    b = scale.land(tmp_path / "b", 500, 800, 5_000, seed=3, progress=None)
    assert a["events"] == b["events"]
    assert (tmp_path / "a" / "ratings.csv").read_bytes() == \
        (tmp_path / "b" / "ratings.csv").read_bytes()


def test_impossible_sizes_are_refused_and_what_landed_stays(tmp_path):
    raw = tmp_path / "raw"
    scale.land(raw, 100, 200, 1_000, progress=None)
    before = (raw / "ratings.csv").read_bytes()
    with pytest.raises(ValueError, match="more than 50 per user"):
        scale.land(raw, 10, 200, 1_000, progress=None)
    with pytest.raises(ValueError, match="positive"):
        scale.land(raw, 10, 200, 0, progress=None)
    with pytest.raises(RuntimeError), sources.landing(raw) as new:
        (new / "ratings.csv").write_text("half written")
        raise RuntimeError("disk full")
    assert (raw / "ratings.csv").read_bytes() == before


def test_cli_names_the_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        scale.main(["--workdir", str(tmp_path), "--users", "0"])
    assert exit_.value.code == 2
    assert "positive" in capsys.readouterr().err
