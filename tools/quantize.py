"""Write a trained checkpoint as a compact int8 model file (model.save_compact) and measure what it costs.

  python tools/quantize.py <checkpoint.pt> <out.q8> [--train-csv ../shared/fer2013/train.csv.gz]
                           [--max-bytes 225000]

Refuses (exit 1, nothing written) when the file would be larger than --max-bytes. With --train-csv,
prints held-out accuracy (flip TTA) of the checkpoint and of the int8 file on the checkpoint's split,
how many predictions differ, and the largest logit difference.
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataset import CLASS_NAMES, read_faces, recorded_split  # noqa: E402
from model import (  # noqa: E402
    count_parameters,
    fuse_for_inference,
    load_compact,
    load_model,
    output_problem,
    save_compact,
)
from predict import predict_proba  # noqa: E402

HEADER_KEYS = ("split", "val_acc", "val_acc_tta", "epoch", "git_commit")  # what the compact file keeps


def quantize(checkpoint: str, out: str, max_bytes: int) -> int:
    """Write out atomically and return its size; an oversized file is removed and raises ValueError."""
    model, ckpt = load_model(checkpoint)
    tmp = Path(out).with_name(f".{Path(out).name}.candidate")
    size = save_compact(model, ckpt["config"], tmp, class_names=ckpt.get("class_names", list(CLASS_NAMES)),
                        source=Path(checkpoint).name, **{k: ckpt[k] for k in HEADER_KEYS if k in ckpt})
    if size > max_bytes:
        tmp.unlink()
        raise ValueError(f"{out}: {size:,} bytes, over the {max_bytes:,}-byte limit")
    os.replace(tmp, out)
    return size


def compare(checkpoint: str, compact: str, train_csv: str) -> dict:
    """Held-out figures of the fp32 checkpoint and of its int8 file, on the checkpoint's own split."""
    model, ckpt = load_model(checkpoint)
    faces = read_faces(train_csv, require_labels=True)
    _, val_idx = recorded_split(faces, ckpt["split"])
    images, labels = faces.images[val_idx], faces.labels[val_idx]
    params = count_parameters(model)  # before folding BatchNorm, as train.py counts them
    fp32 = predict_proba(fuse_for_inference(model), images)
    int8 = predict_proba(load_compact(compact)[0], images)
    logits_fp32 = fp32.log()
    logits_int8 = int8.log()
    return {"params": params, "bytes": Path(compact).stat().st_size, "n_val": len(labels),
            "val_acc_tta_fp32": (fp32.argmax(1) == labels).float().mean().item(),
            "val_acc_tta_int8": (int8.argmax(1) == labels).float().mean().item(),
            "changed_predictions": int((fp32.argmax(1) != int8.argmax(1)).sum()),
            "max_log_prob_diff": (logits_fp32 - logits_int8).abs().max().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--train-csv", help="also measure held-out accuracy before and after quantisation")
    p.add_argument("--max-bytes", type=int, default=225_000, help="the homework's limit for the strong baseline")
    args = p.parse_args()
    problem = output_problem(args.out)
    if problem:
        sys.exit(f"quantize.py: error: {problem}")
    try:
        size = quantize(args.checkpoint, args.out, args.max_bytes)
    except (ValueError, OSError) as e:
        sys.exit(f"quantize.py: error: {e}")
    print(f"wrote {args.out}: {size:,} bytes")
    if args.train_csv:
        print(json.dumps(compare(args.checkpoint, args.out, args.train_csv), indent=1))


if __name__ == "__main__":
    main()
