"""Store a checkpoint's conv and linear weights as fp16 (model.store_fp16): half the bytes, same predictions
to within a face or two.

  python -m tools.half <checkpoint.pt> <out.pt> [--train-csv ../shared/fer2013/train.csv.gz]

With --train-csv, prints the held-out accuracy (flip TTA) of both files on the checkpoint's own split
and how many predictions differ.
"""

import argparse
import json
import sys
from pathlib import Path

from dataset import DataError, heldout_faces
from model import atomic_save, load_checkpoint, store_fp16
from predict import load_for_inference, predict_proba
from utils import output_problem


def compare(checkpoint: str, half: str, train_csv: str) -> dict:
    images, labels, _ = heldout_faces(train_csv, load_checkpoint(checkpoint)["split"])
    fp32, fp16 = (predict_proba(load_for_inference(path), images).argmax(1) for path in (checkpoint, half))
    return {"n_val": len(labels), "val_acc_tta_fp32": (fp32 == labels).float().mean().item(),
            "val_acc_tta_fp16": (fp16 == labels).float().mean().item(),
            "changed_predictions": int((fp32 != fp16).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--train-csv", help="also compare held-out accuracy before and after")
    args = p.parse_args()
    problem = output_problem(args.out, make_folders=True)
    if problem:
        sys.exit(f"half.py: error: {problem}")
    try:
        atomic_save(store_fp16(load_checkpoint(args.checkpoint)), args.out)
        print(f"wrote {args.out}: {Path(args.out).stat().st_size:,} bytes "
              f"(from {Path(args.checkpoint).stat().st_size:,})")
        if args.train_csv:
            print(json.dumps(compare(args.checkpoint, args.out, args.train_csv), indent=1))
    except (ValueError, OSError, DataError) as e:
        sys.exit(f"half.py: error: {e}")


if __name__ == "__main__":
    main()
