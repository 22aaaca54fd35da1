#!/usr/bin/env bash
# What a scheduled run costs when nothing changed, side by side with its baselines, in one run:
#   dvc repro                     (the baseline: DVC alone)
#   pokegen pipeline              (the same flow in this process, on the Prefect server below)
#   prefect deployment run --watch  (triggered, picked up by a process worker, run in its own process)
# Run from the root of a clone whose pipeline is already reproduced (dvc status clean), venv active.
# It starts its own Prefect server on 127.0.0.1 (temporary PREFECT_HOME) and a worker, and stops both.
#   bash benchmarks/bench_deployment.sh [repeats]
set -euo pipefail
repeats=${1:-3}
home=$(mktemp -d)
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREFECT_HOME=$home PREFECT_API_URL=http://127.0.0.1:$port/api PREFECT_WORKER_QUERY_SECONDS=1
pids=()
trap 'kill -INT "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$home"' EXIT  # a worker stops on SIGINT, not SIGTERM
PREFECT_UI_ENABLED=false prefect server start --host 127.0.0.1 --port "$port" >"$home/server.log" 2>&1 &
pids+=($!)
until curl -sf "$PREFECT_API_URL/health" >/dev/null; do sleep 0.5; done
pokegen deploy >/dev/null
prefect worker start --pool "$(python -c 'from pathlib import Path; from pokegen.params import load_params; print(load_params(Path("params.yaml")).deployment.work_pool)')" >"$home/worker.log" 2>&1 &
pids+=($!)

seconds() { local start=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $start" | bc; }
name=$(python -c 'from pathlib import Path; from pokegen.params import load_params; print(load_params(Path("params.yaml")).deployment.name)')
printf "%-36s %s\n" "what (nothing changed)" "seconds per run"
for i in $(seq "$repeats"); do
  printf "%-36s %.1f\n" "dvc repro" "$(seconds dvc repro)"
  printf "%-36s %.1f\n" "pokegen pipeline" "$(seconds pokegen pipeline)"
  printf "%-36s %.1f\n" "prefect deployment run --watch" "$(seconds prefect deployment run "pokemon-pipeline/$name" --watch)"
done
