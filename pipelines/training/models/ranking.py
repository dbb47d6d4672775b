"""Ranking model: predicts a user's rating of an item (DCN), TFX Trainer `run_fn`.

Inputs are user, item and context features; a cross layer learns their interactions,
on top of the training mean and a bias per user and per item (the biased baseline the
network then corrects). Embeddings are L2-regularized: ids overfit within two epochs.
Exported signatures:
  serving_default   raw feature tensors -> predicted_rating (what the ranking service calls)
  serving_examples  serialized tf.Examples -> predicted_rating (what the Evaluator feeds)
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from libs import feature_spec
from libs.feature_spec import transformed_name
from pipelines.training.models import (distribution, fitting, hyperparameters, inputs,
                                       seeding, towers)

INPUT_FEATURES = feature_spec.RANKING_INPUTS
OUTPUT_KEY = "predicted_rating"
# batch 512 and 750 steps (pipeline.yaml): about 5 epochs of MovieLens 100K. Longer runs
# keep improving the random split and overfit the time split's users; L2 1e-3 holds both
# (full-eval RMSE, random split 0.906-0.907 over 2 seeds, time split 1.022-1.025 over 5
# against the item-mean baseline's 1.028; with 500 steps and L2 5e-4: 0.917, 1.020-1.024)
DEFAULTS = {"batch_size": 512, "learning_rate": 0.01, "hidden_units": [128, 64],
            "l2": 1e-3, "dropout": 0.3}


class RatingModel(distribution.ReplicaScaledLoss, tfrs.Model):
    def __init__(self, sizes: dict[str, int], hp: dict, mean_rating: float):
        super().__init__()
        self.mean = mean_rating
        self.encoder = towers.FeatureEncoder(INPUT_FEATURES, sizes, l2=hp["l2"])
        regularizer = tf.keras.regularizers.L2(hp["l2"])
        self.biases = {n: tf.keras.layers.Embedding(sizes[n], 1, embeddings_initializer="zeros",
                                                    embeddings_regularizer=regularizer,
                                                    name=f"{n}_bias")
                       for n in ("user_id", "item_id")}
        self.cross = tfrs.layers.dcn.Cross()
        hidden = []
        for n in hp["hidden_units"]:
            hidden += [tf.keras.layers.Dense(n, activation="relu"),
                       tf.keras.layers.Dropout(hp["dropout"])]
        self.mlp = tf.keras.Sequential(hidden + [tf.keras.layers.Dense(1)])
        self.task = tfrs.tasks.Ranking(
            # the mean over the batch all the same (1-D labels); Keras refuses its
            # automatic reduction under a distribution strategy
            loss=tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.NONE),
            metrics=[tf.keras.metrics.RootMeanSquaredError()])

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        x = self.encoder(features)
        bias = sum(tf.reshape(layer(tf.reshape(features[transformed_name(n)], [-1])), [-1])
                   for n, layer in self.biases.items())
        return self.mean + bias + tf.squeeze(self.mlp(self.cross(x, x), training=training),
                                             axis=1)

    def compute_loss(self, features, training=False):
        labels = features[transformed_name(feature_spec.LABEL)]
        return self.task(labels=labels, predictions=self(features, training=training))


class RankingExport(tf.Module):
    def __init__(self, tft_layer, model: RatingModel, raw_feature_spec: dict):
        super().__init__()
        self.tft_layer = tft_layer
        self.model = model
        self.raw_feature_spec = {k: v for k, v in raw_feature_spec.items()
                                 if k in INPUT_FEATURES}

    def predict(self, **raw):
        return {OUTPUT_KEY: self.model(self.tft_layer(inputs.as_column(raw)))}

    def predict_examples(self, examples):
        parsed = tf.io.parse_example(examples, self.raw_feature_spec)
        return self.predict(**{k: tf.reshape(v, [-1]) for k, v in parsed.items()})

    def signatures(self) -> dict:
        serve = tf.function(lambda **raw: self.predict(**raw))
        parse = tf.function(lambda examples: self.predict_examples(examples))
        return {
            "serving_default": serve.get_concrete_function(
                **inputs.raw_input_signature(INPUT_FEATURES)),
            "serving_examples": parse.get_concrete_function(
                tf.TensorSpec([None], tf.string, name="examples")),
        }


def build(hp: dict, fn_args, tf_transform_output):
    """The compiled model and its training and evaluation data for these hyperparameters
    (run_fn, and each of the Tuner's trials)."""
    train = inputs.dataset(fn_args, fn_args.train_files, tf_transform_output,
                           hp["batch_size"])
    evaluation = inputs.dataset(fn_args, fn_args.eval_files, tf_transform_output,
                                hp["batch_size"], shuffle=False)

    label = transformed_name(feature_spec.LABEL)
    total = count = 0.0
    for batch in inputs.dataset(fn_args, fn_args.train_files, tf_transform_output,
                                hp["batch_size"], shuffle=False):
        total += float(tf.reduce_sum(batch[label]))
        count += float(tf.size(batch[label]))
    model = RatingModel(towers.cardinalities(tf_transform_output), hp, total / count)
    # cosine decay to zero: with a constant rate the eval RMSE jumps by +-0.01 between
    # chunks; decayed, training ends in a minimum rather than wherever it stopped
    learning_rate = tf.keras.optimizers.schedules.CosineDecay(hp["learning_rate"],
                                                              fn_args.train_steps)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    return model, train, evaluation


def run_fn(fn_args) -> None:
    strategy = distribution.strategy()  # first: it sets up TensorFlow's runtime
    seeding.seed_everything(fn_args)
    hp = hyperparameters.for_training(DEFAULTS, fn_args, "ranking")
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    with strategy.scope():
        model, train, evaluation = build(hp, fn_args, tf_transform_output)
    fitting.fit(model, train, evaluation, fn_args)

    export = RankingExport(tf_transform_output.transform_features_layer(), model,
                           tf_transform_output.raw_feature_spec())
    distribution.save_model(export, fn_args.serving_model_dir, export.signatures(),
                            feature_spec.MODEL_NAMES.ranking)
