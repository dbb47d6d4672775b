import shutil

import pytest

from pipelines.data import movielens
from pipelines.data.dataset import DataError
from tests.conftest import MOVIELENS

needs_movielens = pytest.mark.skipif(not MOVIELENS.is_dir(), reason="MovieLens not present")


@needs_movielens
def test_loads_movielens_100k_tables():
    data = movielens.load(MOVIELENS)
    assert (len(data.users), len(data.items), len(data.ratings)) == (943, 1682, 100_000)
    toy_story = data.items.set_index("item_id").loc["1"]
    assert toy_story.title == "Toy Story (1995)" and toy_story.release_year == 1995
    assert toy_story.genres == "Animation|Children's|Comedy"
    assert data.ratings.rating.between(1, 5).all()


@pytest.fixture
def copy(tmp_path):
    if not MOVIELENS.is_dir():
        pytest.skip("MovieLens not present")
    target = tmp_path / "ml"
    shutil.copytree(MOVIELENS, target)
    return target


def test_missing_file_is_named(copy):
    (copy / "u.user").unlink()
    with pytest.raises(DataError, match="u.user: required MovieLens file is missing"):
        movielens.load(copy)


def test_checksum_mismatch_is_reported(copy):
    (copy / "u.data").write_text("1\t1\t5\t881250949\n")
    with pytest.raises(DataError, match="u.data: corrupt file"):
        movielens.load(copy)


def test_bad_line_is_reported_with_its_number(copy):
    (copy / "SHA256SUMS").unlink()
    lines = (copy / "u.data").read_text().splitlines()
    lines[2] = "22\t377\tfive\t878887116"
    (copy / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u.data:3: field 'rating' is not a number"):
        movielens.load(copy)


def test_missing_directory():
    with pytest.raises(DataError, match="MovieLens directory not found"):
        movielens.load("/nonexistent/ml-100k")
