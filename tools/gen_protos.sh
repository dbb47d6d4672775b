#!/usr/bin/env bash
# Generates Python stubs for libs/protos next to the .proto files (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/serving/bin/python}
"$PY" -m grpc_tools.protoc -I libs/protos --python_out=libs/protos --pyi_out=libs/protos \
  --grpc_python_out=libs/protos libs/protos/recsys/v1/*.proto libs/protos/recsys/tfserving/*.proto
touch libs/protos/recsys/__init__.py libs/protos/recsys/v1/__init__.py \
  libs/protos/recsys/tfserving/__init__.py
