"""How fast `pokegen explore` answers, with every model of pipeline.models loaded, on the trained outputs here.

    python benchmarks/bench_explore.py [--root .] [--requests 50]

Starts the explorer's app on a free port of 127.0.0.1 (uvicorn in a thread of this process, the same app
`pokegen explore` serves), then for each action sends --requests requests one after another over HTTP and gives
the median and p95 latency. Side by side, the same model calls made directly in this process (no HTTP, no JSON):
the baseline the server's cost is a ratio against (run on the thread the server runs models on). Also the process's resident memory with all models loaded.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from pokegen.explore import create_app


def _p95(seconds: list[float]) -> float:
    return float(np.percentile(seconds, 95))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(call, count: int) -> list[float]:
    seconds = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        seconds.append(time.perf_counter() - started)
    return seconds


def _model_rows(client: httpx.Client, explorer, name: str, entry, test: np.ndarray, erased: np.ndarray, n: int) -> list[tuple]:
    """One model's actions, each through the server and called directly (on the thread the server calls models on)."""
    model = entry.model

    def direct(call):
        return explorer.worker.submit(call).result()

    rows = [(
        "one sampled sprite", name,
        _timed(lambda i: client.post("/api/sample", json={"model": name, "seed": i, "count": 1}).raise_for_status(), n),
        _timed(lambda i: direct(lambda: model.sample(1, i)), n),
    )]  # fmt: skip
    if entry.latent_dims:
        code = np.asarray(entry.start_code, dtype=np.float32)
        rows.append((
            "decode one code", name,
            _timed(lambda i: client.post("/api/decode", json={"model": name, "code": (code + 0.01 * i).tolist()}).raise_for_status(), n),
            _timed(lambda i: direct(lambda: model.decode((code + 0.01 * i)[None])), n),
        ))  # fmt: skip
    if entry.completes:
        sprites = [test[i % len(test)] for i in range(n)]
        rows.append((
            "complete one sprite (left half)", name,
            _timed(lambda i: client.post("/api/complete", json={"model": name, "sprite": sprites[i].tolist(), "erased": erased.tolist(), "seed": i}).raise_for_status(), n),
            _timed(lambda i: direct(lambda: model.complete(sprites[i][None], erased[None], seed=i)), n),
        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()

    before = _rss_mb()
    app = create_app(args.root.resolve())
    explorer = app.state.explorer
    loaded = {name: entry for name, entry in explorer.models.items() if entry.model is not None}
    print(f"models loaded: {', '.join(loaded)}; resident memory {_rss_mb():.0f} MB (before loading: {before:.0f} MB)")
    missing = [name for name, entry in explorer.models.items() if entry.model is None]
    if missing:
        print(f"not trained here (left out): {', '.join(missing)}")

    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # as `pokegen explore` binds
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the explorer's server did not start")
        time.sleep(0.05)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    test = explorer.dataset.splits["test"]
    erased = np.zeros(test.shape[1:], dtype=bool)
    erased[:, : test.shape[2] // 2] = True  # the left half: any-mask completion, the costly kind
    rows = []  # (action, model, server seconds, direct seconds)
    for name, entry in loaded.items():
        rows += _model_rows(client, explorer, name, entry, test, erased, args.requests)
    n = args.requests
    from pokegen.evaluation import nearest_hamming

    train = explorer.dataset.splits["train"]
    rows.append((
        "nearest training sprite", "-",
        _timed(lambda i: client.post("/api/nearest", json={"sprite": test[i % len(test)].tolist()}).raise_for_status(), n),
        _timed(lambda i: nearest_hamming(test[i % len(test)][None], train), n),
    ))  # fmt: skip
    server.should_exit = True
    thread.join()

    print(f"\n{n} requests each, one after another; milliseconds")
    print(f"{'action':<34}{'model':<13}{'server p50':>11}{'server p95':>11}{'direct p95':>11}{'ratio':>7}")
    for action, name, served, direct in rows:
        ratio = _p95(served) / _p95(direct)
        print(f"{action:<34}{name:<13}{1000 * statistics.median(served):>11.1f}{1000 * _p95(served):>11.1f}{1000 * _p95(direct):>11.1f}{ratio:>7.2f}")
    print(f"\nresident memory after the run: {_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
