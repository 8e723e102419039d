"""Build the three homework reports (hw2, dlss, hw8: markdown, PDF and the PNG figures beside them) from
logged results.

  python report/make_report.py                  # figures + hw2/dlss/hw8 .md and .pdf from report/results/
  python report/make_report.py --collect        # first re-read runs/ (histories, checkpoints, logs) and score
                                                # the released models on the test set (--test), into results/
  python report/make_report.py --rerun          # first train what runs/ lacks (report/experiments.py), then collect
  python report/make_report.py --name "Ada Lovelace" --student-id B12345678 --department "CSIE, year 3"

Each report is report/templates/<report>.md with its placeholders filled from report/results/ alone (and
the layer tables of the released model files), so its markdown is a function of committed files: a test
renders each and compares it byte for byte. The figures also need the training CSV (faces for the grids
and maps). --collect keeps a results file whose checkpoints are gone (runs/**/*.pt are not committed).
"""

import argparse
import csv
import io
import itertools
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "report"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

import experiments  # noqa: E402
from md2pdf import markdown_to_pdf  # noqa: E402
from quantize import quantize  # noqa: E402
from test_score import PUBLIC_LABELS, read_labels  # noqa: E402

import faces  # noqa: E402
from compact_int8 import read_compact, write_compact  # noqa: E402
from dataset import CLASS_NAMES, Faces, duplicate_groups, read_faces, recorded_split  # noqa: E402
from model import atomic_write, build_model, count_parameters  # noqa: E402
from predict import RELEASED_COMPACT, RELEASED_ENSEMBLE, predict_proba  # noqa: E402
from quantized import SMALL_ROW, load_model  # noqa: E402

HERE = ROOT / "report"
DATA = ROOT.parent / "shared" / "fer2013" / "train.csv.gz"
TEST = ROOT.parent / "shared" / "fer2013" / "test.csv.gz"
BEST = {"vgg_cpu_s0": ROOT / "runs" / "cpu" / "vgg_cpu", "vgg_cpu_s1": ROOT / "runs" / "cpu_s1" / "vgg_cpu"}
# the compact model's runs: 40 distilled epochs, 8 more from there at a lower rate, and the shipped
# 80-epoch run (weights/compact.q8)
COMPACT_RUNS = {"compact_40ep": ROOT / "runs" / "compact" / "mobilenet",
                "compact_40ep_ft": ROOT / "runs" / "compact_ft" / "mobilenet",
                "compact": ROOT / "runs" / "compact80" / "mobilenet"}
COMPACT_SCHEDULE = "--preset compact: 80 epochs, distilled from the released ensemble"
RELEASED = [Path(path) for path in RELEASED_ENSEMBLE]
K = len(CLASS_NAMES)
CLASS_COLORS = plt.get_cmap("tab10").colors[:K]  # one colour per class in every figure
HUMAN_ACCURACY = "65 ± 5 %"  # Goodfellow et al. 2013, "Challenges in Representation Learning", FER2013 section
FIGURES = ["class_counts.png", "samples.png", "curves_best.png", "cnn_vs_mlp.png", "tricks.png", "confusion.png",
           "confusions_examples.png", "per_class.png", "activations.png", "saliency.png", "compact.png"]


# ---------------------------------------------------------------- metrics

def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int = K) -> np.ndarray:
    """counts[true, predicted]"""
    return np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)


