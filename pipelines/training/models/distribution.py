"""Multi-worker training: the strategy TF_CONFIG asks for, who writes, and loss scaling.

With several workers in TF_CONFIG's cluster the Trainer runs under
MultiWorkerMirroredStrategy (synchronous data parallelism over collective all-reduce);
otherwise under TensorFlow's default strategy, i.e. exactly as a single process.
Every worker must take part in saving (saving reads mirrored variables collectively), but
only the chief's copy is kept: the others write to a temporary directory that is removed
afterwards, as TensorFlow's multi-worker guide recommends.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

import tensorflow as tf

from pipelines.training.models import autograph, warmup


def cluster() -> tuple[dict, dict]:
    """(cluster spec, this task) from TF_CONFIG; empty when it is unset."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return config.get("cluster", {}), config.get("task", {})


def num_workers() -> int:
    spec, _ = cluster()
    return sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))


def strategy() -> tf.distribute.Strategy:
    """Call before any other TensorFlow op: a multi-worker strategy configures the
    runtime's collective ops, which cannot change once it has started."""
    autograph.skip_keras()
    if num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """The chief task, or worker 0 when the cluster names no chief (TF's convention)."""
    spec, task = cluster()
    kind, index = task.get("type"), task.get("index", 0)
    if kind is None or kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in spec


@contextlib.contextmanager
def write_dir(path: str):
    """Yields where this task writes what lives at `path`: `path` itself on the chief, a
    temporary directory (removed on exit) on the other workers."""
    if is_chief():
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="worker-scratch-")
    try:
        yield scratch
    finally:
        tf.io.gfile.rmtree(scratch)


class ReplicaScaledLoss:
    """Mixin before `tfrs.Model`: the train step for several replicas.

    Each replica's gradients are summed across replicas, so a replica contributes its share
    of the global loss: its mean loss and the regularization divided by the number of
    replicas. A model whose loss is a sum over its batch (TFRS Retrieval's default) sets
    `loss_is_sum`: its replica's sum is already its share of the global sum. With one
    replica this is TFRS's own train step.
    """

    loss_is_sum = False

    @property
    def distribute_reduction_method(self) -> str:
        # Metric results are already aggregated over replicas (Keras reads them in a merge
        # call); Keras' default would sum those copies across workers again.
        return "first"

    @distribute_reduction_method.setter
    def distribute_reduction_method(self, value) -> None:
        pass  # fixed above

    def _replica_losses(self, inputs, training: bool):
        loss = self.compute_loss(inputs, training=training)
        regularization = tf.add_n([tf.reduce_sum(x) for x in self.losses]) \
            if self.losses else tf.constant(0.0)
        return loss, regularization

    def train_step(self, inputs):
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, regularization = self._replica_losses(inputs, training=True)
            share = (loss if self.loss_is_sum else loss / replicas) \
                + regularization / replicas
        gradients = tape.gradient(share, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._logs(loss, regularization)

    def test_step(self, inputs):
        return self._logs(*self._replica_losses(inputs, training=False))

    def _logs(self, loss, regularization) -> dict:
        logs = {metric.name: metric.result() for metric in self.metrics}
        logs.update(loss=loss, regularization_loss=regularization,
                    total_loss=loss + regularization)
        return logs


def save_model(module: tf.Module, path: str, signatures: dict, model_name: str) -> None:
    """Saves on every worker (they must all take part); only the chief's copy stays, with
    warm-up requests for the model server."""
    with write_dir(path) as target:
        tf.saved_model.save(module, target, signatures=signatures)
        warmup.write(target, model_name, signatures)
