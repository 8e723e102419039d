"""The table of a bench/gpu_suite.sh run, from the histories and wall times in its logs folder.

  python -m bench.gpu_summary <logs>      (prints the table; writes <logs>/summary.json)

Per run: epochs, best epoch, held-out accuracy (best epoch, with flip TTA, last epoch), steady epoch
seconds, the first epoch's excess (warm-up), and the process's wall time, start-up included.
Then what the side-by-side stage measured, and the ensemble.
"""

import json
import sys
from pathlib import Path

from utils import atomic_write

SEEDED = "full_s"  # the core stage's runs of the full preset, one per seed


def walls(logs: Path) -> dict[str, dict]:
    """name -> wall seconds and exit code, from the suite's walls.tsv."""
    rows = {}
    path = logs / "walls.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, start, end, rc = line.split("\t")
        rows[name] = {"wall_seconds": float(end) - float(start), "exit": int(rc)}
    return rows


def run_row(history: dict, wall: dict) -> dict:
    return {"epochs": history.get("epoch"), "best_epoch": history.get("best_epoch"),
            "val_acc": history.get("best_val_acc"), "val_acc_tta": history.get("best_val_acc_tta"),
            "last_val_acc": history["history"][-1]["val_acc"] if history.get("history") else None,
            "steady_epoch_seconds": history.get("steady_epoch_seconds"),
            "first_epoch_extra_seconds": history.get("first_epoch_extra_seconds"),
            "finished": history.get("finished", False), "device": history.get("device_name"),
            "batch_size": history.get("args", {}).get("batch_size"), **wall}


def derived(runs: dict) -> dict:
    """Side-by-side throughput against one run alone."""
    out = {}
    seeds = [r for name, r in runs.items() if name.startswith(SEEDED) and r["steady_epoch_seconds"]]
    fast = runs.get("fast", {})
    if seeds and fast.get("steady_epoch_seconds") and {r["batch_size"] for r in seeds} == {fast["batch_size"]}:
        together = sum(r["steady_epoch_seconds"] for r in seeds) / len(seeds)
        out["side_by_side"] = {"runs": len(seeds), "epoch_seconds_alone": fast["steady_epoch_seconds"],
                               "epoch_seconds_each_side_by_side": together,
                               "throughput_gain": len(seeds) * fast["steady_epoch_seconds"] / together}
    return out


def table(runs: dict) -> str:
    def pct(x: float | None) -> str:
        return f"{100 * x:.2f}" if x is not None else "-"

    def sec(x: float | None) -> str:
        return f"{x:.1f}" if x is not None else "-"

    lines = [f"{'run':<20} {'epochs':>6} {'best':>4} {'val %':>6} {'TTA %':>6} {'last %':>6} {'s/epoch':>7} "
             f"{'1st+':>6} {'wall s':>7}  exit"]
    for name, r in runs.items():
        lines.append(f"{name:<20} {r['epochs'] or '-':>6} {r['best_epoch'] or '-':>4} {pct(r['val_acc']):>6} "
                     f"{pct(r['val_acc_tta']):>6} {pct(r['last_val_acc']):>6} {sec(r['steady_epoch_seconds']):>7} "
                     f"{sec(r['first_epoch_extra_seconds']):>6} {sec(r.get('wall_seconds')):>7}  {r.get('exit', '-')}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python -m bench.gpu_summary <logs folder of a gpu_suite.sh run>")
    logs = Path(sys.argv[1])
    wall = walls(logs)
    runs = {}
    for path in sorted(logs.glob("*.json")):
        history = json.loads(path.read_text())
        if "history" in history:
            runs[path.stem] = run_row(history, wall.get(path.stem, {}))
    ensemble_path = logs / "ensemble.json"
    ensemble = json.loads(ensemble_path.read_text()) if ensemble_path.exists() else None
    summary = {"runs": runs, **derived(runs), "ensemble": ensemble and {
        "members": len(ensemble["models"]), "val_acc_tta": ensemble["ensemble_val_acc_tta"]}}
    print(table(runs))
    for key in ("side_by_side", "ensemble"):
        if summary.get(key):
            print(f"{key}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in summary[key].items()))
    with atomic_write(logs / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
