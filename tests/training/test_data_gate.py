"""The data gate reads real ExampleValidator output (TFDV anomalies) and names them."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pandas as pd  # noqa: E402
import tensorflow_data_validation as tfdv  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts  # noqa: E402

from pipelines.training.components.data_gate import anomalies_by_split  # noqa: E402


def anomalies_artifact(tmp_path, frames: dict) -> standard_artifacts.ExampleAnomalies:
    schema = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(frames["train"]))
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = artifact_utils.encode_split_names(list(frames))
    for split, frame in frames.items():
        found = tfdv.validate_statistics(tfdv.generate_statistics_from_dataframe(frame), schema)
        os.makedirs(tmp_path / f"Split-{split}")
        (tmp_path / f"Split-{split}" / "SchemaDiff.pb").write_bytes(found.SerializeToString())
    return artifact


def test_clean_data_passes(tmp_path):
    train = pd.DataFrame({"gender": ["F", "M"] * 50, "rating": [1.0, 5.0] * 50})
    assert anomalies_by_split(anomalies_artifact(tmp_path, {"train": train,
                                                            "eval": train})) == {}


def test_unknown_category_and_wrong_type_are_named(tmp_path):
    train = pd.DataFrame({"gender": ["F", "M"] * 50, "rating": [1.0, 5.0] * 50})
    bad = pd.DataFrame({"gender": ["F", "X"] * 50, "rating": ["five", "1"] * 50})
    found = anomalies_by_split(anomalies_artifact(tmp_path, {"train": train, "eval": bad}))
    assert set(found) == {"eval"}
    text = " ".join(found["eval"])
    assert "gender:" in text and "rating:" in text
