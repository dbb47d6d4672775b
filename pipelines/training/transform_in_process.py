"""The pipeline's Transform without TFX: the same `preprocessing_fn` over prepared examples.

Reads `span-<S>/{train,eval}` (pipelines/data/prepare.py), analyzes the train split and
transforms both, as TFX's Transform does by default, with tf.Transform on Beam's
in-memory DirectRunner. Writes what Transform writes, in its layout, so a `run_fn` reads
it unchanged (pipelines/training/standalone.py):
  <out>/transform_graph/{transform_fn,transformed_metadata,metadata (the raw schema)}
  <out>/transformed_examples/Split-{train,eval}/*.gz
The raw schema comes from the feature spec (every feature one value per example, what
SchemaGen infers with infer_feature_shape), not from statistics.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tensorflow as tf

from libs import feature_spec
from pipelines.training.models import inputs, preprocessing

SPLITS = ("train", "eval")


def raw_schema():
    from tensorflow_transform.tf_metadata import schema_utils
    return schema_utils.schema_from_feature_spec(
        {f.name: tf.io.FixedLenFeature([1], inputs.DTYPES[f.dtype])
         for f in feature_spec.FEATURES})


def transform(span_dir: str | Path, out: str | Path) -> tuple[str, str]:
    """(transform graph dir, transformed examples dir) for the examples in `span_dir`."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    if tf.io.gfile.exists(str(out)):  # a fresh output, as each Transform run's is
        tf.io.gfile.rmtree(str(out))
    graph_dir = os.path.join(out, "transform_graph")
    examples_dir = os.path.join(out, "transformed_examples")
    options = beam.options.pipeline_options.PipelineOptions(
        ["--runner=DirectRunner", "--direct_running_mode=in_memory",
         "--direct_num_workers=1"])
    with tempfile.TemporaryDirectory() as scratch, beam.Pipeline(options=options) as p, \
            tft_beam.Context(temp_dir=scratch):
        raw = {}
        for split in SPLITS:
            source = tfxio.TFExampleRecord(file_pattern=str(Path(span_dir, split, "*")),
                                           schema=raw_schema())
            raw[split] = (p | f"Read{split}" >> source.BeamSource(),
                          source.TensorAdapterConfig())
        transform_fn = raw["train"] | tft_beam.AnalyzeDataset(preprocessing.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
        for split in SPLITS:
            (rows, metadata) = ((raw[split], transform_fn)
                                | f"Transform{split}" >> tft_beam.TransformDataset())
            coder = tft.coders.ExampleProtoCoder(metadata.schema)
            _ = (rows | f"Encode{split}" >> beam.Map(coder.encode)
                 | f"Write{split}" >> beam.io.WriteToTFRecord(
                     os.path.join(examples_dir, f"Split-{split}", "transformed"),
                     file_name_suffix=".gz"))
    # the export signatures parse raw features with it (TFTransformOutput.raw_feature_spec)
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema()),
                               os.path.join(graph_dir, "metadata"))
    return graph_dir, examples_dir
