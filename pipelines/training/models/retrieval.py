"""Two-tower retrieval model (TensorFlow Recommenders), TFX Trainer `run_fn`.

Query tower: the user's history (mean embedding of the items they rated), demographics
and time context. Candidate tower: item id, genres and release year. Trained with a
softmax over the whole catalog (optionally with the user's other rated items masked out),
items of the history dropped at random; exported with a BruteForce top-k index
over every catalog item, built from the candidate tower after training, so serving is one
call: raw user features in, item ids and scores out. Only stock TensorFlow ops are in the
graph, so TF Serving loads it. The `query_embedding` signature and the version's
candidate index (libs/candidate_index.py, in assets.extra/) serve large catalogs: the
candidate service searches the index of the version that embedded the query.
"""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from libs import feature_spec
from libs.feature_spec import transformed_name
from libs import candidate_index, candidate_sources
from pipelines.training.models import (distribution, fitting, hyperparameters, inputs,
                                       seeding, sources, towers)

QUERY_FEATURES = feature_spec.RETRIEVAL_INPUTS
CANDIDATE_FEATURES = feature_spec.ITEM_FEATURES
# The history feature (rated_items) is wired end to end but off by default: with it
# (catalog softmax, Adam 0.005, history dropout 0.5, no user_id, 500 steps) per-user
# Recall@10 was 0.189-0.205 over runs against 0.192 without, and the time split's
# top-100 accuracy / Recall@10 fell to 0.250-0.266 / 0.056-0.066 (gate: 0.9 / 0.8 x
# most popular's 0.281 / 0.071), so the retrieval model would not be pushed. Turn it on
# with query_features (+ "rated_items"); see the README.
DEFAULTS = {"batch_size": 1024, "optimizer": "adagrad", "learning_rate": 0.1,
            "embedding_dim": 32, "hidden_units": [], "l2": 0.0, "negatives": "in_batch",
            "query_features": [n for n in QUERY_FEATURES if n != "rated_items"],
            "history_dropout": 0.0, "mask_history": False, "equal_users": False,
            "id_embedding_dim": 32,
            # the version's other candidate sources and their blend (models/sources.py)
            "candidate_sources": True}
NEGATIVES = ("catalog", "in_batch")
OPTIMIZERS = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam}


def item_frequencies(dataset, num_items: int) -> np.ndarray:
    """Share of training ratings per item index (one pass over the training data)."""
    counts = np.zeros(num_items, dtype=np.float64)
    for batch in dataset:
        counts += np.bincount(batch[transformed_name("item_id")].numpy().reshape(-1),
                              minlength=num_items)
    return (counts + 1.0) / (counts.sum() + num_items)