def per_class_scores(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, macro-F1 and per-class precision, recall, F1 and support (0 where undefined)."""
    cm = confusion_matrix(labels, predicted)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {"accuracy": float(tp.sum() / cm.sum()), "macro_f1": float(f1.mean()), "precision": precision.tolist(),
            "recall": recall.tolist(), "f1": f1.tolist(), "support": cm.sum(1).tolist()}


def logit_adjusted(probs: np.ndarray, prior: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Menon et al. 2021: arg-max of log p(y|x) - tau log p(y) (the balanced-error decision for tau = 1)."""
    return (np.log(np.clip(probs, 1e-12, None)) - tau * np.log(prior)).argmax(1)


# ---------------------------------------------------------------- collect: runs/ -> report/results/

def summarize_history(history_path: Path) -> dict:
    h = json.loads(history_path.read_text())
    epochs = h["history"]
    return {"params": h["params"], "device": h["device"], "bf16": h["bf16"], "git_commit": h["git_commit"],
            "split": h["split"]["method"],
            "args": {k: v for k, v in h["args"].items() if k not in ("train_csv", "out", "resume", "force")},
            "best_epoch": h["best_epoch"], "epochs_run": h["epoch"], "val_acc": h["best_val_acc"],
            "val_acc_tta": h.get("best_val_acc_tta"), "val_acc_crops": h.get("best_val_acc_crops"),
            "last_val_acc": epochs[-1]["val_acc"],
            "wall_seconds": wall_seconds(h), "history": epochs}


def wall_seconds(h: dict) -> float | None:
    """A run's wall time: its process's, or for a run resumed across sessions (whose process saw only the last
    part) at least the sum of its epochs."""
    if h.get("wall_seconds") is None:
        return None
    return max(h["wall_seconds"], h.get("elapsed", 0.0))


SPLIT = {"method": "stratified", "val_fraction": 0.1, "seed": 0}  # the row split of the released and short runs


class HeldOut:
    """The held-out faces of a split, which of them have a copy in its training part, and each model's
    flip-TTA probabilities on them (fp32, as predict.py computes them), scored once however many tables
    use the model."""

    def __init__(self, faces: Faces, groups: np.ndarray, split: dict = SPLIT):
        train_idx, self.rows = recorded_split(faces, split)
        self.images, self.labels = faces.images[self.rows], faces.labels[self.rows].numpy()
        self.clean = ~np.isin(groups[self.rows], groups[train_idx])  # no copy of the face in the training part
        self.prior = np.bincount(faces.labels[train_idx].numpy(), minlength=K) / len(train_idx)
        self.scored: dict[Path, np.ndarray] = {}

    def probs(self, *paths: Path) -> np.ndarray:
        """Mean probabilities of the models (an ensemble when several)."""
        for p in paths:
            if p not in self.scored:
                self.scored[p] = predict_proba(load_model(p)[0], self.images).numpy()
        return np.mean([self.scored[p] for p in paths], axis=0)

    def right(self, *paths: Path) -> np.ndarray:
        """Per held-out face, whether the models' (mean) arg-max is its label."""
        return self.probs(*paths).argmax(1) == self.labels

    def accuracy(self, *paths: Path, clean: bool = False) -> float:
        """Accuracy on every held-out face, or (clean) on those without a copy in the training part."""
        right = self.right(*paths)
        return float(right[self.clean].mean() if clean else right.mean())


def compact_sweep_entry(name: str, checkpoint: Path, held: HeldOut, tmp: Path) -> dict:
    """Size and held-out accuracy of one model, fp32 and as the int8 file tools/quantize.py writes."""
    model, ckpt = load_model(checkpoint)
    quantize(str(checkpoint), str(tmp), max_bytes=10**9)
    # the raw (format 1) size measures the model, as the sweep's records from before files were deflated do
    int8_bytes = write_compact(tmp, *read_compact(tmp), deflate=False)
    int8_acc, int8_clean = held.accuracy(tmp), held.accuracy(tmp, clean=True)
    held.scored.pop(tmp)  # the next model's int8 file reuses the name
    tmp.unlink()
    return {"name": name, "arch": ckpt["config"]["arch"], "channels": ckpt["config"]["channels"],
            "params": count_parameters(model), "checkpoint_bytes": checkpoint.stat().st_size,
            "int8_bytes": int8_bytes, "val_acc_tta": held.accuracy(checkpoint), "int8_val_acc_tta": int8_acc,
            "val_acc_tta_clean": held.accuracy(checkpoint, clean=True), "int8_val_acc_tta_clean": int8_clean,
            "schedule": COMPACT_SCHEDULE if name == "compact" else " ".join(experiments.SHORT)}


GPU_RUNS = ROOT / "runs" / "gpu"  # the GPU suite's histories, unpacked from its logs.tar.gz
CPU_RECIPE_RUNS = ROOT / "runs" / "cpu_recipe"  # the CPU recipe search's proxy runs (bench/cpu_recipe.py)
CPU_LONG_RUNS = sorted((ROOT / "runs").glob("cpu[0-9]*"))  # its full-length runs, one folder per session
SWEEP = ["vgg4", "vgg6", "vgg8", "vgg12", "vgg16", "mobilenet8", "mobilenet16", "mobilenet24",
         "mobilenet32"]  # the size sweep: both families, their parameter ranges overlapping


def collect_runs(results: Path) -> None:
    """results/runs.json: a summary of every finished history, the GPU suite's (runs/gpu/**), the CPU recipe
    search's (runs/cpu_recipe/) and its full-length runs (runs/cpu2/, runs/cpu3/, ...) included."""
    runs = {name: summarize_history(base.with_suffix(".json")) for name, base in BEST.items()}
    for name in experiments.EXPERIMENTS:
        if experiments.finished(name):
            runs[name] = summarize_history(experiments.RUNS / f"{name}.json")
    for name, base in COMPACT_RUNS.items():
        if experiments.finished(base.name, base.parent):
            runs[name] = summarize_history(base.with_suffix(".json"))
    for folder in (GPU_RUNS, CPU_RECIPE_RUNS, *CPU_LONG_RUNS):
        for history in sorted(folder.rglob("*.json")):
            h = json.loads(history.read_text())
            if isinstance(h, dict) and h.get("finished") and "history" in h:
                runs[f"{folder.name}/{history.relative_to(folder).with_suffix('')}"] = summarize_history(history)
    write_json({"runs": runs}, results / "runs.json")


def test_set(path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, description) of the test set: the PrivateTest rows of a challenge file with a Usage
    column (icml_face_data.csv, fer2013.csv: DLSS's protocol, PublicTest being the validation), else the
    rows of an id,feature test file whose ids the id,label file labels (Kaggle's public half)."""
    faces = read_faces(path)
    if faces.usage is not None:
        rows = np.flatnonzero(faces.usage == "PrivateTest")
        if faces.labels is None or not len(rows):
            sys.exit(f"make_report.py: error: {path}: no labelled PrivateTest rows to test on")
        return faces.images[rows], faces.labels[rows].numpy(), f"the {len(rows):,} PrivateTest rows of `{path.name}`"
    labels = read_labels(labels_path, "label file")
    position = pd.Series(np.arange(len(faces.ids)), index=faces.ids)
    unknown = labels.index.difference(position.index)
    if len(unknown):
        sys.exit(f"make_report.py: error: {labels_path}: id {unknown[0]} is not in {path}")
    rows = position.loc[labels.index].to_numpy().copy()  # a writable array: torch indexes with it
    return (faces.images[rows], labels.to_numpy(), f"the public half of `{path.name}` ({len(rows):,} faces, ids "
            f"{labels.index.min()}..{labels.index.max()}, labels from `{labels_path.name}`)")


def collect_test(test_path: Path, labels_path: Path, results: Path) -> None:
    """results/test.json: scores of the released models (ensemble, members, compact) on the test set, with
    flip TTA as hw2_test.sh predicts. Run once the models are chosen: nothing is selected on these labels."""
    images, labels, description = test_set(test_path, labels_path)
    probs = {p: predict_proba(load_model(p)[0], images).numpy() for p in [*RELEASED, Path(RELEASED_COMPACT)]}
    ensemble = np.mean([probs[p] for p in RELEASED], axis=0)
    write_json({"set": description, "n": len(labels), "ensemble": per_class_scores(labels, ensemble.argmax(1)),
                "models": {p.name: per_class_scores(labels, probs[p].argmax(1)) for p in probs}},
               results / "test.json")


def missing(paths: list[Path], what: Path) -> bool:
    """Whether a checkpoint behind results/what is gone (runs/**/*.pt are not committed): then what is kept."""
    gone = [p for p in paths if not p.exists()]
    if gone:
        print(f"kept {what}: {len(gone)} checkpoint(s) missing, e.g. {gone[0]}")
    return bool(gone)


def collect(faces: Faces, groups: np.ndarray, results: Path) -> None:
    """Summaries of every logged run, held-out probabilities of the released ensemble and its scores on the
    whole row split and its duplicate-free part, ensembles, the longer ablations' ensembles, the imbalance
    comparison and the compact sweep, as small files under results/. A file whose checkpoints are gone is
    kept as it is; a sweep entry or a decision row likewise."""
    results.mkdir(parents=True, exist_ok=True)
    collect_runs(results)
    held = HeldOut(faces, groups)
    best = held.probs(*RELEASED)
    with atomic_write(results / "heldout_best.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", "copy_in_train", *[f"p_{c}" for c in CLASS_NAMES]])
        w.writerows([r, y, int(not c), *np.round(p, 5)]
                    for r, y, c, p in zip(held.rows.tolist(), held.labels.tolist(), held.clean, best, strict=True))

    right = held.right(*RELEASED)
    write_json({"n_val": len(held.rows), "n_val_clean": int(held.clean.sum()),
                "ensemble": {"all": float(right.mean()), "clean": float(right[held.clean].mean()),
                             "copies": float(right[~held.clean].mean())},
                "models": {p.name: {"all": held.accuracy(p), "clean": held.accuracy(p, clean=True)}
                           for p in [*RELEASED, Path(RELEASED_COMPACT)]}}, results / "released.json")

    seed_runs = [experiments.RUNS / f"{n}.pt" for n in experiments.SEEDS if experiments.finished(n)]
    if not missing(seed_runs, results / "ensembles.json"):
        ensembles = {str(k): held.accuracy(*seed_runs[:k]) for k in (1, 3, 5) if len(seed_runs) >= k}
        write_json({"base": experiments.BASE, "val_acc_tta": ensembles}, results / "ensembles.json")
    collect_long(faces, groups, results / "long.json")

    write_json(imbalance_rows(held, best, results / "imbalance.json"), results / "imbalance.json")

    recorded_sweep = results / "compact_sweep.json"
    recorded = ({m["name"]: m for m in json.loads(recorded_sweep.read_text())["models"]}
                if recorded_sweep.exists() else {})
    checkpoints = {name: experiments.RUNS / f"{name}.pt" for name in SWEEP if experiments.finished(name)}
    compact = COMPACT_RUNS["compact"]
    if experiments.finished(compact.name, compact.parent):
        checkpoints["compact"] = compact.with_suffix(".pt")
    sweep = []
    for name, checkpoint in checkpoints.items():
        if checkpoint.exists():
            sweep.append(compact_sweep_entry(name, checkpoint, held, results / ".sweep.q8"))
        elif name in recorded:
            print(f"kept the sweep's {name}: {checkpoint} missing")
            sweep.append(recorded[name])
    write_json({"split": SPLIT, "models": sweep}, recorded_sweep)


def decision_rows(model: str, labels: np.ndarray, probs: np.ndarray, prior: np.ndarray, faces: str) -> list[dict]:
    """Scores of the arg-max and (but for a class-weighted model) the logit-adjusted decision."""
    rows = [{"model": model, "decision": "arg-max", "faces": faces, **per_class_scores(labels, probs.argmax(1))}]
    if "class-weighted" not in model:
        rows.append({"model": model, "decision": "logit-adjusted (tau = 1)", "faces": faces,
                     **per_class_scores(labels, logit_adjusted(probs, prior))})
    return rows


def imbalance_rows(held: HeldOut, best: np.ndarray, recorded: Path) -> dict:
    """The decision rules for the released ensemble and the base short run with and without a class-weighted
    loss, on the duplicate-free part; a short run whose checkpoint is gone keeps its recorded rows."""
    kept = json.loads(recorded.read_text())["rows"] if recorded.exists() else []
    rows = decision_rows("released ensemble", held.labels[held.clean], best[held.clean], held.prior,
                         "duplicate-free part")
    for run, label in ((experiments.BASE, experiments.BASE),
                       (f"{experiments.BASE}_class_weighted", f"{experiments.BASE}, class-weighted loss")):
        checkpoint = experiments.RUNS / f"{run}.pt"
        if checkpoint.exists():
            probs = held.probs(checkpoint)[held.clean]
            rows += decision_rows(label, held.labels[held.clean], probs, held.prior, "duplicate-free part")
        else:
            print(f"kept the decision rows of {label}: {checkpoint} missing")
            rows += [{"faces": "whole split", **r} for r in kept if r["model"] == label]
    return {"prior": held.prior.tolist(), "rows": rows}


def collect_long(faces: Faces, groups: np.ndarray, path: Path) -> None:
    """path: the longer ablations' ensembles, per arm the first 1, 2 and 3 seeds' mean probabilities, on the
    split the runs record; kept as it is when a checkpoint is gone."""
    arms = {arm: [f"{arm}_s{s}" for s in experiments.LONG_SEEDS if experiments.finished(f"{arm}_s{s}")]
            for arm in experiments.LONG_ARMS}
    names = [n for run_names in arms.values() for n in run_names]
    if not names or missing([experiments.RUNS / f"{n}.pt" for n in names], path):
        return
    split = json.loads((experiments.RUNS / f"{names[0]}.json").read_text())["split"]
    held = HeldOut(faces, groups, split)
    ensembles = {arm: {str(k): held.accuracy(*[experiments.RUNS / f"{n}.pt" for n in names[:k]])
                       for k in range(1, len(names) + 1)} for arm, names in arms.items()}
    write_json({"split": split, "n_val": len(held.rows), "n_val_with_copy": int((~held.clean).sum()),
                "runs": arms, "val_acc_tta": ensembles}, path)


def write_json(obj: object, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


# ---------------------------------------------------------------- figures

def save(fig: plt.Figure, path: Path) -> None:
    """A PNG, in 256 colours where that is smaller (colour-mapped figures shrink the most): bytes that the
    tracked tree needs to leave room for the GPU data pack beside it in one device call (docs/gpu.md)."""
    fig.tight_layout()
    full = io.BytesIO()
    fig.savefig(full, dpi=110, format="png")
    plt.close(fig)
    palette = io.BytesIO()
    Image.open(full).convert("RGB").quantize(256).save(palette, format="png", optimize=True)
    with atomic_write(path, "wb") as f:
        f.write(min(full.getvalue(), palette.getvalue(), key=len))


def plot_class_counts(labels: np.ndarray, path: Path) -> np.ndarray:
    counts = np.bincount(labels, minlength=K)
    fig, ax = plt.subplots(figsize=(6, 2.6))
    bars = ax.bar(CLASS_NAMES, counts, color=CLASS_COLORS)
    for bar, n in zip(bars, counts, strict=True):
        ax.annotate(f"{n:,}\n{n / counts.sum():.1%}", (bar.get_x() + bar.get_width() / 2, n), ha="center",
                    va="bottom", fontsize=8)
    ax.set(title="Training file: faces per class", ylabel="faces", ylim=(0, counts.max() * 1.25))
    save(fig, path)
    return counts


def face_grid(images: list[np.ndarray], titles: list[str], ncols: int, path: Path, title: str,
              colors: list | None = None) -> None:
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.25 * ncols, 1.4 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, t) in enumerate(zip(images, titles, strict=True)):
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(t, fontsize=7, color=colors[i] if colors else "black")
    fig.suptitle(title)
    save(fig, path)


def plot_samples(faces: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 10) -> None:
    rng = np.random.default_rng(0)
    images, titles, colors = [], [], []
    for c, name in enumerate(CLASS_NAMES):
        for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False):
            images.append(faces[i])
            titles.append(name)
            colors.append(CLASS_COLORS[c])
    face_grid(images, titles, per_class, path, "Random training faces, one row per class", colors)


def plot_curves(runs: dict[str, dict], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, training (dashed) and validation (solid); o marks the kept epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for (name, run), color in zip(runs.items(), plt.get_cmap("Dark2").colors, strict=False):
        epochs = [e["epoch"] for e in run["history"]]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            augmented = "" if run["args"].get("no_augment") else ", augmented"
            ax.plot(epochs, [e[f"train_{key}"] for e in run["history"]], "--", color=color,
                    label=f"{name} train{augmented}")
            ax.plot(epochs, [e[f"val_{key}"] for e in run["history"]], "-", color=color, label=f"{name} val")
            best = run["history"][run["best_epoch"] - 1]
            ax.plot(best["epoch"], best[f"val_{key}"], "o", color=color, markersize=7, mfc="none", mew=2)
    ax_loss.set(title="Loss (train: on the batches as trained, label-smoothed)", xlabel="epoch",
                ylabel="cross-entropy")
    ax_acc.set(title="Accuracy (o: epoch kept by early stopping)", xlabel="epoch", ylabel="accuracy")
    ax_acc.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path)


SPLIT_NAMES = {"stratified": "rows", "grouped": "groups"}  # how the runs table names each split method
ARM_STYLE = {"long": ("tab:blue", "with augmentation"), "long_no_augment": ("tab:orange", "without augmentation")}


def plot_long(runs: dict, arms: dict[str, dict], path: Path) -> None:
    """The longer ablations: accuracy per epoch of every seed (training dashed), and each arm's kept models
    (dots), their mean (bar) and their ensemble (star)."""
    fig, (ax_curve, ax_end) = plt.subplots(1, 2, figsize=(10, 3.8), width_ratios=(3, 2))
    for i, (arm, a) in enumerate(arms.items()):
        color, label = ARM_STYLE[arm]
        for k, name in enumerate(a["names"]):
            epochs = runs[name]["history"]
            ax_curve.plot([e["epoch"] for e in epochs], [100 * e["val_acc"] for e in epochs], "-", color=color,
                          lw=1, label=f"{label}: held-out" if k == 0 else None)
            ax_curve.plot([e["epoch"] for e in epochs], [100 * e["train_acc"] for e in epochs], "--", color=color,
                          lw=1, label=f"{label}: training" if k == 0 else None)
        ax_end.plot([100 * x for x in a["accs"]], [i] * len(a["accs"]), "o", color=color, mfc="none", mew=1.5,
                    label="one seed" if i == 0 else None)
        ax_end.plot([100 * a["mean"]] * 2, [i - 0.25, i + 0.25], "-", color=color, lw=2,
                    label="mean of the seeds" if i == 0 else None)
        if a["ensemble"] is not None:
            ax_end.plot(100 * a["ensemble"], i, "*", color=color, markersize=13,
                        label=f"ensemble of {len(a['names'])}" if i == 0 else None)
    ax_curve.set(title="Accuracy per epoch, every seed (held-out: no TTA)", xlabel="epoch", ylabel="accuracy (%)")
    ax_curve.legend(fontsize=7)
    ax_end.set(title="Kept models, held-out with flip TTA", xlabel="held-out accuracy (%)", ylim=(-0.6, 1.6))
    ax_end.set_yticks(range(len(arms)), [ARM_STYLE[arm][1] for arm in arms])
    ax_end.legend(fontsize=7, loc="center left")
    save(fig, path)


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    norm = cm / cm.sum(1, keepdims=True).clip(1)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xticks=range(K), yticks=range(K), xlabel="predicted", ylabel="true",
           title="Confusion matrix, held-out split (rows sum to 1)")
    ax.set_xticklabels(CLASS_NAMES, rotation=45)
    ax.set_yticklabels(CLASS_NAMES)
    fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, path)


