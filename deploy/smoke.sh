#!/usr/bin/env bash
# Test the container recipe without Docker: run deploy/app.sh in a fresh venv, serve a small model, probe it.
# usage: deploy/smoke.sh [MODEL_DIR]   (default: a small model trained here on the demo data with the project's .venv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
model=${1:-}
if [ -z "$model" ]; then
  "$root/.venv/bin/python" - "$work/run" <<'PY'
import sys
from studentperf.config import load_params
from studentperf.data import run_prepare
from studentperf.modeling import run_model
from studentperf.evaluation import run_evaluate
from studentperf.handoff import run_handoff
p = load_params(overrides={'run.quick': True, 'model.candidates': ['logreg'], 'model.ensembles': [], 'model.imbalance': ['none']})
out = sys.argv[1]
run_prepare(p, out); run_model(p, out, progress=False); run_evaluate(p, out); print(run_handoff(p, out).path)
PY
  model="$work/run/models"
fi
python3 -m venv "$work/venv"
PYTHON="$work/venv/bin/python" sh "$root/deploy/app.sh" install > "$work/install.log" 2>&1 || { tail -30 "$work/install.log"; exit 1; }
if "$work/venv/bin/python" -c "import nbdev" 2>/dev/null || "$work/venv/bin/python" -c "import papermill" 2>/dev/null; then
  echo "smoke: dev-only packages leaked into the runtime install"; exit 1
fi
port=$("$work/venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
HOST=127.0.0.1 PORT=$port PYTHON="$work/venv/bin/python" sh "$root/deploy/app.sh" serve "$model" > "$work/serve.log" 2>&1 &
pid=$!
for i in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/health"; echo
curl -fsS "http://127.0.0.1:$port/ready"; echo
student='{"school":"GP","sex":"F","age":17,"address":"U","famsize":"GT3","Pstatus":"T","Medu":4,"Fedu":3,"Mjob":"teacher","Fjob":"other","reason":"course","guardian":"mother","traveltime":1,"studytime":2,"failures":0,"schoolsup":"no","famsup":"yes","paid":"no","activities":"yes","nursery":"yes","higher":"yes","internet":"yes","romantic":"no","famrel":4,"freetime":3,"goout":3,"Dalc":1,"Walc":1,"health":5,"absences":2}'
curl -fsS -H 'content-type: application/json' -d "$student" "http://127.0.0.1:$port/predict"; echo
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"age":"x"}' "http://127.0.0.1:$port/predict")
[ "$code" = 422 ] || { echo "smoke: expected 422 for a bad body, got $code"; exit 1; }
echo "smoke: the recipe installs and serves in a fresh venv"