class TwoTower(distribution.ReplicaScaledLoss, tfrs.Model):
    """Softmax over items, so an item's popularity is learnt, in a bias the dot product
    carries: the query gets a constant 1 appended, the candidate its item's bias.
    Negatives (hp "negatives"):
      catalog   every catalog item (a full softmax: cheap for thousands of items)
      in_batch  the batch's other items, each logit corrected by the item's sampling
                probability (logQ), which approaches the full softmax for large catalogs
    """

    @property
    def loss_is_sum(self) -> bool:  # for several workers: TFRS Retrieval sums its batch
        return self.negatives == "in_batch"

    def __init__(self, sizes: dict[str, int], hp: dict, item_frequency: np.ndarray,
                 catalog: dict[str, tf.Tensor]):
        super().__init__()
        if hp["negatives"] not in NEGATIVES:
            raise ValueError(f"retrieval hyperparameter 'negatives' must be one of "
                             f"{NEGATIVES}, got {hp['negatives']!r}")
        unknown = set(hp["query_features"]) - set(QUERY_FEATURES)
        if unknown:
            raise ValueError(f"retrieval hyperparameter 'query_features': {sorted(unknown)} "
                             f"are not retrieval inputs {QUERY_FEATURES}")
        self.negatives = hp["negatives"]
        self.equal_users = hp["equal_users"]
        self.mask_history = hp["mask_history"]
        self.item_frequency = tf.constant(item_frequency, tf.float32)
        # transformed candidate features of every catalog item, and each item index's
        # catalog row (the softmax label)
        self.catalog = catalog
        indices = catalog[transformed_name("item_id")].numpy().reshape(-1)
        row = np.zeros(sizes["item_id"], np.int64)
        row[indices[::-1]] = np.arange(len(indices))[::-1]  # first row of each index
        self.catalog_row = tf.constant(row)
        layers = (*hp["hidden_units"], hp["embedding_dim"])
        self.query_tower = towers.Tower(tuple(hp["query_features"]), sizes, layers, hp["l2"],
                                        history_dropout=hp["history_dropout"],
                                        id_dim=hp["id_embedding_dim"], name="query_tower")
        self.candidate_tower = towers.Tower(CANDIDATE_FEATURES, sizes, layers, hp["l2"],
                                            id_dim=hp["id_embedding_dim"],
                                            name="candidate_tower")
        self.item_bias = tf.keras.layers.Embedding(sizes["item_id"], 1,
                                                   embeddings_initializer="zeros",
                                                   name="item_bias")
        # Metrics over the whole catalog are slow; the retrieval evaluator computes them.
        self.task = tfrs.tasks.Retrieval()

    def query(self, features, training: bool = False) -> tf.Tensor:
        embedding = self.query_tower(features, training=training)
        return tf.concat([embedding, tf.ones_like(embedding[:, :1])], axis=1)

    def candidate(self, features) -> tf.Tensor:
        bias = self.item_bias(tf.reshape(features[transformed_name("item_id")], [-1]))
        return tf.concat([self.candidate_tower(features), bias], axis=1)

    def _without_history(self, logits: tf.Tensor, features: dict) -> tf.Tensor:
        """Logits with the user's other rated items out of the softmax: serving removes
        what the user rated, so the model need not rank them below the target."""
        history = features[transformed_name("rated_items")]
        rows = tf.gather(self.catalog_row, tf.maximum(history, 0))
        batch = tf.broadcast_to(tf.range(tf.shape(history)[0], dtype=tf.int64)[:, None],
                                tf.shape(history))
        valid = history >= 0
        positions = tf.stack([tf.boolean_mask(batch, valid), tf.boolean_mask(rows, valid)], 1)
        rated = tf.scatter_nd(positions, tf.ones(tf.shape(positions)[:1]),
                              tf.shape(logits, out_type=tf.int64))
        return tf.where(rated > 0, tf.constant(-1e9, logits.dtype), logits)

    def compute_loss(self, features, training=False):
        item = tf.reshape(features[transformed_name("item_id")], [-1])
        if self.negatives == "catalog":
            logits = tf.matmul(self.query(features, training), self.candidate(self.catalog),
                               transpose_b=True)
            if self.mask_history:
                logits = self._without_history(logits, features)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.gather(self.catalog_row, item), logits)
            if self.equal_users:  # each user's ratings weigh 1 / (its history + 1)
                history = features[transformed_name("rated_items")]
                weight = 1.0 / (tf.reduce_sum(tf.cast(history >= 0, tf.float32), 1) + 1.0)
                return tf.reduce_sum(loss * weight) / tf.reduce_sum(weight)
            return tf.reduce_mean(loss)
        probability = tf.gather(self.item_frequency, item)
        return self.task(self.query(features, training), self.candidate(features),
                         candidate_sampling_probability=probability,
                         compute_metrics=not training)


def read_catalog(items_file: str) -> dict[str, list]:
    """Raw item features of every catalog item (the training set's items.parquet)."""
    with tf.io.gfile.GFile(items_file, "rb") as f:  # GFile: also gs:// and s3://
        items = pd.read_parquet(io.BytesIO(f.read()))
    return {name: [feature_spec.coerce(name, v) for v in items[name]]
            for name in CANDIDATE_FEATURES}


class RetrievalExport(tf.Module):
    """What gets saved: Transform layer, query tower and the top-k index."""

    def __init__(self, tft_layer, model: TwoTower, catalog: dict[str, list]):
        super().__init__()
        self.tft_layer = tft_layer
        self.model = model
        raw = inputs.raw_tensors(catalog)
        candidates = model.candidate(tft_layer(inputs.as_column(raw)))
        self.index = tfrs.layers.factorized_top_k.BruteForce(k=100)
        self.index.index(candidates, identifiers=raw["item_id"])
        self.num_items = len(catalog["item_id"])
        self.item_ids, self.candidate_embeddings = catalog["item_id"], candidates.numpy()

    def query_embedding(self, **raw):
        return self.model.query(self.tft_layer(inputs.as_column(raw)))

    def top_k(self, k, **raw):
        k = tf.minimum(k, self.num_items)
        scores, item_ids = self.index(self.query_embedding(**raw), k=k)
        return {"item_ids": item_ids, "scores": scores}

    def signatures(self) -> dict:
        raw_inputs = inputs.raw_input_signature(QUERY_FEATURES)
        top_k = tf.function(lambda k, **raw: self.top_k(k, **raw))
        embed = tf.function(lambda **raw: {"embedding": self.query_embedding(**raw)})
        return {
            "serving_default": top_k.get_concrete_function(
                k=tf.TensorSpec([], tf.int32, name="k"), **raw_inputs),
            "query_embedding": embed.get_concrete_function(**raw_inputs),
        }


