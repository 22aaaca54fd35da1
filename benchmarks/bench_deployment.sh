#!/usr/bin/env bash
# What a scheduled run costs when nothing changed, side by side with its baselines, in one run:
#   dvc repro                       (the baseline: DVC alone, in a clone that holds every output)
#   pokegen pipeline                (the same flow in this process, on the Prefect server below)
#   prefect deployment run --watch  (triggered, picked up by a process worker: a fresh git clone,
#                                    dvc pull of the last record, the DAG, dvc push, record)
# Run from the root of a clone whose pipeline is already reproduced (dvc status clean), venv active.
# It works on a copy: the copy's dvc.lock and metrics are committed, pushed to a bare origin and a DVC
# remote folder in a temporary directory, with its own Prefect server (temporary PREFECT_HOME) and a
# worker on 127.0.0.1; it stops them and removes everything at the end.
#   bash benchmarks/bench_deployment.sh [repeats]
set -euo pipefail
repeats=${1:-3}
tmp=$(mktemp -d)
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREFECT_HOME=$tmp/prefect PREFECT_API_URL=http://127.0.0.1:$port/api PREFECT_WORKER_QUERY_SECONDS=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
pids=()
trap 'kill -INT "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT  # a worker stops on SIGINT, not SIGTERM

# The copy, its origin and its DVC remote.
mkdir "$tmp/work" && tar --exclude=./.venv --exclude='*.egg-info' -cf - . | tar -xf - -C "$tmp/work"
cd "$tmp/work"
git init -q --bare --initial-branch main "$tmp/origin.git"
git checkout -q -B main && git add -A && git commit -qm "bench: every output recorded"
git remote remove origin 2>/dev/null || true
git remote add origin "$tmp/origin.git" && git push -q origin main
dvc remote add -q -d -f bench "$tmp/dvc-remote" && git commit -qam "bench remote" && git push -q origin main
dvc push -q --run-cache

PREFECT_UI_ENABLED=false prefect server start --host 127.0.0.1 --port "$port" >"$tmp/server.log" 2>&1 &
pids+=($!)
until curl -sf "$PREFECT_API_URL/health" >/dev/null; do sleep 0.5; done
pokegen deploy >/dev/null
pool=$(python -c 'from pathlib import Path; from pokegen.params import load_params; print(load_params(Path("params.yaml")).deployment.work_pool)')
name=$(python -c 'from pathlib import Path; from pokegen.params import load_params; print(load_params(Path("params.yaml")).deployment.name)')
mkdir "$tmp/worker" && (cd "$tmp/worker" && prefect worker start --pool "$pool" >"$tmp/worker.log" 2>&1) &
pids+=($!)

seconds() { local start=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $start" | bc; }
printf "%-36s %s\n" "what (nothing changed)" "seconds per run"
for i in $(seq "$repeats"); do
  printf "%-36s %.1f\n" "dvc repro" "$(seconds dvc repro)"
  printf "%-36s %.1f\n" "pokegen pipeline" "$(seconds pokegen pipeline)"
  printf "%-36s %.1f\n" "prefect deployment run --watch" "$(seconds prefect deployment run "pokemon-pipeline/$name" --watch)"
done
echo "deployment runs completed: $(grep -cE "Flow run '[^']+' - Finished in state Completed" "$tmp/worker.log" || true) of $repeats"
