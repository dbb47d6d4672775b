"""Loads MovieLens 100K from a directory, checking every file it reads.

The files are never copied into the repository (their licence forbids it): they are
read from `../shared/data/ml-100k` by default or from a directory the user names.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd

from libs import feature_spec
from pipelines.data.dataset import Dataset, DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "data" / "ml-100k"
REQUIRED_FILES = ("u.data", "u.user", "u.item")


def default_dir() -> Path | None:
    return DEFAULT_DIR if DEFAULT_DIR.is_dir() else None


def _verify_checksums(directory: Path) -> None:
    sums = directory / "SHA256SUMS"
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split()
        path = directory / name.lstrip("*")
        if name in REQUIRED_FILES and path.exists():
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != digest:
                raise DataError(f"{path}: corrupt file (SHA-256 {actual[:12]}... does not "
                                f"match {digest[:12]}... in {sums})")


def _read_table(path: Path, sep: str, names: list[str], expected_fields: int) -> pd.DataFrame:
    text = path.read_bytes().decode("latin-1")  # titles are Latin-1 in the original
    for number, line in enumerate(text.splitlines(), start=1):
        if line and line.count(sep) != expected_fields - 1:
            raise DataError(f"{path}:{number}: expected {expected_fields} fields separated "
                            f"by {sep!r}, got {line.count(sep) + 1}")
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, header=None, names=names,
                           dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot parse: {err}") from None


def _to_int(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0]) + 1
        raise DataError(f"{path}:{row}: field {column!r} is not a number: "
                        f"{frame[column].iloc[row - 1]!r}")
    return values.astype("int64")


def load(directory: str | Path) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: MovieLens directory not found")
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: required MovieLens file is missing")
    _verify_checksums(directory)

    path = directory / "u.data"
    raw = _read_table(path, "\t", ["user_id", "item_id", "rating", "timestamp"], 4)
    ratings = pd.DataFrame({
        "user_id": raw.user_id, "item_id": raw.item_id,
        "rating": _to_int(raw, "rating", path).astype("float64"),
        "timestamp": _to_int(raw, "timestamp", path),
    })

    path = directory / "u.user"
    raw = _read_table(path, "|", ["user_id", "age", "gender", "occupation", "zip_code"], 5)
    users = raw.assign(age=_to_int(raw, "age", path))

    path = directory / "u.item"
    genre_flags = list(feature_spec.GENRES)
    raw = _read_table(path, "|", ["item_id", "title", "release_date", "video_date", "url"]
                      + genre_flags, 5 + len(genre_flags))
    year = pd.to_datetime(raw.release_date, format="%d-%b-%Y", errors="coerce").dt.year
    flags = raw[genre_flags] == "1"
    genres = flags.apply(lambda row: feature_spec.GENRE_SEPARATOR.join(
        g for g, on in zip(genre_flags, row) if on) or "unknown", axis=1)
    items = pd.DataFrame({
        "item_id": raw.item_id, "title": raw.title,
        "release_year": year.fillna(feature_spec.BY_NAME["release_year"].default).astype("int64"),
        "genres": genres,
    })
    return Dataset(users=users, items=items, ratings=ratings, source=str(directory)).check()
