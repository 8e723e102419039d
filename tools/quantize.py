"""Write a trained checkpoint as a quantised model file and measure what it costs.

  python -m tools.quantize <checkpoint.pt> <out.q8> [--bits K [--small-bits K] [--clip mse]] [--max-bytes 225000]
                           [--train-csv ../shared/fer2013/train.csv.gz]
  python -m tools.quantize --repack <file.q8>...

Without --bits: the int8 file of the larger released networks (compact_int8.save_compact). With --bits K: the
k-bit file of quantized.py (the compact model's; its source may also be a model file, quantised further).
Refuses (exit 1, nothing written) when the file would be larger than --max-bytes. With --train-csv,
prints held-out accuracy (flip TTA) of the source and of the written file on the source's split,
how many predictions differ, and the largest logit difference. --repack rewrites int8 files of an
older format in the current one (compact_int8.COMPACT_FORMAT) with the very same tensor bytes.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from compact_int8 import COMPACT_FORMAT, read_compact, save_compact, write_compact
from dataset import CLASS_NAMES, heldout_faces
from model import count_parameters, fuse_for_inference
from predict import predict_proba
from quantized import BITS, CLIPS, SMALL_BITS, load_model, quantize_file
from utils import output_problem

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
    """Held-out figures of the source (a checkpoint, or a model file) and of its quantised file, on the
    source's own split."""
    model, ckpt = load_model(checkpoint)
    images, labels, _ = heldout_faces(train_csv, ckpt["split"])
    params = count_parameters(model)  # before folding BatchNorm, as train.py counts them
    fp32 = predict_proba(fuse_for_inference(model), images)
    int8 = predict_proba(load_model(compact)[0], images)
    logits_fp32 = fp32.log()
    logits_int8 = int8.log()
    return {"params": params, "bytes": Path(compact).stat().st_size, "n_val": len(labels),
            "val_acc_tta_fp32": (fp32.argmax(1) == labels).float().mean().item(),
            "val_acc_tta_int8": (int8.argmax(1) == labels).float().mean().item(),
            "changed_predictions": int((fp32.argmax(1) != int8.argmax(1)).sum()),
            "max_log_prob_diff": (logits_fp32 - logits_int8).abs().max().item()}


def repack(path: str) -> tuple[int, int]:
    """Rewrite a compact file in the current format, tensor bytes unchanged (checked by reading it back);
    returns the sizes before and after."""
    before = Path(path).stat().st_size
    header, tensor_bytes = read_compact(path)
    if header["format"] != COMPACT_FORMAT:
        write_compact(path, header, tensor_bytes)
        if read_compact(path) != ({**header, "format": COMPACT_FORMAT}, tensor_bytes):
            raise ValueError(f"{path}: the repacked file does not read back the same")  # it rewrites weights in place
    return before, Path(path).stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("out", nargs="?")
    p.add_argument("--repack", nargs="+", metavar="FILE", help="rewrite these compact files in the current format")
    p.add_argument("--bits", type=int, choices=BITS, help="write quantized.py's k-bit file with this many bits per "
                   "weight (default: the int8 file of compact_int8.py)")
    p.add_argument("--small-bits", type=int, choices=BITS, default=SMALL_BITS, help="with --bits: bits per weight of "
                   "the 3x3 depthwise filters and a one-channel stem (quantized.py)")
    p.add_argument("--clip", choices=CLIPS, default="max", help="with --bits: each channel's scale (quantized.py)")
    p.add_argument("--train-csv", help="also measure held-out accuracy before and after quantisation")
    p.add_argument("--max-bytes", type=int, default=225_000, help="the homework's limit for the strong baseline")
    args = p.parse_args()
    if args.repack:
        if args.checkpoint:
            p.error("--repack takes no checkpoint and out")
        for path in args.repack:
            try:
                before, after = repack(path)
            except (ValueError, OSError) as e:
                sys.exit(f"quantize.py: error: {e}")
            print(f"{path}: {before:,} -> {after:,} bytes (format {COMPACT_FORMAT})")
        return
    if not args.out:
        p.error("the checkpoint and out arguments are required")
    problem = output_problem(args.out)
    if problem:
        sys.exit(f"quantize.py: error: {problem}")
    try:
        if args.bits:
            size = quantize_file(args.checkpoint, args.out, args.bits, args.small_bits, args.clip, args.max_bytes)
        else:
            size = quantize(args.checkpoint, args.out, args.max_bytes)
    except (ValueError, OSError) as e:
        sys.exit(f"quantize.py: error: {e}")
    print(f"wrote {args.out}: {size:,} bytes")
    if args.train_csv:
        print(json.dumps(compare(args.checkpoint, args.out, args.train_csv), indent=1))


if __name__ == "__main__":
    main()
