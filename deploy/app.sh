#!/bin/sh
# The prediction API's install-and-start steps, in one place: the Dockerfile runs them, and CI runs them in a fresh
# venv (deploy/smoke.sh), so the recipe is tested even where no Docker engine is available.
#   deploy/app.sh install            install the runtime dependencies and the package (no dev tools)
#   deploy/app.sh serve [MODEL_DIR]  serve MODEL_DIR (default $STUDENTPERF_MODEL, else /model) on $HOST:$PORT with
#                                    $WORKERS processes (default 1); settings come from the model card and env vars
#                                    (STUDENTPERF_MAX_BATCH, STUDENTPERF_MAX_BODY_BYTES, STUDENTPERF_EXPLAIN_TOP,
#                                    STUDENTPERF_LOG_LEVEL), not from a params.yaml
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=${PYTHON:-python3}
case "${1:-}" in
  install)
    "$PY" -m pip install --no-cache-dir -r "$here/requirements-serve.txt"
    "$PY" -m pip install --no-cache-dir --no-deps "$root"
    ;;
  serve)
    export STUDENTPERF_MODEL="${2:-${STUDENTPERF_MODEL:-/model}}"
    # API keys: required once the key store ($STUDENTPERF_KEYS) has any; without keys only a loopback HOST is served,
    # unless STUDENTPERF_INSECURE_NO_AUTH=1 (an authenticating proxy in front): see the Security section of the docs
    export STUDENTPERF_HOST="${HOST:-0.0.0.0}"
    # access lines: uvicorn's, plus the app's own (studentperf.serving.access: duration, request id, model version)
    exec "$PY" -m uvicorn studentperf.serving:app_from_env --factory \
      --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" --workers "${WORKERS:-1}" \
      --log-level "${STUDENTPERF_LOG_LEVEL:-info}"
    ;;
  *) echo "usage: $0 install | serve [MODEL_DIR]" >&2; exit 2 ;;
esac
