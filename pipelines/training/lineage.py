"""Runs and model lineage from ML Metadata (training environment).

  python -m pipelines.training.lineage runs [--workdir var]
  python -m pipelines.training.lineage model retrieval|ranking [VERSION] [--workdir var]
                                       [--json]
  python -m pipelines.training.lineage tuning [retrieval|ranking] [--workdir var] [--json]

`model` walks back from a pushed version: push time, blessing and the evaluation behind
it, the trainer's parameters and hyperparameters (with the hyperparameter search they
came from), the code (git commit, uncommitted changes, the lock files' hashes, the image),
the Transform graph, the schema, the examples' span with the training set's content hash
(from the span's snapshot.json), and, when the loop's controller retrained
it, why (`retrained_by_loop`: the triggers and their reports, from `--loop-dir`'s audit
log, default WORKDIR/loop) and what its canary decided (`canary_by_loop`: promoted or
rolled back, why, with the figures). `tuning` lists the hyperparameter
searches: run, trials and their objective, the best values.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipelines.loop import state as loop_state

INPUT, OUTPUT = 3, 4  # metadata_store_pb2.Event.Type
BEST_HYPERPARAMETERS_FILE = "best_hyperparameters.txt"  # written by TFX's Tuner
TUNER_RESULTS_FILE = "tuner_results.json"
HYPERPARAMETERS_RECORD = "hyperparameters.json"  # models/hyperparameters.py, per Trainer


def open_store(workdir: str):
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    path = os.path.join(workdir, "metadata.sqlite")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no ML Metadata; run the pipeline first")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _properties(item) -> dict:
    out = {k: _value(v) for k, v in item.properties.items()}
    out.update({k: _value(v) for k, v in item.custom_properties.items()})
    return out


def _read_json(directory: str, name: str):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _time(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).isoformat(
        timespec="seconds")


class Lineage:
    def __init__(self, store):
        self.store = store

    def _linked(self, events, kind) -> dict[str, list]:
        by_key: dict[str, list] = {}
        for event in events:
            if event.type == kind:
                key = event.path.steps[0].key if event.path.steps else ""
                by_key.setdefault(key, []).append(event.artifact_id)
        return {key: self.store.get_artifacts_by_id(ids) for key, ids in by_key.items()}

    def inputs(self, execution) -> dict[str, list]:
        return self._linked(self.store.get_events_by_execution_ids([execution.id]), INPUT)

    def producer(self, artifact):
        events = [e for e in self.store.get_events_by_artifact_ids([artifact.id])
                  if e.type == OUTPUT]
        return self.store.get_executions_by_id([events[0].execution_id])[0] if events else None

    def node(self, execution) -> str:
        contexts = self.store.get_contexts_by_execution(execution.id)
        return next((c.name.split(".")[-1] for c in contexts
                     if c.type_id == self.store.get_context_type("node").id), "")

    def run(self, execution) -> str:
        """The pipeline run (its run id) an execution belonged to."""
        run_type = self.store.get_context_type("pipeline_run").id
        return next((c.name for c in self.store.get_contexts_by_execution(execution.id)
                     if c.type_id == run_type), "")

    def search(self, best_hyperparameters) -> dict:
        """The Tuner execution that produced a HyperParameters artifact, and its result."""
        tuner = self.producer(best_hyperparameters)
        outputs = self._linked(self.store.get_events_by_execution_ids([tuner.id]), OUTPUT)
        results = outputs.get("tuner_results", [])
        config = _read_json(best_hyperparameters.uri, BEST_HYPERPARAMETERS_FILE) or {}
        return {"tuner": self.node(tuner), "run": self.run(tuner),
                "finished": _time(tuner.last_update_time_since_epoch),
                "artifact_id": best_hyperparameters.id, "uri": best_hyperparameters.uri,
                "best": config.get("values", {}),
                "trials": (_read_json(results[0].uri, TUNER_RESULTS_FILE) or []) if results
                else []}

    def searches(self, model: str = "") -> list[dict]:
        found = [self.search(a) for a in
                 self.store.get_artifacts_by_type("HyperParameters")]
        return sorted((s for s in found if not model or s["tuner"] == f"{model}_tuner"),
                      key=lambda s: s["artifact_id"])

    def hyperparameters(self, trainer, trainer_inputs) -> dict:
        """What a Trainer trained with, and the search its tuned values came from."""
        outputs = self._linked(self.store.get_events_by_execution_ids([trainer.id]), OUTPUT)
        runs = outputs.get("model_run", [])
        used = (_read_json(runs[0].uri, HYPERPARAMETERS_RECORD) or {}) if runs else {}
        tuned = trainer_inputs.get("hyperparameters", [])
        used["search"] = self.search(tuned[0]) if tuned else None
        return used

    def pushed(self, model: str) -> list:
        pushed = [a for a in self.store.get_artifacts_by_type("PushedModel")
                  if _properties(a).get("pushed")
                  and os.path.basename(os.path.dirname(
                      _properties(a).get("pushed_destination", ""))) == model]
        return sorted(pushed, key=lambda a: int(_properties(a)["pushed_version"]))

    def model(self, name: str, version: str = "") -> dict:
        pushed = self.pushed(name)
        if version:
            pushed = [a for a in pushed if _properties(a)["pushed_version"] == version]
        if not pushed:
            raise LookupError(f"no pushed {name} model" + (f" version {version}"
                                                           if version else ""))
        artifact = pushed[-1]
        pusher = self.producer(artifact)
        pusher_inputs = self.inputs(pusher)
        blessing = pusher_inputs["model_blessing"][0]
        trained = pusher_inputs["model"][0]
        trainer = self.producer(trained)
        trainer_inputs = self.inputs(trainer)
        transformed = trainer_inputs["examples"][0]
        transform = self.producer(transformed)
        raw_examples = self.inputs(transform)["examples"][0]
        example_gen = self.producer(raw_examples)
        span = _properties(raw_examples).get("span")
        input_base = _properties(example_gen).get("input_base", "")
        snapshot_path = os.path.join(input_base, f"span-{span}", "snapshot.json")
        snapshot = json.load(open(snapshot_path)) if os.path.exists(snapshot_path) else {}
        trainer_properties = _properties(trainer)
        gates = self.gates(blessing)
        evaluator = self.producer(blessing)
        return {
            "model": name, "version": _properties(artifact)["pushed_version"],
            "pushed_at": _time(artifact.create_time_since_epoch),
            "destination": _properties(artifact)["pushed_destination"],
            "blessing": {k: v for k, v in _properties(blessing).items()
                         if k not in ("current_model", "state")},
            "evaluator": self.node(evaluator),
            "gates": [{"node": self.node(g), **_properties(b)} for g, b in gates],
            "evaluation": next((e for e in (self.evaluation(g) for g, _ in gates) if e), {}),
            "model_card": self.model_card(artifact),
            "trainer": {"node": self.node(trainer),
                        "train_args": json.loads(trainer_properties.get("train_args") or "{}"),
                        "custom_config": json.loads(
                            trainer_properties.get("custom_config") or "{}"),
                        "hyperparameters": self.hyperparameters(trainer, trainer_inputs)},
            "code": json.loads(trainer_properties.get("custom_config") or "{}").get("code"),
            "transform_graph": trainer_inputs["transform_graph"][0].uri,
            "schema": trainer_inputs["schema"][0].uri,
            "data": {"span": span, "examples": raw_examples.uri,
                     "training_set": snapshot.get("training_set"),
                     "training_set_sha256": snapshot.get("content_sha256"),
                     "split": snapshot.get("split"), "train_rows": snapshot.get("train_rows"),
                     "eval_rows": snapshot.get("eval_rows")},
        }

    def gates(self, blessing) -> list[tuple]:
        """(execution, blessing) of every gate the model went through, first gate first:
        each later gate names the blessing it followed as its `upstream_blessing`."""
        chain = []
        while blessing is not None:
            gate = self.producer(blessing)
            chain.insert(0, (gate, blessing))
            blessing = (self.inputs(gate).get("upstream_blessing") or [None])[0]
        return chain

    def model_card(self, pushed) -> str | None:
        """Where the model card written after this push is (model_card_writer.py)."""
        for event in self.store.get_events_by_artifact_ids([pushed.id]):
            if event.type != INPUT:
                continue
            consumer = self.store.get_executions_by_id([event.execution_id])[0]
            outputs = self._linked(self.store.get_events_by_execution_ids([consumer.id]),
                                   OUTPUT)
            for card in outputs.get("card", []):
                return _properties(card).get("model_card")
        return None

    def evaluation(self, evaluator) -> dict:
        """TFMA's overall metrics, when the evaluator is TFMA's (the ranking model's)."""
        outputs = self._linked(self.store.get_events_by_execution_ids([evaluator.id]), OUTPUT)
        if "evaluation" not in outputs:
            return {}
        import tensorflow_model_analysis as tfma

        result = tfma.load_eval_result(outputs["evaluation"][0].uri)
        return {getattr(k, "name", str(k)): v.get("doubleValue")
                for k, v in (result.get_metrics_for_slice() or {}).items()}

    def runs(self) -> list[dict]:
        out = []
        for context in self.store.get_contexts_by_type("pipeline_run"):
            executions = self.store.get_executions_by_context(context.id)
            pushed = []
            for execution in executions:
                events = self.store.get_events_by_execution_ids([execution.id])
                for artifacts in self._linked(events, OUTPUT).values():
                    pushed += [f"{os.path.basename(os.path.dirname(p['pushed_destination']))}"
                               f" v{p['pushed_version']}" for p in map(_properties, artifacts)
                               if p.get("pushed")]
            out.append({"run": context.name, "started": _time(context.create_time_since_epoch),
                        "executions": len(executions), "pushed": pushed})
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var")
    parser.add_argument("--json", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("runs", help="every pipeline run, what it pushed")
    model = commands.add_parser("model", help="lineage of a pushed model version")
    model.add_argument("name", choices=["retrieval", "ranking"])
    model.add_argument("version", nargs="?", default="", help="default: the newest pushed")
    model.add_argument("--loop-dir", default="",
                       help="the loop controller's directory (default WORKDIR/loop)")
    tuning = commands.add_parser("tuning", help="hyperparameter searches and their results")
    tuning.add_argument("name", nargs="?", default="", choices=["", "retrieval", "ranking"])
    args = parser.parse_args(argv)
    try:
        lineage = Lineage(open_store(args.workdir))
        if args.command == "runs":
            result = lineage.runs()
        elif args.command == "tuning":
            result = lineage.searches(args.name)
        else:
            result = lineage.model(args.name, args.version)
            loop_dir = Path(args.loop_dir or os.path.join(args.workdir, "loop"))
            result["retrained_by_loop"] = loop_state.retraining_of(
                loop_dir, args.name, int(result["version"]))
            result["canary_by_loop"] = loop_state.canary_of(
                loop_dir, args.name, int(result["version"]))
    except (FileNotFoundError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json or args.command == "model":
        print(json.dumps(result, indent=2, default=str))
    elif args.command == "tuning":
        for search in result:
            best = " ".join(f"{k}={v}" for k, v in search["best"].items())
            print(f"{search['run']}  {search['tuner']}  finished {search['finished']}  "
                  f"{len(search['trials'])} trials  best: {best}")
            for trial in search["trials"]:  # best first
                values = " ".join(f"{k}={v}" for k, v in trial.items()
                                  if k not in ("trial_id", "score"))
                print(f"    trial {trial['trial_id']}  score {trial['score']:.4f}  {values}")
        if not result:
            print("no hyperparameter search recorded")
    else:
        for run in result:
            print(f"{run['run']}  started {run['started']}  {run['executions']} executions  "
                  f"pushed: {', '.join(run['pushed']) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