def plot_per_class(scores: dict, path: Path, faces: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 2.6))
    x = np.arange(K)
    for k, (key, hatch) in enumerate((("precision", ""), ("recall", "//"), ("f1", ".."))):
        ax.bar(x + (k - 1) * 0.27, scores[key], 0.27, color=CLASS_COLORS, hatch=hatch, edgecolor="black",
               linewidth=0.4, label=key)
    ax.set(xticks=x, title=f"Per-class precision (plain), recall (//) and F1 (..), {faces}", ylim=(0, 1),
           ylabel="score")
    ax.set_xticklabels(CLASS_NAMES)
    ax.legend(fontsize=8, ncols=3)
    save(fig, path)


def last_conv_activation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the last ReLU in model.features (the last conv layer's output)."""
    relu = [m for m in model.features if isinstance(m, nn.ReLU)][-1]
    kept = {}
    handle = relu.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return kept["a"].mean(1, keepdim=True)


def gradient_saliency(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """|d score of the predicted class / d pixel| (Simonyan et al. 2014)."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return x.grad.abs()


def looks_like_a_face(face: np.ndarray) -> bool:
    """Whether faces.py's detector finds a face in the 48x48 face upscaled 4x: FER2013 also holds a few
    placeholders ("this image has moved") and drawings, which would make poor examples."""
    big = np.asarray(Image.fromarray(face).resize((192, 192), Image.Resampling.BICUBIC))
    return bool(faces.detect(big, 0))


def plot_maps(model: nn.Module, images: np.ndarray, labels: np.ndarray, act_path: Path, sal_path: Path,
              per_class: int = 2) -> None:
    """Per class, per_class held-out faces in which a face is found, each above its map: a 7-column grid."""
    rng = np.random.default_rng(1)
    picked = []
    for c in range(K):
        shuffled = rng.permutation(np.flatnonzero(labels == c))
        found = list(itertools.islice((i for i in shuffled if looks_like_a_face(images[i])), per_class))
        picked.append(found + [i for i in shuffled if i not in found][:per_class - len(found)])  # none: any
    order = [picked[c][k] for k in range(per_class) for c in range(K)]  # row k holds every class's k-th face
    x = torch.from_numpy(images[order]).float().div(255)[:, None]
    model.eval()
    predicted = model(x).argmax(1).tolist()
    act = nn.functional.interpolate(last_conv_activation(model, x), size=x.shape[-2:], mode="bilinear")
    sal = gradient_saliency(model, x)
    for maps, path, what in ((act, act_path, "Last conv layer's mean activation"),
                             (sal, sal_path, "Gradient saliency |d score / d pixel|")):
        fig, axes = plt.subplots(2 * per_class, K, figsize=(1.45 * K, 1.6 * 2 * per_class + 0.5))
        for i, row in enumerate(order):
            face_ax, map_ax = axes[2 * (i // K), i % K], axes[2 * (i // K) + 1, i % K]
            face_ax.imshow(images[row], cmap="gray", vmin=0, vmax=255)
            face_ax.set_title(f"{CLASS_NAMES[labels[row]]} → {CLASS_NAMES[predicted[i]]}", fontsize=9,
                              color=CLASS_COLORS[labels[row]])
            map_ax.imshow(images[row], cmap="gray", vmin=0, vmax=255)
            map_ax.imshow(maps[i, 0].numpy(), cmap="jet", alpha=0.5)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"{what}: each held-out face above its map (true → predicted)", fontsize=11)
        save(fig, path)


def plot_confusion_examples(images: np.ndarray, rows: np.ndarray, y: np.ndarray, predicted: np.ndarray,
                            confusions: list[tuple[int, int, float]], path: Path, per_pair: int = 6) -> None:
    picked, titles, colors = [], [], []
    for t, p, _ in confusions:
        hits = np.flatnonzero((y == t) & (predicted == p))[:per_pair]
        picked += [images[rows[i]] for i in hits]
        titles += [f"{CLASS_NAMES[t]} → {CLASS_NAMES[p]}"] * len(hits)
        colors += [CLASS_COLORS[t]] * len(hits)
    face_grid(picked, titles, per_pair, path, "Commonest confusions (true → predicted)", colors)


def read_results(results: Path) -> dict:
    """Every file of results/ that collect() and collect_facts() write; the held-out predictions of the
    released ensemble as arrays: rows (of the data file), y (labels), predicted (arg-max) and clean (no
    copy of the face in the training part)."""
    with open(results / "heldout_best.csv") as f:
        held = list(csv.DictReader(f))
    return {"runs": json.loads((results / "runs.json").read_text())["runs"],
            "ensembles": json.loads((results / "ensembles.json").read_text()),
            "imbalance": json.loads((results / "imbalance.json").read_text()),
            "sweep": json.loads((results / "compact_sweep.json").read_text())["models"],
            "facts": json.loads((results / "facts.json").read_text()),
            "long": json.loads((results / "long.json").read_text()),
            "released": json.loads((results / "released.json").read_text()),
            "test": json.loads((results / "test.json").read_text()),
            "rows": np.array([int(r["row"]) for r in held]), "y": np.array([int(r["label"]) for r in held]),
            "clean": np.array([r["copy_in_train"] == "0" for r in held]),
            "predicted": np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in held]).argmax(1)}


def make_figures(results: Path, data: Path, out: Path, best_model: Path) -> None:
    """Every PNG of FIGURES in out, from results/, the faces of the data file and the model's maps."""
    r = read_results(results)
    runs, rows, y, predicted = r["runs"], r["rows"], r["y"], r["predicted"]
    faces = read_faces(data, require_labels=True)
    images, labels = faces.images[:, 0].numpy(), faces.labels.numpy()
    plot_class_counts(labels, out / "class_counts.png")
    plot_samples(images, labels, out / "samples.png")
    plot_curves({n: runs[n] for n in BEST}, out / "curves_best.png", "The released models (cpu preset), both seeds")
    plot_curves({n: runs[n] for n in (experiments.BASE, "mlp_matched", "mlp_matched_own_recipe")},
                out / "cnn_vs_mlp.png", "CNN against an MLP with the same number of parameters")
    plot_long(runs, long_arms(runs, r["long"]), out / "tricks.png")
    y, predicted = y[r["clean"]], predicted[r["clean"]]  # the faces a model cannot answer from memory
    cm = confusion_matrix(y, predicted)
    plot_confusion(cm, out / "confusion.png")
    plot_confusion_examples(images, rows[r["clean"]], y, predicted, top_confusions(cm), out / "confusions_examples.png")
    plot_per_class(r["test"]["ensemble"], out / "per_class.png", "test set")
    plot_maps(load_model(best_model)[0], images[rows], r["y"], out / "activations.png", out / "saliency.png")
    plot_compact(r["sweep"], out / "compact.png")


def plot_compact(sweep: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"vgg": ("o", "tab:blue", "VGG-style CNN"), "mobilenet": ("s", "tab:orange", "MobileNet-style")}
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "int8_bytes", "int8 file size, raw (bytes)")):
        for arch, (marker, color, name) in styles.items():
            pts = [m for m in sweep if m["arch"] == arch and m["name"] != "compact"]
            ax.plot([m[key] for m in pts], [100 * m["int8_val_acc_tta"] for m in pts], marker + "-", color=color,
                    label=f"{name} (same short schedule)")
        for m in sweep:
            if m["name"] == "compact":
                ax.plot(m[key], 100 * m["int8_val_acc_tta"], "*", color="tab:red", markersize=14,
                        label="compact (shipped: distilled, longer schedule)")
            ax.annotate(m["name"], (m[key], 100 * m["int8_val_acc_tta"]), fontsize=7, xytext=(4, -8),
                        textcoords="offset points")
        if key == "int8_bytes":
            ax.axvline(225_000, color="gray", ls=":", label="225,000-byte limit")
        ax.set(xscale="log", xlabel=label, ylabel="held-out accuracy, int8, flip TTA (%)")
        values = [m[key] for m in sweep]
        ticks = [t for t in (1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6) if min(values) / 1.5 <= t <= max(values) * 1.5]
        ax.set_xticks(ticks, [f"{t / 1000:.0f}k" for t in ticks])  # 1-2-5 steps: a log axis one can read off
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    fig.suptitle("Model size against held-out accuracy")
    save(fig, path)


