"""TFX component that stops the run when ExampleValidator found anomalies.

ExampleValidator only records anomalies; left alone, a pipeline would go on to train on
data that breaks the schema. This gate fails the run instead, naming each anomaly, and
Transform is ordered after it.
"""
# No `from __future__ import annotations`: TFX reads these type hints at definition time.
import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils


class DataAnomaliesError(RuntimeError):
    pass


def anomalies_by_split(anomalies) -> dict:
    """{split: ["feature: description", ...]} for every split that has anomalies."""
    found = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), "SchemaDiff.pb")
        with tf.io.gfile.GFile(path, "rb") as f:
            parsed = anomalies_pb2.Anomalies.FromString(f.read())
        messages = [f"{name}: {info.short_description} ({info.description})"
                    for name, info in sorted(parsed.anomaly_info.items())]
        if parsed.HasField("dataset_anomaly_info"):
            messages.append(f"dataset: {parsed.dataset_anomaly_info.description}")
        if messages:
            found[split] = messages
    return found


@tfx.dsl.components.component
def DataValidationGate(
    anomalies: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleAnomalies],
) -> None:
    found = anomalies_by_split(anomalies)
    if found:
        lines = [f"  {split}: {m}" for split, messages in found.items() for m in messages]
        raise DataAnomaliesError("the data does not match the schema; not training on it:\n"
                                 + "\n".join(lines))
