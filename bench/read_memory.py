"""Peak resident memory and seconds of dataset.read_faces, on the training file and on challenge-format
files of 1x and 10x the challenge's size, for one or more source trees side by side.

  python bench/read_memory.py <train.csv> [<test.csv>] [--tree DIR ...] [--repeats 2] [--scale 10]

The challenge-format file (emotion,pixels,Usage, plain text like fer2013.csv) is written to a temporary
folder from the training rows (Usage Training) and the test rows (PublicTest/PrivateTest, emotion 0 as a
placeholder: only reading is measured), 35,887 faces with both files; the large one repeats its rows
--scale times. Each measurement is a fresh process that imports dataset.py from its tree, reads the file
and reports its peak resident set (ru_maxrss) and the read's seconds; a process that only imports gives
the baseline, so "above imports" is what reading costs. Trees take turns, so a busy machine slows them
alike. To compare with an older commit: `git worktree add /tmp/before <commit>`, then
`--tree /tmp/before --tree .`.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MEASURE = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from dataset import read_faces
t = time.perf_counter()
n = len(read_faces(sys.argv[2]).images) if sys.argv[2] != "-" else 0
print(json.dumps({"rows": n, "seconds": time.perf_counter() - t,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_challenge_csv(train_csv: str, test_csv: str | None, path: Path, repeat: int) -> int:
    """A fer2013.csv-format file from the Kaggle files, its rows repeated `repeat` times; returns its rows."""
    train = pd.read_csv(train_csv, dtype=str)
    parts = [pd.DataFrame({"emotion": train["label"], "pixels": train["feature"], "Usage": "Training"})]
    if test_csv:
        test = pd.read_csv(test_csv, dtype=str)
        usage = np.where(np.arange(len(test)) < len(test) // 2, "PublicTest", "PrivateTest")
        parts.append(pd.DataFrame({"emotion": "0", "pixels": test["feature"], "Usage": usage}))
    rows = pd.concat(parts, ignore_index=True)
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for _ in range(repeat):
            rows.to_csv(f, header=False, index=False)
    return len(rows) * repeat


def measure(tree: Path, csv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tree), csv], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"read_memory.py: {tree}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train_csv")
    p.add_argument("test_csv", nargs="?", help="adds the test rows to the challenge-format file")
    p.add_argument("--tree", action="append", type=Path, help="a source tree to measure (repeatable; default .)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scale", type=int, default=10, help="rows of the large file, as a multiple "
                   "of the challenge's; 1: no large file")
    args = p.parse_args()
    trees = [t.resolve() for t in args.tree or [ROOT]]
    with tempfile.TemporaryDirectory() as tmp:
        files = {"training file": args.train_csv}
        for name, repeat in (("challenge format", 1), (f"challenge format x{args.scale}", args.scale))[:args.scale]:
            path = Path(tmp) / f"x{repeat}.csv"
            rows = write_challenge_csv(args.train_csv, args.test_csv, path, repeat)
            files[name] = str(path)
            print(f"{name}: {path.stat().st_size / 2**20:.0f} MiB of text, {rows:,} rows, "
                  f"{rows * 2304 / 2**20:.0f} MiB of uint8 pixels", flush=True)
        print(f"{'file':<22} {'tree':<24} {'rows':>9} {'seconds':>8} {'peak MiB':>9} {'above imports':>14}")
        for name, csv in files.items():
            results = {tree: [] for tree in trees}
            for _ in range(args.repeats):
                for tree in trees:
                    results[tree].append((measure(tree, "-"), measure(tree, csv)))
            for tree, runs in results.items():
                base = statistics.median(b["peak_mb"] for b, _ in runs)
                peak = statistics.median(r["peak_mb"] for _, r in runs)
                seconds = [round(r["seconds"], 2) for _, r in runs]
                print(f"{name:<22} {tree.name or str(tree):<24} {runs[0][1]['rows']:>9,} "
                      f"{statistics.median(seconds):>8.2f} {peak:>9.0f} {peak - base:>14.0f}   "
                      f"(seconds {seconds}, imports {base:.0f} MiB)", flush=True)


if __name__ == "__main__":
    main()
