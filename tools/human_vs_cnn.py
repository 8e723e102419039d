"""Human against CNN: label random held-out faces yourself, then see the model's score on the same faces.

  python -m tools.human_vs_cnn <train.csv> [--n 60] [--seed 0] [--out answers.csv] [--model PATH ...]
  python -m tools.human_vs_cnn <train.csv> --score answers.csv [--model PATH ...]

The faces are drawn from the held-out split recorded in the (first) model, so the model never trained
on them. A window shows one face at a time; press the class's number (0-6, listed under the face) or q
to stop early. After every answer, --out is rewritten (row of the training file, your label); the true
labels are only used for the final comparison.
"""

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dataset import CLASS_NAMES, DataError, read_faces, recorded_split
from predict import ensemble_proba, released
from quantized import load_model
from utils import atomic_write, output_problem


def pick_faces(val_idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n distinct held-out rows in a random order fixed by seed."""
    return np.random.default_rng(seed).choice(val_idx, size=min(n, len(val_idx)), replace=False)


def write_answers(answers: list[tuple[int, int]], path: Path) -> None:
    with atomic_write(path, "w") as f:
        f.write("row,human\n")
        f.writelines(f"{row},{label}\n" for row, label in answers)


def read_answers(path: Path) -> list[tuple[int, int]]:
    """(row, label) pairs; a malformed line is a one-line DataError naming it."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        if next(reader, None) != ["row", "human"]:
            raise DataError(f"{path}:1: expected the header row,human")
        answers = []
        for line, fields in enumerate(reader, start=2):
            try:
                row, label = (int(v) for v in fields)
            except ValueError:
                raise DataError(f"{path}:{line}: expected two integers row,human, found {fields}") from None
            if not 0 <= label < len(CLASS_NAMES):
                raise DataError(f"{path}:{line}: label {label} is not one of 0..{len(CLASS_NAMES) - 1}")
            answers.append((row, label))
    return answers


def label_faces(images: np.ndarray, rows: np.ndarray, ask: Callable[[np.ndarray, int, int], int | None],
                out: Path) -> list[tuple[int, int]]:
    """Ask for a label for each face (ask returns None to stop); out is rewritten after every answer."""
    answers: list[tuple[int, int]] = []
    for i, row in enumerate(rows):
        label = ask(images[row], i, len(rows))
        if label is None:
            break
        answers.append((int(row), label))
        write_answers(answers, out)
    return answers


def ask_in_window(face: np.ndarray, i: int, n: int) -> int | None:
    """Show the face in a matplotlib window and wait for a key: 0-6 answers, q stops."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4.6))
    ax.imshow(face, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")
    ax.set_title(f"face {i + 1} of {n}")
    fig.text(0.5, 0.02, "   ".join(f"{k} {name}" for k, name in enumerate(CLASS_NAMES)) + "   q stop",
             ha="center", fontsize=7)
    answer: dict[str, int | None] = {}

    def on_key(event) -> None:
        if event.key in [str(k) for k in range(len(CLASS_NAMES))]:
            answer["label"] = int(event.key)
            plt.close(fig)
        elif event.key == "q":
            answer["label"] = None
            plt.close(fig)

    fig.canvas.mpl_connect("key_press_event", on_key)
    plt.show()
    return answer.get("label")


def compare(answers: list[tuple[int, int]], labels: np.ndarray, model_labels: np.ndarray) -> dict:
    """Human and model accuracy on the answered faces, and how often they agree."""
    rows = np.array([r for r, _ in answers], dtype=int)
    human = np.array([h for _, h in answers], dtype=int)
    return {"faces": len(rows), "human_acc": float((human == labels[rows]).mean()),
            "model_acc": float((model_labels[rows] == labels[rows]).mean()),
            "agreement": float((human == model_labels[rows]).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--n", type=int, default=60, help="faces to label (50-100 gives a usable estimate)")
    p.add_argument("--seed", type=int, default=0, help="which random faces")
    p.add_argument("--out", type=Path, default=Path("human_answers.csv"))
    p.add_argument("--score", type=Path, help="compare a saved answers file instead of labelling")
    p.add_argument("--model", action="append", help="model file(s); default: the released ensemble")
    args = p.parse_args()
    models = args.model or released("default")
    problem = not args.score and output_problem(args.out)
    if problem:
        sys.exit(f"human_vs_cnn.py: error: {problem}")
    try:
        faces = read_faces(args.train_csv, require_labels=True)
        split = load_model(models[0])[1]["split"]
        _, val_idx = recorded_split(faces, split)
        if args.score:
            answers = read_answers(args.score)
        else:
            import matplotlib

            if matplotlib.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
                raise DataError("labelling needs a display, and matplotlib found none (run it on a desktop)")
            rows = pick_faces(val_idx, args.n, args.seed)
            answers = label_faces(faces.images[:, 0].numpy(), rows, ask_in_window, args.out)
        held_out = set(val_idx.tolist())
        outside = [r for r, _ in answers if r not in held_out]
        if outside:
            raise DataError(f"{args.score or args.out}: row {outside[0]} is not in the model's held-out split")
        if not answers:
            raise DataError("no faces were labelled")
        answered = np.array([r for r, _ in answers])
        model_labels = np.zeros(len(faces.labels), dtype=int)
        model_labels[answered] = ensemble_proba(models, faces.images[answered]).argmax(1).numpy()
    except (DataError, ValueError, OSError) as e:
        sys.exit(f"human_vs_cnn.py: error: {e}")
    result = compare(answers, faces.labels.numpy(), model_labels)
    print(f"{result['faces']} faces: you {result['human_acc']:.1%}, the model {result['model_acc']:.1%}, "
          f"agreement {result['agreement']:.1%} (human accuracy on FER2013 in the literature: about 65 ± 5 %)")


if __name__ == "__main__":
    main()
