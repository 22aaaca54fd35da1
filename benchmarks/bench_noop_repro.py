"""What a no-op `dvc repro` costs now against a baseline commit's dvc.yaml, side by side in one run.

Both repositories hold the same params (tiny models: the no-op cost does not depend on model size)
and are reproduced once; then `dvc repro` with nothing changed is timed in each, alternately. The
baseline's dvc.yaml has no check stage and no code dependencies; both run the installed pokegen.

    python benchmarks/bench_noop_repro.py [--base 50494d6] [--repeat 5]

Needs the course files: POKEGEN_DATA_MIRROR or ../shared/data/pokemon-creation.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import COURSE_DATA, make_repo  # noqa: E402 - the tests' own repository builder


def timed(repo: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=repo, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="50494d6", help="the commit whose dvc.yaml is the baseline")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("POKEGEN_DATA_MIRROR", str(COURSE_DATA))
    with tempfile.TemporaryDirectory() as scratch:
        new = make_repo(Path(scratch) / "now")
        base = make_repo(Path(scratch) / "base")
        (base / "dvc.yaml").write_text(subprocess.run(["git", "show", f"{args.base}:dvc.yaml"], cwd=ROOT, check=True, capture_output=True, text=True).stdout)
        shutil.rmtree(base / "src"), shutil.rmtree(base / "plugins")  # the baseline depends on no code
        for repo in (base, new):
            subprocess.run(["dvc", "repro"], cwd=repo, check=True, capture_output=True)
        times: dict[str, list[float]] = {"base": [], "now": []}
        for _ in range(args.repeat):
            times["base"].append(timed(base))
            times["now"].append(timed(new))
    base_s, now_s = statistics.median(times["base"]), statistics.median(times["now"])
    print(f"no-op dvc repro, median of {args.repeat}, alternating, {os.cpu_count()} cores")
    print(f"  {args.base} dvc.yaml (baseline)      {base_s:.2f} s")
    print(f"  this tree (check + code deps) {now_s:.2f} s   {now_s - base_s:+.2f} s, {now_s / base_s:.2f}x")


if __name__ == "__main__":
    main()
