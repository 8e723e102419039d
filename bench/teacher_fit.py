"""How closely a teacher ensemble fits its own training faces: what its distillation targets look like on the
training part of its split against the held-out part.

  python bench/teacher_fit.py <train.csv> --model A --model B ... [--cache F] [--json F]

A student learns from the teacher's soft targets on the training part only. Where the teachers have
memorised those faces, their targets there are near one-hot and right, whatever the temperature, so they
carry little more than the labels; on held-out faces the same teachers are unsure and often wrong.
The gap between the two columns is what a teacher trained on other faces (cross-fitting) would close.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataset import common_split, read_faces, recorded_split  # noqa: E402
from model import atomic_write, fuse_for_inference, output_problem  # noqa: E402
from predict import TTA_VIEWS, ensemble_proba  # noqa: E402
from quantized import load_model  # noqa: E402
from train import HPARAMS, TEACHER_VIEWS, teacher_logits  # noqa: E402


def target_figures(log_probs: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict:
    """Accuracy, mean top probability, mean probability of the label, and the mean entropy (nats) of the
    targets softened at the temperature, as the distillation loss uses them."""
    probs = log_probs.exp()
    soft = torch.softmax(log_probs / temperature, 1)
    return {"n": len(labels), "accuracy": (probs.argmax(1) == labels).float().mean().item(),
            "mean_top_prob": probs.max(1).values.mean().item(),
            "mean_label_prob": probs.gather(1, labels[:, None]).mean().item(),
            "mean_soft_entropy": -(soft * soft.clamp_min(1e-12).log()).sum(1).mean().item()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--model", action="append", required=True, help="a teacher file; repeat for an ensemble")
    p.add_argument("--temperature", type=float, default=HPARAMS["temperature"], help="the distillation temperature")
    p.add_argument("--views", choices=TTA_VIEWS, default=TEACHER_VIEWS, help="the teachers' test-time views "
                   "(default: train.py's)")
    p.add_argument("--cache", type=Path, help="train.py's teacher cache to read (and write): <out>.teacher.pt")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    problem = args.json and output_problem(args.json, make_folders=True)
    if problem:
        sys.exit(f"teacher_fit.py: error: {problem}")
    try:
        loaded = [load_model(m) for m in args.model]
        split = common_split([header.get("split") for _, header in loaded])
    except (ValueError, OSError) as e:
        sys.exit(f"teacher_fit.py: error: {e}")
    models = [fuse_for_inference(m).to(memory_format=torch.channels_last) for m, _ in loaded]  # as predict.py runs them
    faces = read_faces(args.train_csv, require_labels=True)
    if args.cache and args.views != TEACHER_VIEWS:
        sys.exit(f"teacher_fit.py: error: train.py's cache holds {TEACHER_VIEWS} views, not {args.views}")
    log_probs = (teacher_logits(args.model, faces.images, args.train_csv, args.cache, models) if args.cache
                 else ensemble_proba(models, faces.images, tta=args.views).clamp_min(1e-8).log())
    parts = dict(zip(("training", "held_out"), recorded_split(faces, split), strict=True))
    result = {"models": args.model, "split": split, "views": args.views, "temperature": args.temperature,
              **{name: target_figures(log_probs[idx], faces.labels[idx], args.temperature)
                 for name, idx in parts.items()}}
    for name in parts:
        f = result[name]
        print(f"{name:9s} {f['n']:6d} faces: accuracy {f['accuracy']:.4f}, mean top prob {f['mean_top_prob']:.3f}, "
              f"mean label prob {f['mean_label_prob']:.3f}, entropy at T={args.temperature:g} "
              f"{f['mean_soft_entropy']:.3f} nats (uniform {np.log(log_probs.shape[1]):.3f})")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
