"""Speed figures on the real data: CSV loading and end-to-end prediction (start-up included).

  python bench/speed.py [--data ../shared/fer2013] [--repeats 3] [--model PATH ... | --best] [--tta VIEWS]
                        [--python INTERPRETER ...] [--tree DIR ...]

Prints one line per figure; prediction runs as a user runs it (a fresh `python predict.py` process),
and the submissions of all repeats are compared byte for byte. Several interpreters (--python: say two
virtualenvs with different torch builds) or source trees (--tree: `git worktree add /tmp/before <commit>`)
take turns, repeat by repeat, so that a busy machine slows them alike.
"""

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataset import read_faces  # noqa: E402
from predict import TTA_VIEWS, chosen_models  # noqa: E402
from predict import parse_args as predict_args  # noqa: E402

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what sets this CPU's convolution speed


def cpu_description() -> str:
    """The CPU's model name and which of SPEED_FLAGS it has, to print beside every timing."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    has = [f for f in SPEED_FLAGS if f in flags]
    return f"{fields.get('model name', 'unknown CPU')}, flags: {' '.join(has) or 'none of ' + ' '.join(SPEED_FLAGS)}"


def time_load(path: Path, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_faces(path)
        seconds.append(time.perf_counter() - start)
    return seconds


def torch_version(python: str) -> str:
    """The torch version an interpreter imports."""
    run = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                         check=True)
    return run.stdout.strip()


def time_predict(test_csv: Path, models: list[str], repeats: int, extra: list[str],
                 setups: list[tuple[str, Path]]) -> dict[tuple[str, Path], tuple[list[float], set[str]]]:
    """Wall seconds and submission digests of `python <tree>/predict.py` for each (interpreter, tree), the setups
    taking turns within each repeat."""
    timings = {setup: ([], set()) for setup in setups}
    model_flags = [flag for m in models for flag in ("--model", m)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for k, ((python, tree), (seconds, digests)) in enumerate(timings.items()):
                pred = Path(tmp) / f"pred{i}_{k}.csv"
                start = time.perf_counter()
                subprocess.run([python, str(tree / "predict.py"), str(test_csv), str(pred), *model_flags, *extra],
                               check=True)
                seconds.append(time.perf_counter() - start)
                digests.add(hashlib.sha256(pred.read_bytes()).hexdigest())
    return timings


def summary(seconds: list[float]) -> str:
    spread = f"min {min(seconds):.2f}, max {max(seconds):.2f}, n={len(seconds)}"
    return f"median {statistics.median(seconds):.2f} s ({spread})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "fer2013")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", action="append", default=[], help="default: predict.py's released weights")
    p.add_argument("--best", action="store_true", help="predict.py --best: every released network")
    p.add_argument("--tta", choices=TTA_VIEWS, help="default: predict.py's")
    p.add_argument("--python", action="append", default=[], help="an interpreter to run predict.py with; repeat "
                   "to compare (they take turns); default: this one")
    p.add_argument("--tree", action="append", type=Path, default=[], help="a source tree whose predict.py runs; "
                   "repeat to compare (they take turns); default: this one")
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}; "
          f"{cpu_description()}")
    print(f"load train.csv.gz (28,709 rows): {summary(time_load(args.data / 'train.csv.gz', args.repeats))}")
    print(f"load test.csv.gz (7,178 rows): {summary(time_load(args.data / 'test.csv.gz', args.repeats))}")
    extra = (["--best"] if args.best else []) + (["--tta", args.tta] if args.tta else [])
    setups = [(python, tree) for python in args.python or [sys.executable] for tree in args.tree or [ROOT]]
    timings = time_predict(args.data / "test.csv.gz", args.model, args.repeats, extra, setups)
    model_flags = [flag for m in args.model for flag in ("--model", m)] + (["--best"] if args.best else [])
    models = ", ".join(Path(m).name for m in chosen_models(predict_args(["test.csv", "pred.csv", *model_flags])))
    for (python, tree), (seconds, digests) in timings.items():
        under = f"; {python}, torch {torch_version(python)}" if args.python else ""
        under += f"; tree {tree}" if args.tree else ""
        print(f"predict test.csv.gz ({models}, {args.tta or 'flip'} views{under}), wall incl. start-up: "
              f"{summary(seconds)}")
        print(f"byte-identical submissions across {args.repeats} runs: {len(digests) == 1}")
    if len(setups) > 1:
        same = len(set().union(*(digests for _, digests in timings.values()))) == 1
        print(f"byte-identical submissions across the {len(setups)} setups: {same}")


if __name__ == "__main__":
    main()
