"""The reports' figures, each drawn at the width it is printed (report/typeset.py places a PNG at its natural
size), so that every text in it keeps its font size on paper: 7 pt or more."""

import io
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.text import Text
from PIL import Image
from torch import nn

import faces
from dataset import CLASS_NAMES
from report.typeset import TEXT_WIDTH_IN
from utils import atomic_write

K = len(CLASS_NAMES)
CLASS_COLORS = plt.get_cmap("tab10").colors[:K]  # one colour per class in every figure
DPI = 150  # enough for 7-pt text in print, few enough bytes for the tracked tree (docs/gpu.md)
MIN_POINTS = 7.0  # the smallest text a figure may print
FULL = min(6.5, TEXT_WIDTH_IN)  # inches: a figure as wide as the text
plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
                     "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 8.5,
                     "figure.dpi": DPI, "savefig.dpi": DPI})


def small_texts(fig: plt.Figure) -> list[str]:
    """The texts of the figure set below MIN_POINTS."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
            and t.get_fontsize() < MIN_POINTS]


def save(fig: plt.Figure, path: Path, legend_rows: int = 0) -> None:
    """A PNG at its print size (its dpi recorded), in 256 colours where that is smaller, with legend_rows rows of
    figure legend below the axes. Refuses a figure wider than the text or with text under MIN_POINTS, which would
    print smaller than that."""
    width = fig.get_figwidth()
    if width > TEXT_WIDTH_IN + 1e-6:
        raise ValueError(f"{path.name}: {width:.2f} in wide, wider than the text ({TEXT_WIDTH_IN:.2f} in)")
    if small := small_texts(fig):
        raise ValueError(f"{path.name}: text under {MIN_POINTS} pt: {small[:3]}")
    if legend_rows:  # the first axes' entries, which the others repeat
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncols=-(-len(labels) // legend_rows), frameon=False)
    fig.tight_layout(pad=0.3, rect=(0, (legend_rows * 0.15 + 0.04 * bool(legend_rows)) / fig.get_figheight(), 1, 1))
    full = io.BytesIO()
    fig.savefig(full, format="png", dpi=DPI)
    plt.close(fig)
    palette = io.BytesIO()
    Image.open(full).convert("RGB").quantize(256).save(palette, format="png", optimize=True, dpi=(DPI, DPI))
    with atomic_write(path, "wb") as f:
        f.write(min(full.getvalue(), palette.getvalue(), key=len))


def plot_class_counts(counts: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 1.9))
    bars = ax.bar(CLASS_NAMES, counts, color=CLASS_COLORS)
    for bar, n in zip(bars, counts, strict=True):
        ax.annotate(f"{n:,}\n{n / counts.sum():.1%}", (bar.get_x() + bar.get_width() / 2, n), ha="center",
                    va="bottom", fontsize=7)
    ax.set(ylabel="faces", ylim=(0, counts.max() * 1.35))
    ax.spines[["top", "right"]].set_visible(False)
    save(fig, path)


def face_grid(rows: list[list[np.ndarray]], path: Path, column_titles: list[tuple[str, tuple]] | None = None,
              row_titles: list[tuple[str, tuple]] | None = None, side: float = 0.72) -> None:
    """Faces in rows; a (title, colour) over each column or beside each row."""
    ncols = max(map(len, rows)) + bool(row_titles)
    fig, axes = plt.subplots(len(rows), ncols, squeeze=False, figsize=(side * ncols, side * len(rows)
                                                                        + 0.18 * bool(column_titles)))
    for ax in axes.flat:
        ax.axis("off")
    for r, faces_in_row in enumerate(rows):
        if row_titles:
            text, color = row_titles[r]
            axes[r, 0].text(1.0, 0.5, text, ha="right", va="center", fontsize=7.5, color=color,
                            transform=axes[r, 0].transAxes)
        for c, img in enumerate(faces_in_row):
            axes[r, c + bool(row_titles)].imshow(img, cmap="gray", vmin=0, vmax=255)
    for c, (text, color) in enumerate(column_titles or []):
        axes[0, c].set_title(text, fontsize=7.5, color=color, pad=2)
    save(fig, path)


def plot_samples(images: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 3) -> None:
    """per_class random training faces of each class, a column per class under the class's name."""
    rng = np.random.default_rng(0)
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(K)]
    face_grid([[images[picked[c][k]] for c in range(K)] for k in range(per_class)], path,
              column_titles=list(zip(CLASS_NAMES, CLASS_COLORS, strict=True)), side=0.8)


