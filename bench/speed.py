"""Wall time of each released option on the real test file, as a ratio to a reference run in the same invocation.

  python -m bench.speed [--data ../shared/fer2013] [--repeats 3] [--option NAME ...]

Each option runs as a user runs it (a fresh `python predict.py` process, start-up included); the options take
turns repeat by repeat, so that a busy machine slows them alike, and every repeat's submission is compared byte
for byte. Seconds differ between machines, even with the same CPU flags; the ratio to the reference (one VGG
with flip views) travels. The CPU's model and flags are printed with the figures; emulate the slowest CPU the
project supports with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2.
"""

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from predict import RELEASED, released

ROOT = Path(__file__).resolve().parent.parent
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what sets this CPU's convolution speed
REFERENCE = "reference"
OPTIONS = {  # name: predict.py's flags
    REFERENCE: ["--model", str(ROOT / "weights" / "vgg_crop40_s0.q8")],  # one VGG on 40-px crops, flip views
    "default": [],
    "fast": ["--fast"],
    "compact": ["--model", released("compact")[0]],
}


def cpu_description() -> str:
    """The CPU's model name and which of SPEED_FLAGS it has, to print beside every timing."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    has = [f for f in SPEED_FLAGS if f in flags]
    return f"{fields.get('model name', 'unknown CPU')}, flags: {' '.join(has) or 'none of ' + ' '.join(SPEED_FLAGS)}"


def time_options(test_csv: Path, options: dict[str, list[str]], repeats: int) -> dict[str, tuple[list[float], set]]:
    """Wall seconds and submission digests of `python predict.py` with each option's flags, taking turns."""
    timings = {name: ([], set()) for name in options}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for name, flags in options.items():
                pred = Path(tmp) / f"{name}{i}.csv"
                start = time.perf_counter()
                subprocess.run([sys.executable, str(ROOT / "predict.py"), str(test_csv), str(pred), *flags], check=True)
                timings[name][0].append(time.perf_counter() - start)
                timings[name][1].add(hashlib.sha256(pred.read_bytes()).hexdigest())
    return timings


def report_lines(timings: dict[str, tuple[list[float], set]]) -> list[str]:
    """One line an option: median seconds, its ratio to the reference's median, and whether its repeats agree."""
    reference = statistics.median(timings[REFERENCE][0])
    lines = []
    for name, (seconds, digests) in timings.items():
        median = statistics.median(seconds)
        lines.append(f"{name:9s} {median:7.1f} s  {median / reference:5.2f}x the reference  (min {min(seconds):.1f}, "
                     f"max {max(seconds):.1f}, n={len(seconds)}; byte-identical: {len(digests) == 1})")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "fer2013")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--option", action="append", choices=[o for o in OPTIONS if o != REFERENCE],
                   help="time only these besides the reference; repeat (default: all)")
    args = p.parse_args(argv)
    import torch

    chosen = {name: flags for name, flags in OPTIONS.items() if name == REFERENCE or name in (args.option or OPTIONS)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}; "
          f"{cpu_description()}")
    print(f"reference: {Path(OPTIONS[REFERENCE][1]).name}; default: {', '.join(RELEASED['default'])}; "
          f"fast: {', '.join(RELEASED['fast'])}; flip views; test.csv.gz, 7,178 faces, wall incl. start-up")
    for line in report_lines(time_options(args.data / "test.csv.gz", chosen, args.repeats)):
        print(line, flush=True)


if __name__ == "__main__":
    main()
