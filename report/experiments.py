"""The training runs behind the report and the compact-model sweep, and the queue that runs them.

  python -m report.experiments <train.csv> [--only NAME ...]

Each run is `python train.py <train.csv> --out runs/report/<name>.pt` plus the flags below; runs whose
history (runs/report/<name>.json) is already finished are skipped, so the queue can be restarted.
Two schedules, to fit the 2-core CPU machine: the sweep and the first ablations share a short one
(SHORT) on the row split (the compact model's); the ablations that short runs cannot judge
(augmentation, early stopping, ensembles) run again on a longer one (LONG), three seeds per arm, on
the duplicate-free split. Two queues can share the machine: `OMP_NUM_THREADS=1 ... --only A B` and
`... --only C D`.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from model import build_model, count_parameters, matched_mlp_config

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "report"
# the sweep's and the first ablations' schedule and split: the row-stratified split of the compact model
SHORT = ["--preset", "cpu", "--crop", "0", "--epochs", "10", "--split-method", "stratified"]  # whole faces, as they ran
# the longer ablations: 2.4 times the short schedule, on the split that keeps copies of a face together;
# no early stop, so that the last epoch is there to compare with the best (what early stopping keeps)
LONG = ["--preset", "cpu", "--crop", "0", "--epochs", "24", "--split-method", "grouped", "--patience", "99"]
VGG = ["--arch", "vgg", "--convs-per-stage", "2", "--hidden", "128"]
MOBILENET = ["--arch", "mobilenet", "--convs-per-stage", "2", "--dropout", "0.2"]
BASE = "vgg16"  # the reference run of the ablations: one sweep width, so no run is done twice
SEEDS = [BASE, *(f"{BASE}_seed{s}" for s in (1, 2, 3, 4))]  # the base recipe's seeds: its spread, its ensembles
LONG_SEEDS = (0, 1, 2)  # per arm of the longer ablations: enough for a spread and an ensemble of three
LONG_ARMS = {"long": [], "long_no_augment": ["--no-augment"]}  # arm -> flags; runs are <arm>_s<seed>


def widths(c: int) -> str:
    return f"{c},{2 * c},{4 * c},{8 * c}"


def matched_mlp_hidden(base: str = BASE) -> str:
    """Width of the 2-layer MLP within 1 % of the base CNN's parameter count."""
    c = int(base.removeprefix("vgg"))
    cnn = build_model({"arch": "vgg", "channels": [int(w) for w in widths(c).split(",")], "convs_per_stage": 2,
                       "hidden": 128})
    return str(matched_mlp_config(count_parameters(cnn))["hidden"])


# name -> train.py flags; the order is the queue's (the sweep first, the ensembles' extra seeds last)
EXPERIMENTS = {
    "vgg16": [*VGG, "--channels", widths(16)],
    "mobilenet16": [*MOBILENET, "--channels", widths(16)],
    "vgg8": [*VGG, "--channels", widths(8)],
    "mobilenet8": [*MOBILENET, "--channels", widths(8)],
    "vgg12": [*VGG, "--channels", widths(12)],
    "mobilenet24": [*MOBILENET, "--channels", widths(24)],
    "mlp_matched": ["--arch", "mlp", "--mlp-depth", "2", "--hidden", matched_mlp_hidden()],
    # the same MLP on its own recipe, train.py's mlp preset's: no augmentation, more dropout, a lower rate
    "mlp_matched_own_recipe": ["--arch", "mlp", "--mlp-depth", "2", "--hidden", matched_mlp_hidden(), "--no-augment",
                               "--dropout", "0.5", "--lr", "0.02", "--batch-size", "256"],
    "vgg16_no_augment": [*VGG, "--channels", widths(16), "--no-augment"],
    "vgg16_no_normalize": [*VGG, "--channels", widths(16), "--no-normalize"],
    "vgg16_class_weighted": [*VGG, "--channels", widths(16), "--class-weighted"],
    **{f"vgg16_seed{s}": [*VGG, "--channels", widths(16), "--seed", str(s)] for s in (1, 2, 3, 4)},
    # the sweep's overlap: VGGs as small as the MobileNets, a MobileNet as large as the smallest VGG
    "vgg4": [*VGG, "--channels", widths(4)],
    "vgg6": [*VGG, "--channels", widths(6)],
    "mobilenet32": [*MOBILENET, "--channels", widths(32)],
}
# the longer ablations, queued last: the base network, each arm at each seed, on the LONG schedule
LONG_RUNS = {f"{arm}_s{s}": [*EXPERIMENTS[BASE], *flags, "--seed", str(s)]
             for arm, flags in LONG_ARMS.items() for s in LONG_SEEDS}
EXPERIMENTS |= LONG_RUNS


def finished(name: str, runs: Path = RUNS) -> bool:
    """Whether runs/<name>.json records a run that ran to its end."""
    history = runs / f"{name}.json"
    return history.exists() and json.loads(history.read_text()).get("finished", False)


def run(name: str, train_csv: str) -> None:
    out = RUNS / f"{name}.pt"
    resume = ["--resume"] if out.with_suffix(".resume.pt").exists() else ["--force"]
    schedule = LONG if name in LONG_RUNS else SHORT
    cmd = [sys.executable, str(ROOT / "train.py"), train_csv, *schedule, *EXPERIMENTS[name], "--out", str(out), *resume]
    RUNS.mkdir(parents=True, exist_ok=True)
    with open(RUNS / f"{name}.log", "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        subprocess.run(["/usr/bin/time", "-v", *cmd] if Path("/usr/bin/time").exists() else cmd,
                       stdout=log, stderr=subprocess.STDOUT, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), help="run just these")
    args = p.parse_args()
    for name in args.only or EXPERIMENTS:
        if finished(name):
            print(f"{name}: done", flush=True)
            continue
        print(f"{name}: training", flush=True)
        run(name, args.train_csv)


if __name__ == "__main__":
    main()
