"""Benchmark the data stages: quantize against a plain k-means baseline, and a no-op `dvc repro`.

    python benchmarks/bench_data.py [--data ../shared/data/pokemon-creation] [--repeat 3]

Both k-means variants run side by side in this process on the same 792 course crops:
  baseline  scikit-learn KMeans on every crop pixel (316,800 points), default threads
  pokegen   the same objective on the distinct colors weighted by pixel count, one thread
Then `dvc repro` is timed in a temporary git repository: a full run, then a no-op run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from pokegen.quantize import kmeans_quantize, nearest_palette_index, reconstruction_error
from pokegen.sprites import read_sprites

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore")


def timed(function, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def baseline_kmeans(crops: np.ndarray) -> np.ndarray:
    pixels = crops.reshape(-1, 3).astype(np.float64)
    model = KMeans(n_clusters=167, n_init=1, random_state=0).fit(pixels)
    palette = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)
    return palette[nearest_palette_index(crops.reshape(-1, 3), palette)].reshape(crops.shape)


def pokegen_kmeans(crops: np.ndarray) -> np.ndarray:
    palette, indices = kmeans_quantize(crops, 167, seed=0)
    return palette[indices]


def bench_dvc(data: Path) -> tuple[float, float]:
    env = {**os.environ, "POKEGEN_DATA_MIRROR": str(data), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for name in PROJECT_FILES:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run(["dvc", "repro", "-q"], cwd=repo, env=env, check=True)
            times.append(time.perf_counter() - start)
        return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pokemon-creation")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    _, crops = read_sprites(args.data / "image.rar", 20, "crop")
    read_s = time.perf_counter() - start
    base_s, base_rgb = timed(lambda: baseline_kmeans(crops), args.repeat)
    ours_s, ours_rgb = timed(lambda: pokegen_kmeans(crops), args.repeat)
    base_err, ours_err = reconstruction_error(crops, base_rgb), reconstruction_error(crops, ours_rgb)
    full_s, noop_s = bench_dvc(args.data)

    print(f"machine: {os.cpu_count()} cores; {len(crops)} sprites; median of {args.repeat} runs")
    print(f"read + decode + crop image.rar            {read_s:8.2f} s")
    print(f"k-means baseline (all pixels)             {base_s:8.2f} s   RMSE {base_err['rmse']:.2f}  ΔE {base_err['delta_e']:.2f}")
    print(f"k-means pokegen (weighted distinct colors){ours_s:8.2f} s   RMSE {ours_err['rmse']:.2f}  ΔE {ours_err['delta_e']:.2f}")
    print(f"speed-up                                  {base_s / ours_s:8.1f} x")
    print(f"dvc repro, full (download from a folder mirror, quantize, tensorize) {full_s:6.2f} s")
    print(f"dvc repro, nothing changed                {noop_s:8.2f} s   ({full_s / noop_s:.1f}x less than the full run)")


if __name__ == "__main__":
    main()