def build(hp: dict, fn_args, tf_transform_output):
    """The compiled model and its training and evaluation data for these hyperparameters
    (run_fn, and each of the Tuner's trials)."""
    sizes = towers.cardinalities(tf_transform_output)
    train = inputs.dataset(fn_args, fn_args.train_files, tf_transform_output,
                           hp["batch_size"])
    evaluation = inputs.dataset(fn_args, fn_args.eval_files, tf_transform_output,
                                hp["batch_size"], shuffle=False)

    frequency = item_frequencies(
        inputs.dataset(fn_args, fn_args.train_files, tf_transform_output, hp["batch_size"],
                       shuffle=False), sizes["item_id"])
    catalog = read_catalog(fn_args.custom_config["catalog"])
    tft_layer = tf_transform_output.transform_features_layer()
    model = TwoTower(sizes, hp, frequency,
                     tft_layer(inputs.as_column(inputs.raw_tensors(catalog))))
    model.compile(optimizer=OPTIMIZERS[hp["optimizer"]](hp["learning_rate"]))
    return model, train, evaluation


def run_fn(fn_args) -> None:
    strategy = distribution.strategy()  # first: it sets up TensorFlow's runtime
    seed = seeding.seed_everything(fn_args)
    hp = hyperparameters.for_training(DEFAULTS, fn_args, "retrieval")
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    with strategy.scope():
        model, train, evaluation = build(hp, fn_args, tf_transform_output)
    fitting.fit(model, train, evaluation, fn_args)

    catalog = read_catalog(fn_args.custom_config["catalog"])
    export = RetrievalExport(tf_transform_output.transform_features_layer(), model, catalog)
    distribution.save_model(export, fn_args.serving_model_dir, export.signatures(),
                            feature_spec.MODEL_NAMES.retrieval)
    if distribution.is_chief():
        write_candidate_index(export, fn_args.serving_model_dir, seed)
    if hp["candidate_sources"] and distribution.is_chief():
        write_candidate_sources(fn_args.custom_config["catalog"], fn_args.serving_model_dir,
                                seed)


def write_candidate_index(export: RetrievalExport, model_dir: str, seed: int) -> None:
    """The version's candidate embeddings and IVF index into assets.extra/ (written
    locally, then copied: the model directory may be gs:// or s3://)."""
    target = os.path.join(model_dir, "assets.extra", candidate_index.DIRECTORY)
    with tempfile.TemporaryDirectory() as local:
        meta = candidate_index.write(local, export.item_ids, export.candidate_embeddings,
                                     seed=seed)
        tf.io.gfile.makedirs(target)
        for name in os.listdir(local):
            tf.io.gfile.copy(os.path.join(local, name), os.path.join(target, name),
                             overwrite=True)
    print(f"candidate index: {meta}")


def write_candidate_sources(items_file: str, model_dir: str, seed: int) -> None:
    """The version's candidate sources, from the training set the catalog belongs to
    (its ratings.parquet), into the SavedModel's assets.extra/ (TF Serving ignores it)."""
    ratings_file = os.path.join(os.path.dirname(items_file), "ratings.parquet")
    with tf.io.gfile.GFile(ratings_file, "rb") as f:
        ratings = pd.read_parquet(io.BytesIO(f.read()),
                                  columns=["user_id", "item_id", "timestamp"])
    with tf.io.gfile.GFile(items_file, "rb") as f:
        catalog = pd.read_parquet(io.BytesIO(f.read()), columns=["item_id", "genres"])
    found, held_out = sources.build(ratings.astype({"user_id": str, "item_id": str}),
                                    catalog.astype({"item_id": str}), progress=print,
                                    seed=seed)
    if found is None:
        return
    target = os.path.join(model_dir, "assets.extra")
    tf.io.gfile.makedirs(target)
    found.save(os.path.join(target, candidate_sources.ARTIFACT))
    if held_out is not None:  # for the evaluator's gate; beside the SavedModel, not pushed
        np.savez_compressed(os.path.join(os.path.dirname(model_dir.rstrip("/")),
                                         sources.VALIDATION_FILE), **held_out)
