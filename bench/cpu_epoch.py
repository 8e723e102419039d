"""Seconds per training epoch of the cpu preset, for one or more source trees and flag sets side by side.

  python bench/cpu_epoch.py <train.csv> [--tree DIR ...] [--variant FLAGS ...] [--python EXE ...] [--repeats 2]

Each repeat runs `python <tree>/train.py <train.csv> --preset cpu --epochs 1 <variant>` in a fresh process
for every interpreter, tree and variant, taking turns so that a busy machine slows them alike, and reads the epoch's
seconds (training plus held-out scoring) and, where train.py prints it, the training faces per second.
To compare with an older commit: `git worktree add /tmp/before <commit>`, then `--tree /tmp/before --tree .`;
to compare recipes of one tree: `--variant "" --variant "--crop 40"`; to compare torch releases: one
virtual environment each, `--python .venv/bin/python --python /tmp/other/bin/python`.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EPOCH_LINE = re.compile(r"^epoch\s+\d+/\d+ .*?([\d.]+)s(\s+\*)?$", re.MULTILINE)
FACES_PER_S = re.compile(r"(\d+) faces/s")


def torch_version(python: str) -> str:
    """The torch release that an interpreter imports."""
    try:
        done = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    except OSError as error:  # no such file, not executable
        sys.exit(f"cpu_epoch.py: {python}: {error.strerror}")
    if done.returncode != 0:
        sys.exit(f"cpu_epoch.py: {python}: cannot import torch")
    return done.stdout.strip()


def epoch_seconds(tree: Path, train_csv: str, extra: list[str], epochs: int = 1,
                  python: str = sys.executable) -> tuple[float, float | None, float]:
    """(the last epoch's seconds, its training faces/s where train.py prints them, the first epoch's seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, str(tree / "train.py"), train_csv, "--preset", "cpu", "--epochs", str(epochs),
               "--out", str(Path(tmp) / "m.pt"), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"cpu_epoch.py: {tree}: train.py failed: {done.stderr.strip().splitlines()[-1:]}")
    lines = list(EPOCH_LINE.finditer(done.stdout))
    speed = FACES_PER_S.search(lines[-1].group(0))
    return float(lines[-1].group(1)), float(speed.group(1)) if speed else None, float(lines[0].group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--tree", action="append", type=Path, help="a source tree holding train.py (default: this one)")
    p.add_argument("--variant", action="append", help="train.py flags of one variant; each tree runs each variant "
                   "(default: one, with no flags)")
    p.add_argument("--python", action="append", help="an interpreter to run train.py with, e.g. another virtual "
                   "environment's torch (default: this one)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1, help="epochs per run; the last one is timed, and the first's "
                   "excess over it (torch.compile's compilation, warm-up) is reported")
    p.add_argument("--flags", default="", help="more train.py flags for every run, e.g. '--bf16 off'")
    args = p.parse_args()
    pythons = args.python or [sys.executable]
    configs = [(python, tree, variant) for python in pythons for tree in args.tree or [ROOT]
               for variant in args.variant or [""]]
    print(f"cpu preset, {args.epochs} epoch(s) per run, the last timed{', flags ' + args.flags if args.flags else ''}; "
          f"{args.repeats} repeats", flush=True)
    # with --python, the label of each run starts with its torch release
    versions = {python: f"torch {torch_version(python)} " for python in args.python or []}
    for python, version in versions.items():
        print(f"{python}: {version.strip()}", flush=True)
    runs: dict[str, list[tuple[float, float | None, float]]] = {}
    for repeat in range(args.repeats):
        for python, tree, variant in configs:
            label = f"{versions.get(python, '')}{tree}{' ' + variant if variant else ''}"
            flags = [*args.flags.split(), *variant.split()]
            runs.setdefault(label, []).append(epoch_seconds(tree, args.train_csv, flags, args.epochs, python))
            print(f"repeat {repeat + 1}: {label}: {runs[label][-1][0]:.1f} s", flush=True)
    for label, results in runs.items():
        values = [seconds for seconds, _, _ in results]
        speeds = [speed for _, speed, _ in results if speed is not None]
        speed = f"; training {statistics.median(speeds):.0f} faces/s" if speeds else ""
        if args.epochs > 1:
            speed += f"; first epoch {statistics.median(first - last for last, _, first in results):+.1f} s"
        print(f"{label}: median {statistics.median(values):.1f} s per cpu-preset epoch "
              f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)}){speed}")


if __name__ == "__main__":
    main()
