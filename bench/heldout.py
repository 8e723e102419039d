"""Held-out accuracy of models and their ensemble, on the split recorded in their checkpoints.

  python -m bench.heldout <train.csv> [--model A.pt --model B.pt ...] [--json results.json] [--device auto]

Every model must record the same split (method, fraction, seed): an ensemble is only scored on
faces that none of its members trained on. Besides the whole held-out part, each figure is also given
on its duplicate-free part: the held-out faces with no pixel-identical copy in the training part (all
of them for the grouped split; the row-stratified split of the first releases leaked some).
Without --model: the released ensemble.
"""

import argparse
import json
from pathlib import Path

import torch

from dataset import CLASS_NAMES, common_split, heldout_faces
from model import fuse_for_inference
from predict import BATCH_SIZE, TTA_VIEWS, predict_proba, released
from quantized import load_model
from utils import atomic_write, fail, output_problem


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(1) == labels).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--model", action="append", help="a model file; repeat for an ensemble")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--device", default="cpu", help="cpu (fp32, as predict.py), cuda, or auto")
    p.add_argument("--tta", choices=TTA_VIEWS, default="flip", help="the test-time views of the TTA figures and the "
                   "ensemble (crops: five crops x flip for crop-trained models)")
    args = p.parse_args(argv)
    models = args.model or released("default")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    problem = args.json and output_problem(args.json, make_folders=True)
    if problem:
        fail("heldout.py", problem)
    try:
        loaded = [load_model(m) for m in models]
    except (ValueError, OSError) as e:
        fail("heldout.py", str(e))
    try:
        split = common_split([header.get("split") for _, header in loaded])
    except ValueError as e:
        fail("heldout.py", str(e))
    images, labels, clean = heldout_faces(args.train_csv, split)
    batch = 1024 if device != "cpu" else BATCH_SIZE  # the CPU figure is predict.py's, to the bit
    rows, ensemble = [], torch.zeros(len(labels), len(CLASS_NAMES))
    for path, (model, _) in zip(models, loaded, strict=True):
        model = fuse_for_inference(model).to(device, memory_format=torch.channels_last)
        plain = predict_proba(model, images, batch, tta=False)
        flipped = predict_proba(model, images, batch, tta=args.tta)
        ensemble += flipped
        rows.append({"model": path, "val_acc": accuracy(plain, labels), "val_acc_tta": accuracy(flipped, labels),
                     "val_acc_tta_clean": accuracy(flipped[clean], labels[clean])})
        print(f"{path}: held-out acc {rows[-1]['val_acc']:.4f}, with {args.tta} TTA {rows[-1]['val_acc_tta']:.4f}; "
              f"on the {int(clean.sum())} faces without a copy in training {rows[-1]['val_acc_tta_clean']:.4f}")
    result = {"split": split, "n_val": len(labels), "n_val_clean": int(clean.sum()), "device": device, "tta": args.tta,
              "models": rows, "ensemble_val_acc_tta": accuracy(ensemble, labels),
              "ensemble_val_acc_tta_clean": accuracy(ensemble[clean], labels[clean]),
              "ensemble_val_acc_tta_copies": accuracy(ensemble[~clean], labels[~clean]) if (~clean).any() else None}
    if len(models) > 1:
        print(f"ensemble of {len(models)} ({args.tta} TTA): held-out acc {result['ensemble_val_acc_tta']:.4f}; "
              f"without copies in training {result['ensemble_val_acc_tta_clean']:.4f} ({result['n_val_clean']} faces)")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
