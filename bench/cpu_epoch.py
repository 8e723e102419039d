"""Seconds per training epoch of the cpu preset, for one or more source trees side by side.

  python bench/cpu_epoch.py <train.csv> [--tree DIR ...] [--repeats 2]

Each repeat runs `python <tree>/train.py <train.csv> --preset cpu --epochs 1` in a fresh process, the
trees taking turns so that a busy machine slows them alike, and reads the epoch's seconds (training
plus held-out scoring) from the line train.py prints. To compare with an older commit:
`git worktree add /tmp/before <commit>`, then `--tree /tmp/before --tree .`.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EPOCH_LINE = re.compile(r"^epoch\s+1/1 .*?([\d.]+)s(\s+\*)?$", re.MULTILINE)


def epoch_seconds(tree: Path, train_csv: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(tree / "train.py"), train_csv, "--preset", "cpu", "--epochs", "1",
               "--out", str(Path(tmp) / "m.pt"), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"cpu_epoch.py: {tree}: train.py failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(EPOCH_LINE.search(done.stdout).group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--tree", action="append", type=Path, help="a source tree holding train.py (default: this one)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--flags", default="", help="more train.py flags for every run, e.g. '--bf16 off'")
    args = p.parse_args()
    trees = args.tree or [ROOT]
    print(f"cpu preset, one epoch per run{', flags ' + args.flags if args.flags else ''}; {args.repeats} repeats",
          flush=True)
    seconds: dict[Path, list[float]] = {tree: [] for tree in trees}
    for repeat in range(args.repeats):
        for tree in trees:
            seconds[tree].append(epoch_seconds(tree, args.train_csv, args.flags.split()))
            print(f"repeat {repeat + 1}: {tree}: {seconds[tree][-1]:.1f} s", flush=True)
    for tree, values in seconds.items():
        print(f"{tree}: median {statistics.median(values):.1f} s per cpu-preset epoch "
              f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")


if __name__ == "__main__":
    main()