# ---------------------------------------------------------------- facts: the data file and logs -> results/

SPEED_LOGS = {"ensemble": ROOT / "runs" / "malloc" / "speed_default.log",  # bench/speed.py's logs
              "single": ROOT / "runs" / "malloc" / "speed_single.log",
              "compact": ROOT / "runs" / "malloc" / "speed_compact.log"}
MLP_TRIALS = ROOT / "runs" / "mlp_recipe"  # the MLP recipe's 15-epoch trials


def collect_facts(faces: Faces, groups: np.ndarray, results: Path, model_path: Path) -> None:
    """What the text needs besides the runs: class counts, duplicates, saliency shares of the released
    model, and figures from committed logs, as results/facts.json (no run checkpoints needed)."""
    train_idx, val_idx = recorded_split(faces, SPLIT)
    model, _ = load_model(model_path)
    speeds = {name: float(re.search(r"^predict .*median ([\d.]+) s", log.read_text(), re.MULTILINE).group(1))
              for name, log in SPEED_LOGS.items()}
    test_rows = re.search(r"^load test\.csv\.gz \(([\d,]+) rows\)", SPEED_LOGS["compact"].read_text(), re.MULTILINE)
    trials = {}
    for history in sorted(MLP_TRIALS.glob("*.json")):
        h = json.loads(history.read_text())
        trials[history.stem] = {"no_augment": h["args"]["no_augment"], "lr": h["args"]["lr"],
                                "epochs": h["epoch"], "val_acc": h["best_val_acc"]}
    write_json({"counts": np.bincount(faces.labels.numpy(), minlength=K).tolist(),
                "n_distinct": int(groups.max() + 1), "n_train": len(train_idx),
                "saliency_bands": saliency_bands(model, faces.images[val_idx, 0].numpy()),
                "predict_seconds": speeds, "test_rows": test_rows.group(1), "mlp_trials": trials,
                "versions": {"python": platform.python_version(), "torch": torch.__version__.split("+")[0]}},
               results / "facts.json")


# ---------------------------------------------------------------- the report text: results/ -> template.md

TEMPLATES = HERE / "templates"  # <report>.md: each report's prose, with placeholders
REPORTS = ("hw2", "dlss", "hw8")  # one report per homework, each built from the same results
BLANK = "________"  # a header field until its flag fills it
HEADER = {"name": BLANK, "student_id": BLANK, "department": BLANK, "collaborators": "none"}
# the last page on which a section may start, and the most pages in all (DLSS: 3 pages, 1.5 more for the bonus)
PAGE_LIMITS = {"dlss": {"Task": 3, "Bonus": 4, "total": 4.5}}


def weight_bits(header: dict) -> dict[str, str]:
    """The bits per weight of a k-bit file (quantized.py): of its larger tensors and of its 3x3 filters."""
    def bits(small: bool) -> str:
        return "/".join(map(str, sorted({t["bits"] for t in header["tensors"]
                                         if "bits" in t and (math.prod(t["shape"][1:]) <= SMALL_ROW) == small})))
    return {"compact_bits": bits(False), "compact_small_bits": bits(True)}


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def points(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-0.0", "±0.0").replace("+0.0", "±0.0")


def share(x: float) -> str:
    return f"{100 * x:.1f} %"


def minutes(run: dict) -> str:
    return "n/a" if run.get("wall_seconds") is None else f"{run['wall_seconds'] / 60:.1f} min"


def layer_table(model: nn.Module) -> list[list[str]]:
    """type, output shape, parameters of every leaf layer, from one forward pass."""
    rows = []
    hooks = [m.register_forward_hook(lambda m, _i, out, name=name: rows.append(
        [name, type(m).__name__, "×".join(map(str, out.shape[1:])), f"{sum(p.numel() for p in m.parameters()):,}"]))
        for name, m in model.named_modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 48, 48))
    for h in hooks:
        h.remove()
    return rows


