"""Model inputs: Transform's output for training, raw feature tensors for serving."""
from __future__ import annotations

import tensorflow as tf

from libs import feature_spec
from pipelines.training.models import seeding

DTYPES = {"string": tf.string, "int64": tf.int64, "float": tf.float32}


def dataset(fn_args, files, tf_transform_output, batch_size: int, shuffle: bool = True):
    """Batches of transformed features (label included) from Transform's output;
    `batch_size` is the global batch, split across replicas under a strategy. Several
    workers each read all the data in the same order (the run's seed) and keep their part
    of every global batch (DATA sharding: Transform writes fewer files than workers)."""
    from tfx_bsl.public import tfxio
    batches = fn_args.data_accessor.tf_dataset_factory(
        files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle,
                                              shuffle_seed=seeding.seed_of(fn_args),
                                              num_epochs=None if shuffle else 1),
        tf_transform_output.transformed_metadata.schema)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options)


def raw_input_signature(names: tuple[str, ...]) -> dict[str, tf.TensorSpec]:
    return {n: tf.TensorSpec([None], DTYPES[feature_spec.BY_NAME[n].dtype], name=n)
            for n in names}


def raw_tensors(columns: dict[str, list]) -> dict[str, tf.Tensor]:
    """Python lists of raw values -> tensors of the spec's dtypes."""
    return {n: tf.constant(v, DTYPES[feature_spec.BY_NAME[n].dtype])
            for n, v in columns.items()}


def as_column(raw: dict) -> dict:
    """[batch] request tensors -> the [batch, 1] shape Transform's layer expects."""
    return {k: tf.reshape(v, [-1, 1]) for k, v in raw.items()}
