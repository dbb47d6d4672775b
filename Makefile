# Every command a developer or operator needs; `make help` lists them.
WORKDIR ?= var
DATA_DIR ?=
TRAINING_PY := .venv/training/bin/python
SERVING_PY := .venv/serving/bin/python
export PYTHONPATH := $(CURDIR):$(CURDIR)/libs/protos
export TF_CPP_MIN_LOG_LEVEL := 3

.DEFAULT_GOAL := help
.PHONY: help setup protos train train-plain tune features stream serve demo test lint test-unit test-training test-integration loadtest loadtest-shadow bench-scale bench-data bench-features bench-models bench-e2e analyze simulate-ab drift quality loop loop-demo images k8s-check pipeline-spec clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'
	@echo "  variables: WORKDIR=$(WORKDIR) (outputs), DATA_DIR= (MovieLens directory)"

setup:  ## create both pinned environments and generate the gRPC stubs
	@tools/setup.sh

protos:  ## regenerate the gRPC stubs from libs/protos
	@PYTHON=$(SERVING_PY) tools/gen_protos.sh

features: setup  ## land data, Beam feature job, Feast apply + materialize, point-in-time training set
	$(TRAINING_PY) -m pipelines.features.batch_job --workdir $(WORKDIR) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
	$(SERVING_PY) -m pipelines.features.ingest --workdir $(WORKDIR)
	$(SERVING_PY) -m pipelines.features.training_set --workdir $(WORKDIR)

train: features  ## the TFX pipeline on the newest training set (MovieLens if present, else generated)
	$(TRAINING_PY) -m pipelines.training.run --workdir $(WORKDIR)

train-plain: setup  ## train without TFX (plain Keras script, timed), to weigh the pipeline's cost
	@test -n "$$(ls $(WORKDIR)/data/training_sets 2>/dev/null)" || $(MAKE) features
	$(TRAINING_PY) -m pipelines.training.plain --workdir $(WORKDIR)/plain --training-set $(WORKDIR)/data/training_sets
tune: features  ## the pipeline with hyperparameter search (budget: tuning_* in pipeline.yaml); later `make train` runs reuse the best
	$(TRAINING_PY) -m pipelines.training.run --workdir $(WORKDIR) --set tune=true

stream: setup  ## stream worker: rating events on a Redis Stream -> online features (REDIS=host:port)
	$(SERVING_PY) -m pipelines.features.stream --set workdir=$(WORKDIR) $(if $(REDIS),--set redis=$(REDIS))

serve: setup  ## start the model server and the three services in the foreground (Ctrl-C stops)
	@test -f $(WORKDIR)/features/serving_summary.json || $(MAKE) features
	$(SERVING_PY) -m tools.stack --workdir $(WORKDIR)

demo: train  ## set up, train, ingest features, serve, print recommendations
	$(SERVING_PY) -m tools.demo --workdir $(WORKDIR)

test: setup lint test-unit test-training test-integration  ## all tests (what CI runs)

lint:  ## static checks (ruff)
	.venv/serving/bin/ruff check --quiet .

test-unit:  ## unit tests (serving environment)
	$(SERVING_PY) -m pytest tests/unit -q

test-training:  ## unit tests of the pipeline's module files (training environment)
	$(TRAINING_PY) -m pytest tests/training -q -p no:cacheprovider

test-integration:  ## train small models through TFX, start all four processes, call them
	$(SERVING_PY) -m pytest tests/integration -q --durations=30

loadtest: setup  ## Locust against the whole stack on 127.0.0.1 (bounded), prints RPS and latency
	@test -n "$$(ls $(WORKDIR)/model_repo/*/*/saved_model.pb 2>/dev/null)" || $(MAKE) train
	@test -f $(WORKDIR)/features/serving_summary.json || $(MAKE) features
	$(SERVING_PY) -m load_tests.run --workdir $(WORKDIR)

loadtest-shadow: setup  ## what shadow traffic costs the client: Recommend p50/p99 with the shadow off and at 100%
	@test -n "$$(ls $(WORKDIR)/model_repo/*/*/saved_model.pb 2>/dev/null)" || $(MAKE) train
	$(SERVING_PY) -m load_tests.shadow --workdir $(WORKDIR)

bench-scale: setup  ## retrieval search vs catalog size (exact vs IVF, 10k-1M items) and the stack under rising load (reports/scale)
	@test -n "$$(ls $(WORKDIR)/model_repo/*/*/saved_model.pb 2>/dev/null)" || $(MAKE) train
	$(SERVING_PY) -m load_tests.scale --workdir $(WORKDIR) $(SCALE_ARGS)

bench-data: setup  ## the data pipeline at 100k, 1M and 20M events: generator, Beam job, materialization (Redis), training set; rows/s and peak RSS (reports/data_scale)
	$(SERVING_PY) -m pipelines.features.benchmark_at_scale --workdir $(WORKDIR)/data_scale $(DATA_SCALE_ARGS)

