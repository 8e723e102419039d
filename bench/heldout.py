"""Held-out accuracy of models and their ensemble, on the split recorded in their checkpoints.

  python bench/heldout.py <train.csv> --model A.pt [--model B.pt ...] [--json results.json]

Every model must record the same split (method, fraction, seed): an ensemble is only scored on
faces that none of its members trained on.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataset import read_faces, recorded_split  # noqa: E402
from model import atomic_write, load_model  # noqa: E402
from predict import predict_proba  # noqa: E402


def heldout_faces(train_csv: str, split: dict) -> tuple[torch.Tensor, torch.Tensor]:
    faces = read_faces(train_csv, require_labels=True)
    _, val_idx = recorded_split(faces, split)
    return faces.images[val_idx], faces.labels[val_idx]


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(1) == labels).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    loaded = [load_model(m) for m in args.model]
    splits = {json.dumps(ckpt.get("split"), sort_keys=True) for _, ckpt in loaded}
    if len(splits) != 1:
        sys.exit(f"heldout.py: the models record different splits: {sorted(splits)}")
    images, labels = heldout_faces(args.train_csv, loaded[0][1]["split"])
    rows, ensemble = [], torch.zeros(len(labels), 7)
    for path, (model, _) in zip(args.model, loaded, strict=True):
        plain = predict_proba(model, images, tta=False)
        flipped = predict_proba(model, images, tta=True)
        ensemble += flipped
        rows.append({"model": path, "val_acc": accuracy(plain, labels), "val_acc_tta": accuracy(flipped, labels)})
        print(f"{path}: held-out acc {rows[-1]['val_acc']:.4f}, with flip TTA {rows[-1]['val_acc_tta']:.4f}")
    result = {"split": loaded[0][1]["split"], "n_val": len(labels), "models": rows,
              "ensemble_val_acc_tta": accuracy(ensemble, labels)}
    if len(args.model) > 1:
        print(f"ensemble of {len(args.model)} (flip TTA): held-out acc {result['ensemble_val_acc_tta']:.4f}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
