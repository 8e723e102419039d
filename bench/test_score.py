"""Score a submission on the public half of the test file, as Kaggle's public leaderboard does.

  python -m bench.test_score pred.csv [--labels ../shared/fer2013/public_test_labels.csv]

Reads the id,label submission and the public half's labels (ids 0..3588), and prints the accuracy and
macro-F1 on the ids both hold. Score a model once, after it was chosen on the held-out split: these labels
must never choose, tune or early-stop anything.
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from dataset import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent

PUBLIC_LABELS = ROOT.parent / "shared" / "fer2013" / "public_test_labels.csv"


def read_labels(path: str | Path, what: str) -> pd.Series:
    """id -> label of an id,label file; a bad file is one line naming it, the line and the problem."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SystemExit(f"test_score.py: {path}: not a readable {what} ({str(e).strip().splitlines()[0]})") from None
    if list(table.columns) != ["id", "label"]:
        raise SystemExit(f"test_score.py: {path}:1: expected the header id,label, found {','.join(table.columns)}")
    for column in ("id", "label"):
        bad = ~table[column].str.fullmatch(r"\d+")
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise SystemExit(f"test_score.py: {path}:{row + 2}: {column} {table[column].iloc[row]!r} is not a number")
    labels = table["label"].astype(int)
    if (labels >= len(CLASS_NAMES)).any():
        row = int(np.argmax((labels >= len(CLASS_NAMES)).to_numpy()))
        raise SystemExit(f"test_score.py: {path}:{row + 2}: label {labels.iloc[row]} is not one of 0..6")
    ids = table["id"].astype(int)
    if ids.duplicated().any():
        row = int(np.argmax(ids.duplicated().to_numpy()))
        raise SystemExit(f"test_score.py: {path}:{row + 2}: id {ids.iloc[row]} appears twice")
    return pd.Series(labels.to_numpy(), index=ids.to_numpy())


def scores(truth: np.ndarray, guess: np.ndarray) -> dict:
    """Accuracy and macro-F1 (the mean of the seven classes' F1)."""
    f1 = []
    for c in range(len(CLASS_NAMES)):
        tp = int(((guess == c) & (truth == c)).sum())
        predicted, actual = int((guess == c).sum()), int((truth == c).sum())
        f1.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return {"n": len(truth), "accuracy": float((truth == guess).mean()), "macro_f1": float(np.mean(f1))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pred_csv")
    p.add_argument("--labels", default=str(PUBLIC_LABELS), help="id,label of the public half")
    args = p.parse_args(argv)
    truth = read_labels(args.labels, "label file")
    guess = read_labels(args.pred_csv, "submission")
    missing = truth.index.difference(guess.index)
    if len(missing):
        raise SystemExit(f"test_score.py: {args.pred_csv}: no row for {len(missing)} of the {len(truth)} public ids "
                         f"(first: {missing[0]})")
    result = scores(truth.to_numpy(), guess.loc[truth.index].to_numpy())
    print(f"{args.pred_csv}: public half, {result['n']} faces: accuracy {result['accuracy']:.2%}, "
          f"macro-F1 {result['macro_f1']:.4f}")
    return result


if __name__ == "__main__":
    main()