bench-features: setup  ## feature store benchmark: batch job, materialization, reads (in process and via ranking), training sets, stream
	@test -n "$$(ls $(WORKDIR)/model_repo/ranking/*/saved_model.pb 2>/dev/null)" || $(MAKE) train
	$(SERVING_PY) -m pipelines.features.benchmark --workdir $(WORKDIR)

bench-models: setup  ## model quality on the published MovieLens protocols vs baselines (table, curves, report)
	@test -n "$$(ls $(WORKDIR)/data/training_sets 2>/dev/null)" || $(MAKE) features
	$(SERVING_PY) -m pipelines.training.benchmark --workdir $(WORKDIR)/benchmark --training-set $(WORKDIR)/data/training_sets

bench-e2e: setup  ## replay: train before each cut, serve, ask Recommend about the users after it, vs popular/trending/EASE (reports/replay)
	$(SERVING_PY) -m pipelines.replay.run --workdir $(WORKDIR)/replay --out reports/replay $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(REPLAY_ARGS)

analyze:  ## analyse an experiment: EXPOSURES=logs OUTCOMES=events EXPERIMENT=key [CONFIG=the router's experiment file, default var/experiments.yaml]
	@test -n "$(EXPOSURES)" -a -n "$(OUTCOMES)" -a -n "$(EXPERIMENT)" || { echo "usage: make analyze EXPOSURES=... OUTCOMES=... EXPERIMENT=..."; exit 2; }
	$(SERVING_PY) -m pipelines.experiments.analyze --exposures '$(EXPOSURES)' --outcomes '$(OUTCOMES)' --experiment $(EXPERIMENT) $(if $(CONFIG),--config $(CONFIG),$(if $(wildcard $(WORKDIR)/experiments.yaml),--config $(WORKDIR)/experiments.yaml)) --out reports/experiments/$(EXPERIMENT)

simulate-ab:  ## prove the experiment analysis on simulated MovieLens users: power, A/A FPR with and without peeking, SRM
	$(SERVING_PY) -m pipelines.experiments.simulation $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --out reports/experiments/simulation

drift:  ## drift check: recent features and served scores vs the served model's training set [CHECKS=features,label,predictions PUSHGATEWAY=host:port DRIFT_ARGS=...]
	$(SERVING_PY) -m pipelines.monitoring.check --workdir $(WORKDIR) $(if $(CHECKS),--checks $(CHECKS)) $(if $(PUSHGATEWAY),--pushgateway $(PUSHGATEWAY)) --out reports/drift $(DRIFT_ARGS)

quality:  ## online quality: exposures joined with outcomes by version, arm and source; delayed-label accuracy vs each version's promise [PUSHGATEWAY=host:port QUALITY_ARGS=...]
	$(SERVING_PY) -m pipelines.monitoring.quality_check --workdir $(WORKDIR) $(if $(PUSHGATEWAY),--pushgateway $(PUSHGATEWAY)) --out reports/quality $(QUALITY_ARGS)

loop-demo:  ## the loop's scenario, simulated on MovieLens users: taste shifts, the retrained model's canary is promoted, a worse one rolled back (10+10 seeded runs, timeline in reports/loop-demo)
	$(SERVING_PY) -m pipelines.loop.scenario $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --out reports/loop-demo

loop:  ## one step of the loop's controller: retrain when the drift or quality report or the schedule says so, then canary and promote what it pushed [LOOP_ARGS='--router 127.0.0.1:50051 ...'; pause/resume/take-over/status/timeline: README]
	$(SERVING_PY) -m pipelines.loop.controller --dir $(WORKDIR)/loop tick --workdir $(WORKDIR) $(if $(wildcard reports/drift/drift.json),--drift-report reports/drift/drift.json) $(if $(wildcard reports/quality/quality.json),--quality-report reports/quality/quality.json) $(LOOP_ARGS)

images:  ## docker build every image in BUILD (tools/images.py; without docker it lists the commands)
	$(SERVING_PY) -m tools.images

k8s-check:  ## render every overlay, validate against the Kubernetes 1.32 schema, apply the workload policy (no cluster needed)
	$(SERVING_PY) -m tools.manifests

PIPELINE_IMAGE = $(shell $(SERVING_PY) -c "from tools.build_manifest import load; print(load()['pipelines/training'].image)")
pipeline-spec: setup  ## compile the TFX pipeline for Kubeflow Pipelines / Vertex AI: STORE=gs://bucket TRAINING_SET=<store path of a span> -> $(WORKDIR)/k8s/recsys_pipeline.json
	@test -n "$(STORE)" -a -n "$(TRAINING_SET)" || { echo "error: set STORE=gs://bucket[/prefix] and TRAINING_SET=\$$STORE/data/training_sets/span-S" >&2; exit 2; }
	$(TRAINING_PY) -m pipelines.training.compile --image $(PIPELINE_IMAGE) --workdir $(STORE)/pipeline --training-set $(TRAINING_SET) --out $(WORKDIR)/k8s/recsys_pipeline.json

clean:  ## remove outputs (keeps the environments)
	rm -rf $(WORKDIR) reports
