#!/usr/bin/env bash
# Creates the two pinned environments from their lock files (skipped when up to date)
# and generates the gRPC stubs.
#   .venv/training  Python 3.10: TFX 1.16, TF 2.16, Beam, TFRS   (requirements/training.lock)
#   .venv/serving   Python 3.11+: TF 2.21, gRPC, Feast, Locust    (requirements/serving.lock)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  if command -v python3.10 >/dev/null 2>&1; then command -v python3.10; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | sort -rV); do
      PYENV_VERSION=$v pyenv which python 2>/dev/null && return
    done
  fi
  return 1
}

find_python_serving() {
  local p
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$p"; return
    fi
  done
  return 1
}

make_env() {  # name python lockfile
  local name=$1 python=$2 lock=$3 dir=.venv/$1
  local stamp; stamp=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ -f "$dir/.lock.sha256" ] && [ "$(cat "$dir/.lock.sha256")" = "$stamp" ]; then
    echo "setup: $name environment is up to date"; return
  fi
  echo "setup: creating the $name environment with $("$python" --version) (a few minutes)"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
  echo "$stamp" > "$dir/.lock.sha256"
  echo "setup: $name environment ready"
}

PY310=$(find_python310) || {
  echo "error: Python 3.10 not found (TFX 1.16 needs it). Install it, e.g." >&2
  echo "  pyenv install 3.10.13     or     apt-get install python3.10 python3.10-venv" >&2
  exit 1
}
PY311=$(find_python_serving) || {
  echo "error: Python 3.11 not found for the serving environment; install python3.11" >&2
  exit 1
}

start=$(date +%s)
make_env training "$PY310" requirements/training.lock > .venv-training.log 2>&1 &
training_pid=$!
make_env serving "$PY311" requirements/serving.lock
if ! wait $training_pid; then cat .venv-training.log >&2; exit 1; fi
cat .venv-training.log; rm -f .venv-training.log
PYTHON=.venv/serving/bin/python tools/gen_protos.sh
echo "setup: done in $(( $(date +%s) - start ))s"