def plot_curves(runs: dict[str, dict], path: Path) -> None:
    """Loss and accuracy per epoch, training (dashed) and held-out (solid), a colour per run; o marks the kept
    epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(FULL, 2.8))
    for (name, run), color in zip(runs.items(), plt.get_cmap("Dark2").colors, strict=False):
        epochs = [e["epoch"] for e in run["history"]]
        plain = " (training faces not augmented)" if run["args"].get("no_augment") else ""
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(epochs, [e[f"train_{key}"] for e in run["history"]], "--", color=color, lw=1)
            ax.plot(epochs, [e[f"val_{key}"] for e in run["history"]], "-", color=color, lw=1, label=name + plain)
            best = run["history"][run["best_epoch"] - 1]
            ax.plot(best["epoch"], best[f"val_{key}"], "o", color=color, markersize=5, mfc="none", mew=1.2)
    for style, what in (("--", "training"), ("-", "held-out")):  # the line styles' key, in the legend
        ax_loss.plot([], [], style, color="grey", lw=1, label=what)
    ax_loss.set(title="Loss (training: augmented, label-smoothed)", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy (o: the epoch kept)", xlabel="epoch", ylabel="accuracy")
    save(fig, path, legend_rows=2)


ARM_STYLE = {"long": ("tab:blue", "with augmentation"), "long_no_augment": ("tab:orange", "without augmentation")}


def plot_long(runs: dict, arms: dict[str, dict], path: Path) -> None:
    """The longer ablations: accuracy per epoch of every seed (training dashed), and each arm's kept models
    (dots), their mean (bar) and their ensemble (star)."""
    fig, (ax_curve, ax_end) = plt.subplots(1, 2, figsize=(FULL, 2.7), width_ratios=(3, 2))
    for i, (arm, a) in enumerate(arms.items()):
        color, label = ARM_STYLE[arm]
        for k, name in enumerate(a["names"]):
            epochs = runs[name]["history"]
            ax_curve.plot([e["epoch"] for e in epochs], [100 * e["val_acc"] for e in epochs], "-", color=color,
                          lw=1, label=f"{label}: held-out" if k == 0 else None)
            ax_curve.plot([e["epoch"] for e in epochs], [100 * e["train_acc"] for e in epochs], "--", color=color,
                          lw=1, label=f"{label}: training" if k == 0 else None)
        ax_end.plot([100 * x for x in a["accs"]], [i] * len(a["accs"]), "o", color=color, mfc="none", mew=1.2,
                    label="one seed" if i == 0 else None)
        ax_end.plot([100 * a["mean"]] * 2, [i - 0.25, i + 0.25], "-", color=color, lw=2,
                    label="mean of the seeds" if i == 0 else None)
        if a["ensemble"] is not None:
            ax_end.plot(100 * a["ensemble"], i, "*", color=color, markersize=9,
                        label=f"ensemble of {len(a['names'])}" if i == 0 else None)
    ax_curve.set(title="Accuracy per epoch, every seed (no TTA)", xlabel="epoch", ylabel="accuracy (%)")
    ax_curve.set_ylim(top=105)  # room for the legend above the curves
    ax_curve.legend(frameon=False, loc="upper left")
    ax_end.set(title="Kept models, flip TTA", xlabel="held-out accuracy (%)", ylim=(-0.6, 2.9))
    ax_end.set_yticks(range(len(arms)), [ARM_STYLE[arm][1].replace(" ", "\n", 1) for arm in arms])
    ax_end.legend(frameon=False, loc="upper left")
    save(fig, path)


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    norm = cm / cm.sum(1, keepdims=True).clip(1)
    fig, ax = plt.subplots(figsize=(3.6, 3.0))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xticks=range(K), yticks=range(K), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticklabels(CLASS_NAMES)
    fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, path)


def plot_confusion_examples(images: dict[int, np.ndarray], examples: dict[str, list[int]], path: Path) -> None:
    """The faces (test ids) of each common confusion, a row per confusion beside its true → predicted."""
    rows, titles = [], []
    for pair, ids in examples.items():
        t, p = map(int, pair.split(","))
        rows.append([images[i] for i in ids])
        titles.append((f"{CLASS_NAMES[t]}\n→ {CLASS_NAMES[p]}", CLASS_COLORS[t]))
    face_grid(rows, path, row_titles=titles, side=0.72)


def last_conv_activation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the last ReLU in model.features (the last conv layer's output)."""
    relu = [m for m in model.features if isinstance(m, nn.ReLU)][-1]
    kept = {}
    handle = relu.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return kept["a"].mean(1, keepdim=True)


