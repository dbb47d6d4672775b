#!/usr/bin/env bash
# Creates the two pinned environments from their lock files (skipped when up to date)
# and generates the gRPC stubs.
#   .venv/training  Python 3.10: TFX 1.16, TF 2.16, Beam, TFRS   (requirements/training.lock)
#   .venv/serving   Python 3.11+: TF 2.21, gRPC, Feast, Locust    (requirements/serving.lock)
set -euo pipefail
cd "$(dirname "$0")/.."

is_version() {  # python major.minor: runs it, since a pyenv shim exists for every version
  "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$2'.split('.'))))" \
    >/dev/null 2>&1
}

find_python() {  # major.minor
  local p v
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E "^$1(\.|\$)" | sort -rV); do
      p=$(PYENV_VERSION=$v pyenv which python 2>/dev/null) && is_version "$p" "$1" && {
        echo "$p"; return; }
    done
  fi
  for p in "python$1" python3; do
    p=$(command -v "$p" 2>/dev/null) && is_version "$p" "$1" && { echo "$p"; return; }
  done
  return 1
}

pip_quiet() {  # pip without progress or warnings about find-links dirs this host lacks
  "$@" --quiet --disable-pip-version-check 2> >(grep -v "is neither a file nor a directory" >&2)
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
  pip_quiet "$dir/bin/pip" install --upgrade pip
  pip_quiet "$dir/bin/pip" install -r "$lock"
  echo "$stamp" > "$dir/.lock.sha256"
  echo "setup: $name environment ready"
}

PY310=$(find_python 3.10) || {
  echo "error: Python 3.10 not found (TFX 1.16 needs it). Install it, e.g." >&2
  echo "  pyenv install 3.10.13     or     apt-get install python3.10 python3.10-venv" >&2
  exit 1
}
PY311=$(find_python 3.11) || {
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