def top_confusions(cm: np.ndarray, n: int = 3) -> list[tuple[int, int, float]]:
    """The n largest off-diagonal row-normalised cells: (true, predicted, fraction of the true class)."""
    norm = cm / cm.sum(1, keepdims=True).clip(1)
    np.fill_diagonal(norm, 0)
    order = np.argsort(norm, axis=None)[::-1][:n]
    return [(int(i // K), int(i % K), float(norm.flat[i])) for i in order]


def saliency_bands(model: nn.Module, faces: np.ndarray) -> dict[str, float]:
    """Share of the gradient saliency in horizontal bands of the 48x48 face (eyes, nose, mouth)."""
    x = torch.from_numpy(faces).float().div(255)[:, None]
    sal = sum(gradient_saliency(model.eval(), chunk)[:, 0].sum(0) for chunk in x.split(256))
    total = float(sal.sum())
    return {name: float(sal[a:b].sum()) / total for name, (a, b) in BANDS.items()}


BANDS = {"eyes (rows 10-24)": (10, 24), "nose (rows 24-32)": (24, 32), "mouth (rows 32-44)": (32, 44)}


def seed_spread(runs: dict) -> tuple[list[float], float]:
    """The base run's held-out (TTA) accuracy over its seeds, and their standard deviation."""
    accs = [runs[n]["val_acc_tta"] for n in experiments.SEEDS if n in runs]
    return accs, float(np.std(accs, ddof=1))


def trick_rows(runs: dict, ensembles: dict) -> list[tuple[str, float, str]]:
    """(setting, held-out accuracy, note) for each trick on and off."""
    base = runs[experiments.BASE]
    rows = [(f"{experiments.BASE}: all tricks on", base["val_acc_tta"],
             f"reference; training accuracy {pct(base['history'][-1]['train_acc'])}")]
    for name, what in ((f"{experiments.BASE}_no_normalize", "without normalisation"),
                       (f"{experiments.BASE}_no_augment", "without augmentation")):
        r = runs[name]
        rows.append((what, r["val_acc_tta"], f"run {name}; training accuracy {pct(r['history'][-1]['train_acc'])}"))
    for k, acc in ensembles["val_acc_tta"].items():
        rows.append((f"ensemble of {k} seed{'s' if k != '1' else ''}", acc, "mean of the models' probabilities"))
    return rows


def trick_verdicts(rows: list[tuple[str, float, str]], noise: float) -> str:
    """One line per changed setting: its difference to the reference, and whether it exceeds seed noise."""
    reference = rows[0][1]
    lines = []
    for name, acc, _note in rows[1:]:
        if name == "ensemble of 1 seed":  # the reference itself
            continue
        diff = acc - reference
        verdict = difference_verdict(diff, noise)
        lines.append(f"- {capitalized(name)}: {points(diff)} points against the reference, {verdict}.")
    return "\n".join(lines)


def matched_pairs(sweep: list[dict]) -> list[tuple[dict, dict]]:
    """(VGG, MobileNet) pairs of the short sweep within 1.6x of each other in parameters, smallest first."""
    vggs = [m for m in sweep if m["arch"] == "vgg" and m["name"] != "compact"]
    mobiles = [m for m in sweep if m["arch"] == "mobilenet" and m["name"] != "compact"]
    pairs = [(v, m) for v in vggs for m in mobiles
             if max(v["params"], m["params"]) / min(v["params"], m["params"]) <= 1.6]
    return sorted(pairs, key=lambda p: p[0]["params"])


def matched_sentence(sweep: list[dict], noise: float) -> str:
    """Each pair of similar size compared, its margin against the seed-noise band."""
    pairs = matched_pairs(sweep)
    if not pairs:
        return "The two families have no models within 1.6 times of each other in size: no comparison is possible."
    lines = []
    for v, m in pairs:
        ahead = v if v["int8_val_acc_tta"] > m["int8_val_acc_tta"] else m
        margin = abs(v["int8_val_acc_tta"] - m["int8_val_acc_tta"])
        lines.append(f"- {v['name']} ({v['params']:,} parameters, {pct(v['int8_val_acc_tta'])}) against {m['name']} "
                     f"({m['params']:,}, {pct(m['int8_val_acc_tta'])}): {ahead['name']} ahead by "
                     f"{100 * margin:.1f} points, {difference_verdict(margin, noise)}.")
    return "\n".join(lines)


def matched_answer(sweep: list[dict], noise: float) -> str:
    """How many of the pairs of similar size each family wins beyond seed noise."""
    pairs = matched_pairs(sweep)
    if not pairs:
        return "No pair of the two families is close enough in size to compare."
    diffs = [m["int8_val_acc_tta"] - v["int8_val_acc_tta"] for v, m in pairs]
    mobile, vgg = sum(d > noise for d in diffs), sum(d < -noise for d in diffs)
    return (f"Of the {len(pairs)} pairs within 1.6 times of each other in parameters "
            f"({min(v['params'] for v, _ in pairs):,} to {max(m['params'] for _, m in pairs):,}), the MobileNet-style "
            f"network is ahead beyond seed noise in {mobile}, the VGG in {vgg}, and {len(pairs) - mobile - vgg} "
            f"{'is' if len(pairs) - mobile - vgg == 1 else 'are'} within noise.")


def size_answer(sweep: list[dict]) -> str:
    """Each family's accuracy range over its widths in the short sweep."""
    parts = []
    for arch, name in (("vgg", "the VGG"), ("mobilenet", "the MobileNet-style network")):
        ms = sorted((m for m in sweep if m["arch"] == arch and m["name"] != "compact"), key=lambda m: m["params"])
        parts.append(f"{name} goes from {pct(ms[0]['int8_val_acc_tta'])} at {ms[0]['params']:,} parameters to "
                     f"{pct(ms[-1]['int8_val_acc_tta'])} at {ms[-1]['params']:,}")
    return capitalized("; ".join(parts))


def per_class_caption(scores: dict) -> str:
    best_p, worst_r, worst_f = (int(np.argmax(scores["precision"])), int(np.argmin(scores["recall"])),
                                int(np.argmin(scores["f1"])))
    return (f"{CLASS_NAMES[best_p]} has the highest precision, {CLASS_NAMES[worst_r]} the lowest recall and "
            f"{CLASS_NAMES[worst_f]} the lowest F1")


def saliency_sentence(bands: dict[str, float]) -> str:
    """Which bands draw more of the saliency than their share of the face."""
    ratio = {b: v / ((BANDS[b][1] - BANDS[b][0]) / 48) for b, v in bands.items()}
    above = [b.split(" (")[0] for b, r in ratio.items() if r > 1]
    top = max(ratio, key=ratio.get).split(" (")[0]
    rest = 1 - sum(bands.values())
    named = ", ".join(above[:-1]) + " and " + above[-1] if len(above) > 1 else above[0] if above else "no band"
    return (f"{capitalized(named)} "
            f"draw{'s' if len(above) == 1 else ''} more of the saliency than {'its' if len(above) == 1 else 'their'} "
            f"share of the face, the {top} most for its size; the rows outside the three bands, the forehead, chin "
            f"and borders, draw {share(rest)} of it.")


def long_arms(runs: dict, long: dict) -> dict[str, dict]:
    """Per arm of the longer ablations: its runs, their kept models' held-out accuracy (flip TTA) with mean
    and standard deviation, the means of the kept and last epochs (no TTA) and of the last epoch's training
    accuracy, and the ensemble of all its seeds."""
    arms = {}
    for arm, names in long["runs"].items():
        accs = [runs[n]["val_acc_tta"] for n in names]
        arms[arm] = {"names": names, "accs": accs, "mean": float(np.mean(accs)),
                     "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan"),
                     "kept": float(np.mean([runs[n]["val_acc"] for n in names])),
                     "last": float(np.mean([runs[n]["last_val_acc"] for n in names])),
                     "train": float(np.mean([runs[n]["history"][-1]["train_acc"] for n in names])),
                     "best_epochs": [runs[n]["best_epoch"] for n in names], "epochs": runs[names[0]]["epochs_run"],
                     "ensemble": long["val_acc_tta"][arm].get(str(len(names)))}
    return arms


def difference_verdict(diff: float, noise: float) -> str:
    return "beyond seed noise" if abs(diff) > noise else "within seed noise"


def augmentation_effect(arms: dict[str, dict]) -> tuple[float, float]:
    """The arms' difference of means (with minus without augmentation) and twice its standard error."""
    aug, plain = arms["long"], arms["long_no_augment"]
    return (aug["mean"] - plain["mean"],
            2 * float(np.sqrt(aug["std"] ** 2 / len(aug["accs"]) + plain["std"] ** 2 / len(plain["accs"]))))


def long_sentences(arms: dict[str, dict]) -> dict[str, str]:
    """The longer ablations' verdicts: augmentation (difference of the arms' means against twice its
    standard error), early stopping (kept against last epoch) and ensembles (against the members' mean)."""
    aug, plain = arms["long"], arms["long_no_augment"]
    diff, noise = augmentation_effect(arms)
    verb = "raises" if diff > 0 else "lowers"
    plain_gap, aug_gap = plain["train"] - plain["last"], aug["train"] - aug["last"]
    augmentation = (f"Over these epochs augmentation {verb} the held-out accuracy by {abs(100 * diff):.1f} points "
                    f"(mean of {len(aug['accs'])} seeds against {len(plain['accs'])}); twice the standard error of "
                    f"that difference is {100 * noise:.1f} points, so it is {difference_verdict(diff, noise)}. "
                    f"Without augmentation the network fits its training faces to {pct(plain['train'])} on the "
                    f"last epoch, {abs(100 * plain_gap):.1f} points {'above' if plain_gap > 0 else 'below'} its "
                    f"held-out accuracy then; with it, {pct(aug['train'])} on augmented faces with dropout on, "
                    f"{abs(100 * aug_gap):.1f} points {'above' if aug_gap > 0 else 'below'}.")
    if diff < -noise and aug_gap < 0.02:
        augmentation += (" So at this size and length the augmented network underfits: it cannot fit the shifted, "
                         "rotated, zoomed and erased faces better than it generalises, and augmentation only makes "
                         "its training task harder, while the network without it, though it overfits, has not yet "
                         "overfitted enough to lose. Augmentation pays where a network can fit the augmented faces: "
                         "a wider one, or many more epochs; the GPU suite's full-length ablation (the full-width "
                         "VGG for 120 epochs, with and without) is that test.")
    elif diff > noise:
        augmentation += (" Augmentation trades fit for generalisation: each epoch shows every face shifted, rotated, "
                         "zoomed or partly erased anew, so the network cannot memorise the exact pixels.")
    early, ensembles = [], []
    for arm, a in arms.items():
        gap, gain = a["kept"] - a["last"], a["ensemble"] - a["mean"]
        early.append(f"{ARM_STYLE[arm][1]}, the kept epochs were {', '.join(map(str, a['best_epochs']))} of "
                     f"{a['epochs']} and they score {100 * gap:.1f} points above the last epoch "
                     f"({difference_verdict(gap, 2 * a['std'])})")
        ensembles.append(f"{ARM_STYLE[arm][1]}, the ensemble of {len(a['names'])} scores {pct(a['ensemble'])} "
                         f"against its members' mean of {pct(a['mean'])} ({points(gain)} points, "
                         f"{difference_verdict(gain, 2 * a['std'])})")
    caption = ("; without augmentation the training curve climbs away from the held-out one" if plain_gap > 0.05
               else "")
    return {"long_augmentation": augmentation, "long_caption": caption,
            "long_early": capitalized("; ".join(early)) + ".",
            "long_ensembles": capitalized("; ".join(ensembles)) + "."}


def classification_table(scores: dict) -> str:
    return table(["class", "precision", "recall", "F1", "support"],
                 [[c, f"{scores['precision'][i]:.3f}", f"{scores['recall'][i]:.3f}", f"{scores['f1'][i]:.3f}",
                   scores["support"][i]] for i, c in enumerate(CLASS_NAMES)])


def test_gap_sentence(validation: dict, test: dict) -> str:
    """How the test set's accuracy and macro-F1 compare with validation's."""
    gap = test["accuracy"] - validation["accuracy"]
    return (f"Accuracy is {abs(100 * gap):.1f} points {'higher' if gap > 0 else 'lower'} than on validation, and "
            f"macro-F1 {test['macro_f1']:.3f} against {validation['macro_f1']:.3f}.")


HPARAMS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "warmup", "patience", "rotate",
           "shift", "scale", "erase", "seed", "split_seed")  # the released runs' settings the report lists


def hparams_table(args: dict) -> str:
    """The settings in two column pairs, so that a short table does not take a tall one's room."""
    pairs = [[k, f"`{args[k]}`"] for k in HPARAMS if k in args]
    half = (len(pairs) + 1) // 2
    rows = [left + right for left, right in itertools.zip_longest(pairs[:half], pairs[half:], fillvalue=["", ""])]
    return table(["setting", "value", "setting", "value"], rows)


def q2_answer(arms: dict[str, dict]) -> str:
    """HW2 question 2 in one sentence: each trick's effect in the longer ablations, with its verdict."""
    aug = arms["long"]
    diff, noise = augmentation_effect(arms)

    def effects(key: str, against: str) -> str:
        return ", ".join(f"{points(a[key] - a[against])} ({difference_verdict(a[key] - a[against], 2 * a['std'])})"
                         for a in arms.values())
    early, ensemble = effects("kept", "last"), effects("ensemble", "mean")
    return (f"Over {aug['epochs']} epochs augmentation {'raised' if diff > 0 else 'lowered'} held-out accuracy by "
            f"{abs(100 * diff):.1f} points ({difference_verdict(diff, noise)}); early stopping kept an epoch "
            f"{early} points above the last, with and without augmentation; and averaging "
            f"{len(aug['names'])} seeds gained {ensemble} points over their mean.")


def confusion_answer(cm: np.ndarray) -> str:
    """HW2 question 3 in one sentence: the commonest confusions."""
    pairs = [f"{CLASS_NAMES[t]} taken for {CLASS_NAMES[p]} ({share(f)} of {CLASS_NAMES[t]})"
             for t, p, f in top_confusions(cm)]
    return f"The commonest confusions are {', '.join(pairs[:-1])} and {pairs[-1]}."


IMBALANCE_SETS = {"duplicate-free part": "on validation (its duplicate-free part)",
                  "whole split": "on the whole held-out row split (the short runs, whose checkpoints are gone)"}


def by_faces(rows: list[dict]) -> dict[str, list[dict]]:
    """The decision rows grouped by the faces they were scored on, in IMBALANCE_SETS' order: one table each."""
    return {scored_on: [r for r in rows if r["faces"] == scored_on] for scored_on in IMBALANCE_SETS
            if any(r["faces"] == scored_on for r in rows)}


def imbalance_tables(rows: list[dict], first: int) -> str:
    """Caption and table of the decision rules, one per evaluation set, numbered from first."""
    blocks = []
    for number, (scored_on, group) in enumerate(by_faces(rows).items(), first):
        blocks.append(f"*Table {number}. Decision rules {IMBALANCE_SETS[scored_on]}.*\n\n" + table(
            ["model", "decision", "accuracy", "balanced accuracy", "macro-F1", "disgust recall", "disgust precision"],
            [[r["model"], r["decision"], pct(r["accuracy"]), pct(np.mean(r["recall"])), f"{r['macro_f1']:.3f}",
              f"{r['recall'][1]:.3f}", f"{r['precision'][1]:.3f}"] for r in group]))
    return "\n\n".join(blocks)


def best_decisions(rows: list[dict], first: int) -> str:
    """Within each table (one evaluation set), which model and rule give the highest accuracy and macro-F1."""
    sentences = []
    for number, group in enumerate(by_faces(rows).values(), first):
        acc, f1 = max(group, key=lambda r: r["accuracy"]), max(group, key=lambda r: r["macro_f1"])
        sentences.append(f"In Table {number} the highest accuracy comes from the {acc['model']} with the "
                         f"{acc['decision']} decision ({pct(acc['accuracy'])}), the highest macro-F1 from the "
                         f"{f1['model']} with the {f1['decision']} decision ({f1['macro_f1']:.3f}).")
    return " ".join(sentences)


def prior_sentence(rows: list[dict]) -> str:
    """What correcting the released ensemble's decision for the class prior gains and costs."""
    plain, adjusted = (next(r for r in rows if r["model"] == "released ensemble" and r["decision"] == d)
                       for d in ("arg-max", "logit-adjusted (tau = 1)"))
    return (f"Correcting the released ensemble for the prior at decision time, which needs no retraining, moves its "
            f"balanced accuracy (the mean recall over classes) from {pct(np.mean(plain['recall']))} to "
            f"{pct(np.mean(adjusted['recall']))} and its recall of disgust from {plain['recall'][1]:.3f} to "
            f"{adjusted['recall'][1]:.3f}, while disgust's precision goes from {plain['precision'][1]:.3f} to "
            f"{adjusted['precision'][1]:.3f}, accuracy from {pct(plain['accuracy'])} to {pct(adjusted['accuracy'])} "
            f"and macro-F1 from {plain['macro_f1']:.3f} to {adjusted['macro_f1']:.3f}. It is the rule for a user "
            "who needs the rare expressions found, and accepts more false alarms.")


def recheck_sentence(rechecked: list[dict], seed_std: float) -> str:
    """How far the duplicate-free part moves the short runs' figures, against their seed spread."""
    gap = max(abs(m["val_acc_tta"] - m["val_acc_tta_clean"]) for m in rechecked)
    return (f"the duplicate-free part moves the figure by at most {100 * gap:.1f} points, "
            + (f"less than the short schedule's seed-to-seed standard deviation ({100 * seed_std:.2f} points): short "
               "runs memorise little." if gap < seed_std else
               f"as much as the short schedule's seed-to-seed standard deviation ({100 * seed_std:.2f} points) or "
               "more: read their small differences with care."))


def capitalized(text: str) -> str:
    return text[0].upper() + text[1:]


def report_values(results: Path, model_path: Path, fields: dict[str, str]) -> dict[str, str]:
    """Every placeholder of the templates, from results/ and the model files (their layers) alone; fields
    are the header's (name, student_id, department, collaborators)."""
    r = read_results(results)
    runs, ensembles, imbalance, sweep, facts = r["runs"], r["ensembles"], r["imbalance"], r["sweep"], r["facts"]
    released, clean = r["released"], r["clean"]
    y, predicted = r["y"][clean], r["predicted"][clean]  # the faces a model cannot answer from memory
    scores = per_class_scores(y, predicted)
    counts = np.array(facts["counts"])
    config = load_model(model_path)[1]["config"]
    model = build_model(config).eval()  # the trained layers: a released int8 file holds them with BatchNorm folded
    s0, s1 = runs["vgg_cpu_s0"], runs["vgg_cpu_s1"]
    base, mlp, mlp_own = runs[experiments.BASE], runs["mlp_matched"], runs["mlp_matched_own_recipe"]
    seed_accs, seed_std = seed_spread(runs)
    tricks = trick_rows(runs, ensembles)
    arms = long_arms(runs, r["long"])
    compact = next(m for m in sweep if m["name"] == "compact")
    member_acc = {name: m["clean"] for name, m in released["models"].items()}
    best_member = max(member_acc[p.name] for p in RELEASED)
    ensemble_acc = released["ensemble"]["clean"]
    rechecked = [m for m in sweep if "val_acc_tta_clean" in m]  # short runs whose checkpoints were at hand
    trials = facts["mlp_trials"]
    seconds = facts["predict_seconds"]
    test = r["test"]
    test_member = {name: m["accuracy"] for name, m in test["models"].items()}
    compact_model, compact_file = load_model(RELEASED_COMPACT)
    compact_run, compact_config = runs["compact"], compact_file["config"]
    released_bytes = [p.stat().st_size for p in RELEASED]
    compact_bytes = Path(RELEASED_COMPACT).stat().st_size
    noise = 2 * seed_std
    return {
        **fields,
        "python_version": facts["versions"]["python"], "torch_version": facts["versions"]["torch"],
        "test_rows": facts["test_rows"],
        "test_set": test["set"], "n_test": f"{test['n']:,}",
        "test_ensemble_acc": pct(test["ensemble"]["accuracy"]), "test_macro_f1": f"{test['ensemble']['macro_f1']:.3f}",
        "test_ensemble_gain": f"{points(test['ensemble']['accuracy'] - max(test_member[p.name] for p in RELEASED))} "
                              "points",
        "test_classification_report": classification_table(test["ensemble"]),
        "test_report_sentence": f"{capitalized(per_class_caption(test['ensemble']))} on the test set. "
                                f"{test_gap_sentence(scores, test['ensemble'])}",
        "released_table": table(["model", "parameters", "file (bytes)", "validation", "test"],
                                [["ensemble of the two", f"2 × {count_parameters(model):,}",
                                  " + ".join(f"{b:,}" for b in released_bytes), pct(ensemble_acc),
                                  pct(test["ensemble"]["accuracy"])]]
                                + [[p.stem, f"{count_parameters(model):,}", f"{p.stat().st_size:,}",
                                    pct(member_acc[p.name]), pct(test_member[p.name])] for p in RELEASED]),
        "q2_answer": q2_answer(arms), "base_params": f"{base['params']:,}",
        "confusion_answer": confusion_answer(confusion_matrix(y, predicted)),
        "mlp_depth": mlp["args"]["mlp_depth"], "mlp_hidden": mlp["args"]["hidden"], "mlp_params": f"{mlp['params']:,}",
        "mlp_acc": pct(mlp["val_acc_tta"]),
        "compact_bytes": f"{compact_bytes:,}", "released_bytes": " + ".join(f"{b:,}" for b in released_bytes),
        "size_ratio": f"{sum(released_bytes) / compact_bytes:.0f}",
        "compact_val": pct(member_acc[Path(RELEASED_COMPACT).name]),
        "compact_test": pct(test_member[Path(RELEASED_COMPACT).name]),
        "compact_params": f"{compact['params']:,}", **weight_bits(compact_file),
        "compact_folded_params": f"{count_parameters(compact_model):,}", "compact_stem": compact_config["channels"][0],
        "compact_stages": len(compact_config["channels"]), "compact_blocks": compact_config.get("blocks_per_stage", 2),
        "compact_channels": "-".join(map(str, compact_config["channels"])),
        "compact_last": compact_config["channels"][-1], "compact_dropout": compact_config.get("dropout", 0.2),
        "compact_epochs": compact_run["epochs_run"], "compact_lr": compact_run["args"]["lr"],
        "compact_alpha": compact_run["args"]["distill_alpha"],
        "compact_hard": f"{1 - compact_run['args']['distill_alpha']:g}",
        "compact_temperature": f"{compact_run['args']['temperature']:g}", "compact_minutes": minutes(compact_run),
        "compact_layer_table": table(["layer", "type", "output shape", "parameters"], layer_table(compact_model)),
        "n_sizes": " and ".join(f"{sum(m['arch'] == arch and m['name'] != 'compact' for m in sweep)} of the {name}"
                                for arch, name in (("vgg", "VGG"), ("mobilenet", "MobileNet-style network"))),
        "size_answer": size_answer(sweep), "matched_answer": matched_answer(sweep, noise),
        "val_share": f"{100 * SPLIT['val_fraction']:.0f} %", "n_val": f"{released['n_val']:,}",
        "split_seed": SPLIT["seed"],
        "released_epochs": s0["epochs_run"], "released_minutes": f"{minutes(s0)} and {minutes(s1)}",
        "short_schedule": " ".join(experiments.SHORT),
        "n_faces": f"{counts.sum():,}",
        "n_copies": f"{counts.sum() - facts['n_distinct']:,}",
        "val_with_copy": f"{released['n_val'] - released['n_val_clean']:,}",
        "ensemble_copies": pct(released["ensemble"]["copies"]), "ensemble_all": pct(released["ensemble"]["all"]),
        "n_val_clean": f"{released['n_val_clean']:,}", "ensemble_acc": pct(ensemble_acc),
        "leak_points": f"{100 * (released['ensemble']['all'] - ensemble_acc):.1f}",
        "n_rechecked": len(rechecked), "rechecked": ", ".join(m["name"] for m in rechecked),
        "recheck_sentence": recheck_sentence(rechecked, seed_std),
        "runs_table": table(["run", "split", "parameters", "best epoch / run", "held-out, no TTA", "held-out",
                             "wall time"],
                            [[n, SPLIT_NAMES[r["split"]], f"{r['params']:,}", f"{r['best_epoch']} / {r['epochs_run']}",
                              pct(r["val_acc"]), pct(r["val_acc_tta"]), minutes(r)] for n, r in runs.items()]),
        "long_schedule": " ".join(experiments.LONG), "long_epochs": arms["long"]["epochs"],
        "long_n_val": f"{r['long']['n_val']:,}", "long_n_seeds": len(experiments.LONG_SEEDS),
        "long_with_copy": r["long"]["n_val_with_copy"],
        "long_table": table(["arm", "kept model per seed", "mean ± std", "kept epoch, no TTA", "last epoch, no TTA",
                             "training acc, last epoch", f"ensemble of the {len(experiments.LONG_SEEDS)} seeds"],
                            [[ARM_STYLE[arm][1], ", ".join(pct(x) for x in a["accs"]),
                              f"{pct(a['mean'])} ± {100 * a['std']:.2f}", pct(a["kept"]), pct(a["last"]),
                              pct(a["train"]), pct(a["ensemble"])] for arm, a in arms.items()]),
        **long_sentences(arms),
        "conv_stages": len(config["channels"]), "convs_per_stage": config["convs_per_stage"],
        "channels": "-".join(map(str, config["channels"])), "hidden": config["hidden"],
        "params": f"{count_parameters(model):,}",
        "resolutions": " → ".join(str(48 >> i) for i in range(len(config["channels"]) + 1)),
        "last_grid": 48 >> (len(config["channels"]) - 1),  # the last stage's convolutions, before its pooling
        "stage_dropout": config["stage_dropout"], "dropout": config["dropout"], "n_train": f"{facts['n_train']:,}",
        "hparams_table": hparams_table(s0["args"]),
        "base": experiments.BASE, "n_seeds": len(seed_accs), "seed_accs": ", ".join(pct(a) for a in seed_accs),
        "seed_std": f"{100 * seed_std:.2f}", "noise_band": f"{200 * seed_std:.2f}",
        "tricks_table": table(["setting", "held-out accuracy", "note"], [[n, pct(a), note] for n, a, note in tricks]),
        "trick_verdicts": trick_verdicts(tricks, 2 * seed_std),
        "no_augment_train": pct(runs[f"{experiments.BASE}_no_augment"]["history"][-1]["train_acc"]),
        "base_train": pct(base["history"][-1]["train_acc"]), "short_epochs": base["epochs_run"],
        "released_best_epochs": f"{s0['best_epoch']} and {s1['best_epoch']}",
        "ensemble_gain": f"{100 * (ensemble_acc - best_member):.1f}", "best_member_acc": pct(best_member),
        "disgust_count": f"{counts[1]:,}", "disgust_share": share(counts[1] / counts.sum()),
        "happy_share": share(counts[3] / counts.sum()),
        "imbalance_tables": imbalance_tables(imbalance["rows"], 4),
        "imbalance_refs": "Tables 4 and 5" if len(by_faces(imbalance["rows"])) == 2 else "Table 4",
        **{key: 4 + len(by_faces(imbalance["rows"])) + i for i, key in enumerate(("t_layers", "t_short", "t_runs"))},
        "prior_sentence": prior_sentence(imbalance["rows"]),
        "best_decision": best_decisions(imbalance["rows"], 4),
        "cnn_mlp_table": table(["model", "parameters", "held-out", "train acc, last epoch"],
                               [[n, f"{r['params']:,}", pct(r["val_acc_tta"]), pct(r["history"][-1]["train_acc"])]
                                for n, r in ((f"{experiments.BASE} (CNN)", base),
                                             ("2-layer MLP, the CNN's recipe", mlp),
                                             ("2-layer MLP, its own recipe", mlp_own))]),
        "mlp_own_dropout": mlp_own["args"]["dropout"], "mlp_own_lr": mlp_own["args"]["lr"],
        "mlp_own_batch": mlp_own["args"]["batch_size"], "n_mlp_trials": len(trials),
        "mlp_trial_epochs": " and ".join(sorted({str(t["epochs"]) for t in trials.values()})),
        "mlp_recipe_gain": f"{100 * (mlp_own['val_acc_tta'] - mlp['val_acc_tta']):.1f}",
        "cnn_mlp_own_gap": f"{100 * (base['val_acc_tta'] - mlp_own['val_acc_tta']):.1f}",
        "param_gap": f"{abs(base['params'] - mlp['params']) / base['params']:.2%}",
        "mlp_trial_aug": pct(max(t["val_acc"] for t in trials.values() if not t["no_augment"])),
        "mlp_trial_no_aug": pct(max(t["val_acc"] for t in trials.values() if t["no_augment"])),
        "curve_list": "\n".join(f"- {n}: best held-out accuracy {pct(r['val_acc'])} (no TTA) at epoch "
                                f"{r['best_epoch']} of {r['epochs_run']}, the kept model; {pct(r['val_acc_tta'])} "
                                "with flip TTA." for n, r in (("vgg_cpu_s0", s0), ("vgg_cpu_s1", s1))),
        "macro_f1": f"{scores['macro_f1']:.3f}",
        "saliency_sentence": saliency_sentence(facts["saliency_bands"]),
        "map_model": model_path.name,
        "saliency_table": table(["band", "share of saliency", "share of the face"],
                                [[b, share(v), share((BANDS[b][1] - BANDS[b][0]) / 48)]
                                 for b, v in facts["saliency_bands"].items()]),
        "human_accuracy": HUMAN_ACCURACY,
        "sweep_table": table(["model", "parameters", "int8 file, raw (bytes)", "fp32 checkpoint (bytes)",
                              "held-out fp32, whole split", "held-out int8, whole split", "epochs"],
                             [[m["name"], f"{m['params']:,}", f"{m['int8_bytes']:,}", f"{m['checkpoint_bytes']:,}",
                               pct(m["val_acc_tta"]), pct(m["int8_val_acc_tta"]),
                               f"{runs[m['name']]['epochs_run']}{', distilled' if m['name'] == 'compact' else ''}"]
                              for m in sweep]),
        "compact_table": table(["model", "parameters", "file (bytes)", "validation", "test",
                                f"predicting {facts['test_rows']} faces"],
                               [["released ensemble (2 VGGs, int8 files)", f"2 × {count_parameters(model):,}",
                                 " + ".join(f"{b:,}" for b in released_bytes), pct(ensemble_acc),
                                 pct(test["ensemble"]["accuracy"]), f"{seconds['ensemble']:.1f} s"],
                                [f"one VGG ({model_path.name})", f"{count_parameters(model):,}",
                                 f"{model_path.stat().st_size:,}", pct(member_acc[model_path.name]),
                                 pct(test_member[model_path.name]), f"{seconds['single']:.1f} s"],
                                [f"compact.q8 (MobileNet, {weight_bits(compact_file)['compact_bits']}-bit)",
                                 f"{compact['params']:,}", f"{compact_bytes:,}",
                                 pct(member_acc[Path(RELEASED_COMPACT).name]),
                                 pct(test_member[Path(RELEASED_COMPACT).name]), f"{seconds['compact']:.1f} s"]]),
        "matched_sentence": matched_sentence(sweep, noise),
        "layer_table": table(["layer", "type", "output shape", "parameters"], layer_table(model)),
    }


def render(report: str, results: Path, model_path: Path, fields: dict[str, str] | None = None) -> str:
    """A report's markdown: its template filled from results/ (and the model files' layers), nothing else."""
    values = report_values(results, model_path, {**HEADER, **(fields or {})})
    return (TEMPLATES / f"{report}.md").read_text().format_map(values)


def check_layout(report: str, layout: dict) -> None:
    """Warn where a report runs past its assignment's page limits."""
    limits = PAGE_LIMITS.get(report, {})
    for heading, page in layout["headings"].items():
        for prefix, last_page in limits.items():
            if heading.startswith(prefix) and page > last_page:
                print(f"warning: {report}.pdf: '{heading}' starts on page {page}, after page {last_page}")
    if "total" in limits and layout["pages"] > limits["total"]:
        print(f"warning: {report}.pdf: {layout['pages']} pages, over {limits['total']}")


def build(results: Path, data: Path, out: Path, best_model: Path, fields: dict[str, str] | None = None) -> list[Path]:
    """Every figure, then each report's markdown and PDF, in out."""
    out.mkdir(parents=True, exist_ok=True)
    make_figures(results, data, out, best_model)
    written = []
    for report in REPORTS:
        md = out / f"{report}.md"
        with atomic_write(md, "w") as f:
            f.write(render(report, results, best_model, fields))
        layout = markdown_to_pdf(md, md.with_suffix(".pdf"))
        check_layout(report, layout)
        print(f"{md.with_suffix('.pdf')}: {layout['pages']} pages")
        written.append(md)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the training CSV the runs used")
    p.add_argument("--results", type=Path, default=HERE / "results", help="the logged results to build from")
    p.add_argument("--out", type=Path, default=HERE, help="where report.md, report.pdf and the figures go")
    p.add_argument("--model", type=Path, default=RELEASED[0], help="the model of the layer table and the maps")
    p.add_argument("--name", default=BLANK, help="the student's name, for each header")
    p.add_argument("--student-id", default=BLANK, help="the student ID, for each header")
    p.add_argument("--department", default=BLANK, help="department and year, for the HW2 header")
    p.add_argument("--collaborators", default=HEADER["collaborators"], help="for the HW2 header")
    p.add_argument("--test", type=Path, default=TEST, help="the test file for --collect: an id,feature file "
                   "(labelled by --test-labels) or a challenge file whose PrivateTest rows are the test set")
    p.add_argument("--test-labels", type=Path, default=PUBLIC_LABELS, help="id,label of the test file's labelled rows")
    p.add_argument("--collect", action="store_true", help="first summarise runs/ into --results")
    p.add_argument("--rerun", action="store_true", help="first train the runs that runs/ lacks, then collect")
    args = p.parse_args()
    if not args.data.exists():
        sys.exit(f"make_report.py: error: {args.data}: training CSV not found (pass --data)")
    start = time.time()
    if args.rerun:
        for name in experiments.EXPERIMENTS:
            if not experiments.finished(name):
                experiments.run(name, str(args.data))
    if args.rerun or args.collect:
        faces = read_faces(args.data, require_labels=True)  # read and grouped once for both
        groups = duplicate_groups(faces.images)
        collect(faces, groups, args.results)
        collect_facts(faces, groups, args.results, args.model)
        collect_test(args.test, args.test_labels, args.results)
    fields = {"name": args.name, "student_id": args.student_id, "department": args.department,
              "collaborators": args.collaborators}
    paths = build(args.results, args.data, args.out, args.model, fields)
    print(f"wrote {', '.join(p.name for p in paths)}, their PDFs and {len(FIGURES)} figures in "
          f"{time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