def looks_like_a_face(face: np.ndarray) -> bool:
    """Whether faces.py's detector finds a face in the 48x48 face upscaled 4x: FER2013 also holds a few
    placeholders ("this image has moved") and drawings, which would make poor examples."""
    big = np.asarray(Image.fromarray(face).resize((192, 192), Image.Resampling.BICUBIC))
    return bool(faces.detect(big, 0))


def plot_activations(model: nn.Module, images: np.ndarray, labels: np.ndarray, path: Path,
                     per_class: int = 2) -> None:
    """Per class, per_class held-out faces in which a face is found, each under the last conv layer's map; a
    column per class."""
    rng = np.random.default_rng(1)
    picked = []
    for c in range(K):
        shuffled = rng.permutation(np.flatnonzero(labels == c))
        found = list(itertools.islice((i for i in shuffled if looks_like_a_face(images[i])), per_class))
        picked.append(found + [i for i in shuffled if i not in found][:per_class - len(found)])  # none: any
    order = [picked[c][k] for k in range(per_class) for c in range(K)]  # row k holds every class's k-th face
    x = torch.from_numpy(images[order]).float().div(255)[:, None]
    model.eval()
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    maps = nn.functional.interpolate(last_conv_activation(model, x), size=x.shape[-2:], mode="bilinear")
    side = 0.8
    fig, axes = plt.subplots(per_class, K, figsize=(side * K, (side + 0.3) * per_class), squeeze=False)
    for i, row in enumerate(order):
        ax = axes[i // K, i % K]
        ax.imshow(images[row], cmap="gray", vmin=0, vmax=255)
        ax.imshow(maps[i, 0].numpy(), cmap="jet", alpha=0.4)
        ax.set_title(f"{CLASS_NAMES[labels[row]]}\n→ {CLASS_NAMES[predicted[i]]}", fontsize=7, pad=2,
                     color=CLASS_COLORS[labels[row]], linespacing=1.0)
        ax.axis("off")
    save(fig, path)


SWEEP_STYLE = {"mobilenet": ("s", "tab:orange", "MobileNet-style network"), "vgg": ("o", "tab:blue", "plain CNN (VGG)")}


def plot_size_sweep(sweep: list[dict], compact: dict, path: Path) -> None:
    """Two scatter plots, parameters against held-out accuracy (flip TTA): the MobileNet-style networks as int8
    files, with the shipped compact model for reference, and the plain CNNs as int8 files, on the same ranges."""
    fig, axes = plt.subplots(1, 2, figsize=(FULL, 2.6), sharey=True)
    values = [m["params"] for m in sweep] + [compact["params"]]
    accs = [100 * m["int8_val_acc_tta"] for m in sweep] + [100 * compact["val_acc_tta"]]
    ticks = [t for t in (1e4, 2e4, 5e4, 1e5, 2e5, 5e5) if min(values) / 1.5 <= t <= max(values) * 1.5]
    for ax, (arch, (marker, color, name)) in zip(axes, SWEEP_STYLE.items(), strict=True):
        points = [m for m in sweep if m["arch"] == arch]
        ax.scatter([m["params"] for m in points], [100 * m["int8_val_acc_tta"] for m in points], marker=marker,
                   color=color, s=22, label="short schedule (10 epochs)")
        for i, m in enumerate(sorted(points, key=lambda m: m["params"])):
            ax.annotate(m["name"], (m["params"], 100 * m["int8_val_acc_tta"]), fontsize=7, ha="center",
                        xytext=(0, 6 if i % 2 else -11), textcoords="offset points")
        if arch == compact["arch"]:
            ax.scatter(compact["params"], 100 * compact["val_acc_tta"], marker="*", color="tab:red", s=70,
                       label=f"{compact['name']} (distilled, longer)")
        ax.set(xscale="log", xlabel="parameters", title=name, xlim=(min(values) / 1.6, max(values) * 1.6))
        ax.set_xticks(ticks, [f"{t / 1000:.0f}k" for t in ticks])  # 1-2-5 steps: a log axis one can read off
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(frameon=False, loc="upper left")
    axes[0].set(ylabel="held-out accuracy (%)", ylim=(min(accs) - 2.5, max(accs) + 1.5))  # room for the labels
    save(fig, path)
