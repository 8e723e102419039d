"""Build the homework report (report.md, report.pdf and the PNG figures beside them) from logged results.

  python report/make_report.py                  # figures + report.md + report.pdf from report/results/
  python report/make_report.py --collect        # first re-read runs/ (histories, checkpoints) into report/results/
  python report/make_report.py --rerun          # first train what runs/ lacks (report/experiments.py), then collect

Building reads report/results/*.json|csv, the training CSV (faces for the sample grids) and the
released weights (layer table, activation and saliency maps); it trains nothing and takes seconds.
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "report"))
sys.path.insert(0, str(ROOT / "tools"))

import experiments  # noqa: E402
from md2pdf import markdown_to_pdf  # noqa: E402
from quantize import quantize  # noqa: E402

from dataset import CLASS_NAMES, Faces, read_faces, recorded_split  # noqa: E402
from model import atomic_write, count_parameters, load_model  # noqa: E402
from predict import RELEASED_ENSEMBLE, predict_proba  # noqa: E402

HERE = ROOT / "report"
DATA = ROOT.parent / "shared" / "fer2013" / "train.csv.gz"
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
            "args": {k: v for k, v in h["args"].items() if k not in ("train_csv", "out", "resume", "force")},
            "best_epoch": h["best_epoch"], "epochs_run": h["epoch"], "val_acc": h["best_val_acc"],
            "val_acc_tta": h.get("best_val_acc_tta"), "last_val_acc": epochs[-1]["val_acc"],
            "wall_seconds": h.get("wall_seconds"), "history": epochs}


SPLIT = {"method": "stratified", "val_fraction": 0.1, "seed": 0}  # the held-out split every run here shares


class HeldOut:
    """The held-out faces of SPLIT, and each model's flip-TTA probabilities on them (fp32, as predict.py
    computes them), scored once however many tables use the model."""

    def __init__(self, faces: Faces):
        train_idx, self.rows = recorded_split(faces, SPLIT)
        self.images, self.labels = faces.images[self.rows], faces.labels[self.rows].numpy()
        self.prior = np.bincount(faces.labels[train_idx].numpy(), minlength=K) / len(train_idx)
        self.scored: dict[Path, np.ndarray] = {}

    def probs(self, *paths: Path) -> np.ndarray:
        """Mean probabilities of the models (an ensemble when several)."""
        for p in paths:
            if p not in self.scored:
                self.scored[p] = predict_proba(load_model(p)[0], self.images).numpy()
        return np.mean([self.scored[p] for p in paths], axis=0)

    def accuracy(self, *paths: Path) -> float:
        return float((self.probs(*paths).argmax(1) == self.labels).mean())


def compact_sweep_entry(name: str, checkpoint: Path, held: HeldOut, tmp: Path) -> dict:
    """Size and held-out accuracy of one model, fp32 and as the int8 file tools/quantize.py writes."""
    model, ckpt = load_model(checkpoint)
    int8_bytes = quantize(str(checkpoint), str(tmp), max_bytes=10**9)
    int8_acc = held.accuracy(tmp)
    held.scored.pop(tmp)  # the next model's int8 file reuses the name
    tmp.unlink()
    return {"name": name, "arch": ckpt["config"]["arch"], "channels": ckpt["config"]["channels"],
            "params": count_parameters(model), "checkpoint_bytes": checkpoint.stat().st_size,
            "int8_bytes": int8_bytes, "val_acc_tta": held.accuracy(checkpoint), "int8_val_acc_tta": int8_acc,
            "schedule": COMPACT_SCHEDULE if name == "compact" else " ".join(experiments.SHORT)}


def collect(train_csv: str | Path, results: Path) -> None:
    """Summaries of every logged run, held-out probabilities of the best model, ensembles, the imbalance
    comparison and the compact sweep, as small files under results/."""
    results.mkdir(parents=True, exist_ok=True)
    held = HeldOut(read_faces(train_csv, require_labels=True))
    runs = {name: summarize_history(base.with_suffix(".json")) for name, base in BEST.items()}
    for name in experiments.EXPERIMENTS:
        if experiments.finished(name):
            runs[name] = summarize_history(experiments.RUNS / f"{name}.json")
    for name, base in COMPACT_RUNS.items():
        if experiments.finished(base.name, base.parent):
            runs[name] = summarize_history(base.with_suffix(".json"))
    write_json({"runs": runs}, results / "runs.json")

    best = held.probs(*RELEASED)
    with atomic_write(results / "heldout_best.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", *[f"p_{c}" for c in CLASS_NAMES]])
        w.writerows([r, y, *np.round(p, 5)] for r, y, p in zip(held.rows.tolist(), held.labels.tolist(), best,
                                                                  strict=True))

    seeds = [experiments.BASE, *[f"{experiments.BASE}_seed{s}" for s in (1, 2, 3, 4)]]
    seed_runs = [experiments.RUNS / f"{n}.pt" for n in seeds if experiments.finished(n)]
    ensembles = {str(k): held.accuracy(*seed_runs[:k]) for k in (1, 3, 5) if len(seed_runs) >= k}
    write_json({"base": experiments.BASE, "val_acc_tta": ensembles}, results / "ensembles.json")

    imbalance = {"prior": held.prior.tolist(), "rows": []}
    candidates = {"released ensemble": best}
    for run, label in ((experiments.BASE, experiments.BASE),
                       (f"{experiments.BASE}_class_weighted", f"{experiments.BASE}, class-weighted loss")):
        if experiments.finished(run):
            candidates[label] = held.probs(experiments.RUNS / f"{run}.pt")
    for name, probs in candidates.items():
        imbalance["rows"].append({"model": name, "decision": "arg-max",
                                  **per_class_scores(held.labels, probs.argmax(1))})
        if "class-weighted" not in name:
            imbalance["rows"].append({"model": name, "decision": "logit-adjusted (tau = 1)",
                                      **per_class_scores(held.labels, logit_adjusted(probs, held.prior))})
    write_json(imbalance, results / "imbalance.json")

    sweep = []
    for name in ("vgg8", "vgg12", "vgg16", "mobilenet8", "mobilenet16", "mobilenet24"):
        if experiments.finished(name):
            sweep.append(compact_sweep_entry(name, experiments.RUNS / f"{name}.pt", held, results / ".sweep.q8"))
    compact = COMPACT_RUNS["compact"]
    if experiments.finished(compact.name, compact.parent):
        sweep.append(compact_sweep_entry("compact", compact.with_suffix(".pt"), held, results / ".sweep.q8"))
    write_json({"split": SPLIT, "models": sweep}, results / "compact_sweep.json")


def write_json(obj: object, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


# ---------------------------------------------------------------- figures

def save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_class_counts(labels: np.ndarray, path: Path) -> np.ndarray:
    counts = np.bincount(labels, minlength=K)
    fig, ax = plt.subplots(figsize=(7, 3.2))
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


def plot_samples(faces: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 8) -> None:
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
            ax.plot(epochs, [e[f"train_{key}"] for e in run["history"]], "--", color=color, label=f"{name} train")
            ax.plot(epochs, [e[f"val_{key}"] for e in run["history"]], "-", color=color, label=f"{name} val")
            best = run["history"][run["best_epoch"] - 1]
            ax.plot(best["epoch"], best[f"val_{key}"], "o", color=color, markersize=7, mfc="none", mew=2)
    ax_loss.set(title="Loss (train: with augmentation, label smoothing)", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy (o: epoch kept by early stopping)", xlabel="epoch", ylabel="accuracy")
    ax_acc.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path)


def plot_tricks(rows: list[tuple[str, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    if not rows:
        ax.text(0.5, 0.5, "no ablation runs collected yet", ha="center")
        save(fig, path)
        return
    names, accs = zip(*rows, strict=True)
    ax.barh(names[::-1], [100 * a for a in accs[::-1]], color="tab:gray")
    for i, a in enumerate(accs[::-1]):
        ax.annotate(f"{100 * a:.1f} %", (100 * a, i), va="center", ha="left", fontsize=8)
    ax.set(title="Training tricks on and off (held-out accuracy, flip TTA)", xlabel="held-out accuracy (%)",
           xlim=(min(100 * a for a in accs) - 10, max(100 * a for a in accs) + 5))
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


def plot_per_class(scores: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = np.arange(K)
    for k, (key, hatch) in enumerate((("precision", ""), ("recall", "//"), ("f1", ".."))):
        ax.bar(x + (k - 1) * 0.27, scores[key], 0.27, color=CLASS_COLORS, hatch=hatch, edgecolor="black",
               linewidth=0.4, label=key)
    ax.set(xticks=x, title="Per-class precision (plain), recall (//) and F1 (..), held-out split", ylim=(0, 1),
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


def plot_maps(model: nn.Module, faces: np.ndarray, labels: np.ndarray, act_path: Path, sal_path: Path,
              per_class: int = 2) -> None:
    rng = np.random.default_rng(1)
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(K)
                             if (labels == c).sum() >= per_class])
    x = torch.from_numpy(faces[picked]).float().div(255)[:, None]
    model.eval()
    predicted = model(x).argmax(1).tolist()
    act = nn.functional.interpolate(last_conv_activation(model, x), size=x.shape[-2:], mode="bilinear")
    sal = gradient_saliency(model, x)
    for maps, path, what in ((act, act_path, "last conv layer's mean activation"),
                             (sal, sal_path, "gradient saliency |d score / d pixel|")):
        fig, axes = plt.subplots(2, len(picked), figsize=(1.1 * len(picked), 2.8))
        for i, row in enumerate(picked):
            axes[0, i].imshow(faces[row], cmap="gray", vmin=0, vmax=255)
            axes[0, i].set_title(f"{CLASS_NAMES[labels[row]]}\n→ {CLASS_NAMES[predicted[i]]}", fontsize=7,
                                 color=CLASS_COLORS[labels[row]])
            axes[1, i].imshow(faces[row], cmap="gray", vmin=0, vmax=255)
            axes[1, i].imshow(maps[i, 0].numpy(), cmap="jet", alpha=0.5)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"{what} (true → predicted)", fontsize=10)
        save(fig, path)


def plot_compact(sweep: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"vgg": ("o", "tab:blue", "VGG-style CNN"), "mobilenet": ("s", "tab:orange", "MobileNet-style")}
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "int8_bytes", "int8 file size (bytes)")):
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
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlapped each other
        ax.legend(fontsize=7)
    fig.suptitle("Model size against held-out accuracy")
    save(fig, path)


# ---------------------------------------------------------------- the report text

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


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def minutes(run: dict) -> str:
    return "n/a" if run.get("wall_seconds") is None else f"{run['wall_seconds'] / 60:.1f} min"


def build(results: Path, data: Path, out: Path, best_model: Path) -> Path:
    """Every figure and report.md (+ report.pdf) in out, from results/ and the data file."""
    out.mkdir(parents=True, exist_ok=True)
    runs = json.loads((results / "runs.json").read_text())["runs"]
    ensembles = json.loads((results / "ensembles.json").read_text())
    imbalance = json.loads((results / "imbalance.json").read_text())
    sweep = json.loads((results / "compact_sweep.json").read_text())["models"]
    with open(results / "heldout_best.csv") as f:
        held = list(csv.DictReader(f))
    faces = read_faces(data, require_labels=True)
    images, labels = faces.images[:, 0].numpy(), faces.labels.numpy()
    rows = np.array([int(r["row"]) for r in held])
    y = np.array([int(r["label"]) for r in held])
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in held])
    predicted = probs.argmax(1)

    counts = plot_class_counts(labels, out / "class_counts.png")
    plot_samples(images, labels, out / "samples.png")
    best_runs = {n: runs[n] for n in BEST if n in runs}
    plot_curves(best_runs, out / "curves_best.png", "The released models (cpu preset), both seeds")
    base = experiments.BASE
    plot_curves({n: runs[n] for n in (base, "mlp_matched") if n in runs}, out / "cnn_vs_mlp.png",
                "CNN against an MLP with the same number of parameters")
    tricks = trick_rows(runs, ensembles)
    plot_tricks([(name, acc) for name, acc, _ in tricks], out / "tricks.png")
    cm = confusion_matrix(y, predicted)
    plot_confusion(cm, out / "confusion.png")
    confusions = top_confusions(cm)
    plot_confusion_examples(images, rows, y, predicted, confusions, out / "confusions_examples.png")
    scores = per_class_scores(y, predicted)
    plot_per_class(scores, out / "per_class.png")
    model, _ = load_model(best_model)
    plot_maps(model, images[rows], y, out / "activations.png", out / "saliency.png")
    if sweep:
        plot_compact(sweep, out / "compact.png")

    bands = saliency_bands(model, images[rows])
    text = report_text(runs, counts, model, tricks, confusions, scores, imbalance, sweep, best_model, bands,
                       ensembles)
    with atomic_write(out / "report.md", "w") as f:
        f.write(text)
    markdown_to_pdf(out / "report.md", out / "report.pdf")
    return out / "report.md"


def trick_rows(runs: dict, ensembles: dict) -> list[tuple[str, float, str]]:
    """(setting, held-out accuracy, note) for each trick on and off; TTA figures unless the note says not."""
    base = experiments.BASE
    rows = []
    if base in runs:
        b = runs[base]
        train_acc = pct(b["history"][-1]["train_acc"])
        rows.append((f"{base}: all tricks on", b["val_acc_tta"], f"reference; training accuracy {train_acc}"))
        rows.append(("early stopping: best epoch kept", b["val_acc"], f"epoch {b['best_epoch']}, no TTA"))
        rows.append(("no early stopping: last epoch kept", b["last_val_acc"], f"epoch {b['epochs_run']}, no TTA"))
    for name, what in ((f"{base}_no_normalize", "without normalisation"),
                       (f"{base}_no_augment", "without augmentation")):
        if name in runs:
            r = runs[name]
            rows.append((what, r["val_acc_tta"], f"run {name}; training accuracy {pct(r['history'][-1]['train_acc'])}"))
    for k, acc in ensembles["val_acc_tta"].items():
        rows.append((f"ensemble of {k} seed{'s' if k != '1' else ''}", acc, "mean of the models' probabilities"))
    return rows


def top_confusions(cm: np.ndarray, n: int = 3) -> list[tuple[int, int, float]]:
    """The n largest off-diagonal row-normalised cells: (true, predicted, fraction of the true class)."""
    norm = cm / cm.sum(1, keepdims=True).clip(1)
    np.fill_diagonal(norm, 0)
    order = np.argsort(norm, axis=None)[::-1][:n]
    return [(int(i // K), int(i % K), float(norm.flat[i])) for i in order]


def plot_confusion_examples(images: np.ndarray, rows: np.ndarray, y: np.ndarray, predicted: np.ndarray,
                            confusions: list[tuple[int, int, float]], path: Path, per_pair: int = 6) -> None:
    picked, titles, colors = [], [], []
    for t, p, _ in confusions:
        hits = np.flatnonzero((y == t) & (predicted == p))[:per_pair]
        picked += [images[rows[i]] for i in hits]
        titles += [f"{CLASS_NAMES[t]} → {CLASS_NAMES[p]}"] * len(hits)
        colors += [CLASS_COLORS[t]] * len(hits)
    face_grid(picked, titles, per_pair, path, "Commonest confusions (true → predicted)", colors)


def saliency_bands(model: nn.Module, faces: np.ndarray) -> dict[str, float]:
    """Share of the gradient saliency in horizontal bands of the 48x48 face (eyes, nose, mouth)."""
    x = torch.from_numpy(faces).float().div(255)[:, None]
    sal = sum(gradient_saliency(model.eval(), chunk)[:, 0].sum(0) for chunk in x.split(256))
    total = float(sal.sum())
    return {name: float(sal[a:b].sum()) / total for name, (a, b) in BANDS.items()}


BANDS = {"eyes (rows 10-24)": (10, 24), "nose (rows 24-32)": (24, 32), "mouth (rows 32-44)": (32, 44)}


def best_decisions(rows: list[dict]) -> list[str]:
    """A sentence naming the model and decision with the best accuracy, and one for macro-F1."""
    if not rows:
        return []
    acc = max(rows, key=lambda r: r["accuracy"])
    f1 = max(rows, key=lambda r: r["macro_f1"])
    return [f"Here the highest accuracy comes from {acc['model']} with the {acc['decision']} decision "
            f"({pct(acc['accuracy'])}), the highest macro-F1 from {f1['model']} with the {f1['decision']} "
            f"decision ({f1['macro_f1']:.3f})."]


def report_text(runs: dict, counts: np.ndarray, model: nn.Module, tricks: list, confusions: list,
                scores: dict, imbalance: dict, sweep: list, best_model: Path, bands: dict, ensembles: dict) -> str:
    base = experiments.BASE
    s0 = runs.get("vgg_cpu_s0", {})
    args = s0.get("args", {})
    disgust = counts[1] / counts.sum()
    run_rows = [[name, f"{r['params']:,}", f"{r['epochs_run']}", f"{r['best_epoch']}", pct(r["val_acc"]),
                 pct(r.get("val_acc_tta")), minutes(r), r["device"] + (" bf16" if r["bf16"] else "")]
                for name, r in runs.items()]
    layers = layer_table(model)
    mlp, cnn = runs.get("mlp_matched"), runs.get(base)
    lines = [
        "# FER2013 facial-expression classification: homework report",
        "",
        "Generated by `python report/make_report.py` from the logged results in `report/results/`; "
        "`--collect` re-reads them from the training runs under `runs/`, `--rerun` first trains the runs "
        "that are missing. No GPU was available: every run below trained on the 2-core CPU development "
        "machine (bf16 autocast). The released models trained for 40 epochs (about 50 min each); to fit the "
        "machine, the comparisons of sections 4, 5, 8 and 11 use a much shorter common schedule "
        f"(`report/experiments.py`: {' '.join(experiments.SHORT)}), so their absolute accuracies are "
        "lower than the released models' and only the differences between them are the point.",
        "",
        "All accuracies are on the same held-out split: a stratified 10 % of `train.csv` (2,872 faces, "
        "split seed 0), never trained on. *Held-out (TTA)* averages each face with its mirror image.",
        "",
        "## Runs behind this report",
        "",
        table(["run", "parameters", "epochs run", "best epoch", "held-out", "held-out (TTA)", "wall time", "device"],
              run_rows),
        "",
        "Commands: `python train.py ../shared/fer2013/train.csv.gz --preset cpu [--seed 1]` (vgg_cpu_s0/s1, "
        "logs in `runs/cpu*/`), `--preset compact` (compact, `runs/compact80/`), the same with `--epochs 40` "
        "(compact_40ep, `runs/compact/`) continued by `--init runs/compact/mobilenet.pt --epochs 8 --lr 0.01 "
        "--warmup 0.25` (compact_40ep_ft, `runs/compact_ft/`), and "
        "`python report/experiments.py ../shared/fer2013/train.csv.gz` for all others (flags per run in "
        "`report/experiments.py`, logs in `runs/report/`). Most of these runs shared the two cores with one or "
        "two other runs (one thread each), so their wall times are upper bounds.",
        "",
        "## 1. The data",
        "",
        f"`train.csv` holds {counts.sum():,} labelled faces. The classes are far from balanced: happy is "
        f"{counts[3] / counts.sum():.1%} of the faces, disgust only {disgust:.1%} ({counts[1]} faces).",
        "",
        "![class counts](class_counts.png)",
        "",
        "![sample faces](samples.png)",
        "",
        "## 2. The best model",
        "",
        "The released predictor (`bash hw2_test.sh`) averages two VGG-style CNNs trained with the `cpu` preset "
        "and different seeds (vgg_cpu_s0, vgg_cpu_s1). Each one:",
        "",
        table(["layer", "type", "output shape", "parameters"], layers),
        "",
        f"Total: {count_parameters(model):,} parameters.",
        "",
        "Why each kind of layer is there:",
        "",
        "- **Normalize**: subtracts the training split's pixel mean and divides by its std (stored in the model), "
        "so the first layer sees zero-centred inputs of unit scale whatever the file's brightness.",
        "- **Conv2d 3×3**: local feature detectors shared over the whole face; two stacked 3×3 see 5×5 with fewer "
        "weights than one 5×5 (VGG). No bias: the BatchNorm after it has its own shift.",
        "- **BatchNorm**: keeps each layer's inputs normalised during training, which allows a high learning rate "
        "and regularises a little; folded into the convolution at inference.",
        "- **ReLU**: the non-linearity; cheap and does not saturate for positive inputs.",
        "- **MaxPool 2×2**: halves the resolution per stage (48 → 24 → 12 → 6 → 3), buying translation tolerance "
        "and a wider receptive field while the channel count doubles.",
        "- **Dropout** (0.1 after each stage, 0.4 in the head): the data set is small (26k training faces) and "
        "a 2.6M-parameter network overfits without it.",
        "- **Linear + BatchNorm1d + ReLU, Linear**: the classifier on the flattened 3×3 map, which keeps where on "
        "the face a feature fired.",
        "",
        "Training hyperparameters (`train.py --preset cpu`):",
        "",
        table(["setting", "value"], [[k, f"`{args[k]}`"] for k in
              ("epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "warmup", "patience",
               "rotate", "shift", "scale", "erase", "seed", "split_seed") if k in args]),
        "",
        "SGD with Nesterov momentum, one-cycle learning rate (warm-up then cosine decay to ~0), "
        "cross-entropy with label smoothing; augmentation per face: horizontal flip, random affine "
        "(rotation, shift, scale), random erasing. The validation split: `train.csv` has no Usage column, so "
        "10 % of each class is held out at random with split seed 0 (`dataset.stratified_split`); "
        "the same split is used by every run, and the normalisation statistics come from the training part only.",
        "",
        "## 3. Learning curves",
        "",
        "![learning curves](curves_best.png)",
        "",
    ]
    for name in BEST:
        if name in runs:
            r = runs[name]
            lines.append(f"- {name}: best held-out accuracy {pct(r['val_acc'])} at epoch {r['best_epoch']} of "
                         f"{r['epochs_run']} (the kept model; with flip TTA {pct(r['val_acc_tta'])}).")
    lines += [
        "",
        "Training loss stays above validation loss because training faces are augmented and the loss is "
        "label-smoothed; the validation curve flattens as the one-cycle learning rate decays.",
        "",
        "## 4. CNN against an MLP with the same number of parameters",
        "",
    ]
    if mlp and cnn:
        gap = cnn["val_acc_tta"] - mlp["val_acc_tta"]
        lines += [
            "![CNN vs MLP](cnn_vs_mlp.png)",
            "",
            table(["model", "parameters", "held-out (TTA)", "train acc, last epoch"],
                  [[name, f"{r['params']:,}", pct(r["val_acc_tta"]), pct(r["history"][-1]["train_acc"])]
                   for name, r in ((f"{base} (CNN)", cnn), ("2-layer MLP", mlp))]),
            "",
            f"The parameter counts differ by {abs(cnn['params'] - mlp['params']) / cnn['params']:.2%}. With the "
            f"same budget and schedule the CNN is {100 * gap:.1f} points more accurate. An MLP must learn every "
            "feature separately at every position, and a shifted face is a different input to it; the CNN shares "
            "each filter over the whole image and pools, so its parameters go into features rather than positions.",
        ]
    else:
        lines.append("*(the CNN and MLP runs are not in the results yet)*")
    lines += ["", "## 5. Training tricks, on and off", ""]
    lines += [
        f"Each row changes one thing in the `{base}` run (same schedule, seed and split).",
        "",
        table(["setting", "held-out accuracy", "note"], [[n, pct(a), note] for n, a, note in tricks]),
        "",
        "![training tricks](tricks.png)",
        "",
    ]
    if base in runs:
        ref = runs[base]["val_acc_tta"]
        lines += [f"- {what}: {100 * (runs[name]['val_acc_tta'] - ref):+.1f} points against the reference."
                  for name, what in ((f"{base}_no_normalize", "Without normalisation"),
                                     (f"{base}_no_augment", "Without augmentation")) if name in runs]
        lines += [f"- Ensemble of {k} against 1 model: {100 * (acc - ensembles['val_acc_tta']['1']):+.1f} points."
                  for k, acc in ensembles["val_acc_tta"].items() if k != "1"]
        lines.append("")
    lines += [
        "The training accuracy is measured during each epoch on the faces as trained on (augmented, with "
        "dropout active). Where it stays below the held-out accuracy, the model still underfits at the end of "
        "the short schedule, and a regulariser such as augmentation can cost accuracy; whether it pays off over "
        "the released models' 40 epochs was not measured here (no 40-epoch run without augmentation was made).",
        "",
        "Early stopping here means keeping the epoch with the best validation accuracy (with a patience of "
        "15 epochs it never cut these short runs); because that epoch is chosen on the same held-out split, "
        "its figure is slightly optimistic.",
        "",
        "## 6. Confusion matrix",
        "",
        "The released ensemble on the held-out split:",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "The commonest confusions (share of the true class):",
        "",
    ]
    lines += [f"- {CLASS_NAMES[t]} taken for {CLASS_NAMES[p]}: {f:.1%}" for t, p, f in confusions]
    lines += ["", "![confused faces](confusions_examples.png)", "", "## 7. Accuracy, macro-F1, per class", ""]
    lines += [
        f"Accuracy {pct(scores['accuracy'])}, macro-F1 {scores['macro_f1']:.3f}.",
        "",
        table(["class", "precision", "recall", "F1", "support"],
              [[c, f"{scores['precision'][i]:.3f}", f"{scores['recall'][i]:.3f}", f"{scores['f1'][i]:.3f}",
                scores["support"][i]] for i, c in enumerate(CLASS_NAMES)]),
        "",
        "![per-class scores](per_class.png)",
        "",
        "## 8. Class imbalance: is the arg-max the best decision?",
        "",
        "Arg-max of the predicted probabilities maximises expected accuracy, which favours frequent classes. "
        "Two alternatives: a class-weighted loss (each class weighted by n / (7 n_c) in training) and a "
        "prior correction at decision time (logit adjustment: arg-max of log p(y|x) − log p(y), with p(y) the "
        "class shares of the training split), which aims at balanced accuracy instead.",
        "",
        table(["model", "decision", "accuracy", "macro-F1", "disgust recall", "disgust precision"],
              [[r["model"], r["decision"], pct(r["accuracy"]), f"{r['macro_f1']:.3f}", f"{r['recall'][1]:.3f}",
                f"{r['precision'][1]:.3f}"] for r in imbalance["rows"]]),
        "",
        "Which decision is best depends on the metric: the Kaggle score is plain accuracy, which the arg-max "
        "targets; macro-F1 rewards the rare classes that the other two decisions push up.",
        "",
        *best_decisions(imbalance["rows"]),
        "",
        "## 9. What the network looks at",
        "",
        f"Maps of `{best_model.name}`, one member of the released ensemble, for "
        "two held-out faces per class; top row the face, bottom row the map over it. Activation maps: the mean "
        "over channels of the last convolutional layer (6×6, upsampled). Saliency: the absolute gradient of the "
        "predicted class's score with respect to each pixel.",
        "",
        "![activation maps](activations.png)",
        "",
        "![saliency maps](saliency.png)",
        "",
        "Share of the gradient saliency, summed over all 2,872 held-out faces, in three horizontal bands "
        "of the 48×48 image:",
        "",
        table(["band", "share of saliency", "share of the image"],
              [[b, f"{v:.1%}", f"{(BANDS[b][1] - BANDS[b][0]) / 48:.1%}"] for b, v in bands.items()]),
        "",
        "Gradient saliency is noisy and shows sensitivity, not reasoning; the banded shares are a coarse "
        "summary that does not depend on picking faces.",
        "",
        "## 10. Human against CNN",
        "",
        "`python tools/human_vs_cnn.py ../shared/fer2013/train.csv.gz --n 60` shows a person 60 random held-out "
        "faces one at a time (keys 0-6), writes their answers to a CSV and prints their accuracy next to the "
        "model's on the same faces (`--score answers.csv` re-scores a saved file). No person has labelled "
        "faces for this report, so no human figure of ours appears here. The literature puts human accuracy "
        f"on FER2013 at about {HUMAN_ACCURACY} (Goodfellow et al., *Challenges in Representation Learning*, "
        "2013); the released ensemble's held-out accuracy is "
        f"{pct(scores['accuracy'])}.",
        "",
        "## 11. Compact models",
        "",
    ]
    if sweep:
        lines += [
            "![size against accuracy](compact.png)",
            "",
            table(["model", "parameters", "int8 file (bytes)", "fp32 checkpoint (bytes)", "held-out fp32 (TTA)",
                   "held-out int8 (TTA)", "schedule"],
                  [[m["name"], f"{m['params']:,}", f"{m['int8_bytes']:,}", f"{m['checkpoint_bytes']:,}",
                    pct(m["val_acc_tta"]), pct(m["int8_val_acc_tta"]), m["schedule"]] for m in sweep]),
            "",
            "The int8 size is that of the file `tools/quantize.py` writes with `model.save_compact` (BatchNorm "
            "folded, int8 weights with one fp32 scale per output channel, a JSON header). The sweep models share "
            "the short schedule; `compact` is the shipped `weights/compact.q8`, on its own schedule (last column).",
        ]
    else:
        lines.append("*Placeholder: the compact-model sweep has not been collected yet.*")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the training CSV the runs used")
    p.add_argument("--results", type=Path, default=HERE / "results", help="the logged results to build from")
    p.add_argument("--out", type=Path, default=HERE, help="where report.md, report.pdf and the figures go")
    p.add_argument("--model", type=Path, default=RELEASED[0], help="the model of the layer table and the maps")
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
        collect(args.data, args.results)
    path = build(args.results, args.data, args.out, args.model)
    print(f"wrote {path}, {path.with_suffix('.pdf')} and {len(FIGURES)} figures in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
