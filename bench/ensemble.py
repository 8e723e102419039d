"""Choose the default ensemble: greedy forward selection of members and views on the grouped held-out split.

  python -m bench.ensemble <train.csv> --model A.q8 --model B.q8 ... [--views flip|all] [--cache DIR] [--json F]

Each candidate is a model with one kind of test-time views (flip for every model; ten crops too for a model
trained on crops). Selection starts empty and adds, with replacement, the candidate whose addition gives the
highest held-out accuracy (ties: the lower log loss), as Caruana et al. (2004) do; it stops when no addition
helps. A candidate picked k times weighs k in the average. Every model must record the same split, so that no
held-out face was seen in training by any member. The chosen ensemble's held-out figure is optimistic (it was
chosen on these faces): its public-half score, taken once afterwards, is the honest one.
"""

import argparse
import hashlib
import json
from pathlib import Path

import torch

from bench.heldout import accuracy
from dataset import common_split, heldout_faces
from model import fuse_for_inference
from predict import BATCH_SIZE, predict_proba
from quantized import load_model
from utils import atomic_write, fail, output_problem

MAX_STEPS = 12  # enough picks for weights of 1..4 over a handful of members; more only fits held-out noise


def candidate_views(model: torch.nn.Module, views: str) -> list[str]:
    """The test-time views to try for a model: ten crops too (views "all") where it was trained on smaller crops."""
    return ["flip", "crops"] if views == "all" and getattr(model, "side", 48) < 48 else ["flip"]


def cached_proba(model: torch.nn.Module, path: str, images: torch.Tensor, tta: str, cache: Path | None) -> torch.Tensor:
    """predict_proba, kept in cache/<sha256 of the model file>_<views>.pt when a cache folder is given."""
    if cache is None:
        return predict_proba(model, images, BATCH_SIZE, tta)
    key = cache / f"{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}_{len(images)}_{tta}.pt"
    if not key.exists():
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(predict_proba(model, images, BATCH_SIZE, tta), key)
    return torch.load(key, weights_only=True)


def held_out_probabilities(paths: list[str], train_csv: str, views: str,
                           cache: Path | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Held-out class probabilities of every (model, views) candidate, and the held-out labels."""
    loaded = [load_model(p) for p in paths]
    split = common_split([header.get("split") for _, header in loaded])
    images, labels, clean = heldout_faces(train_csv, split)
    if not clean.all():
        raise ValueError("the models' split leaves copies of held-out faces in training: use the grouped split")
    probs = {}
    for path, (model, _) in zip(paths, loaded, strict=True):
        model = fuse_for_inference(model).to(memory_format=torch.channels_last)
        for tta in candidate_views(model, views):
            probs[f"{path} {tta}"] = cached_proba(model, path, images, tta, cache)
            print(f"{path} with {tta}: held-out {accuracy(probs[f'{path} {tta}'], labels):.4f}", flush=True)
    return probs, labels


def log_loss(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean().item()


def greedy_selection(probs: dict[str, torch.Tensor], labels: torch.Tensor, steps: int = MAX_STEPS) -> list[dict]:
    """The selection path: after each pick, the weights so far and the held-out accuracy and log loss."""
    total, picks, path = torch.zeros_like(next(iter(probs.values()))), {}, []
    for _ in range(steps):
        n = sum(picks.values()) + 1
        scored = [(accuracy((total + p) / n, labels), -log_loss((total + p) / n, labels), name)
                  for name, p in probs.items()]
        acc, neg_loss, name = max(scored)
        if path and (acc, neg_loss) <= (path[-1]["acc"], -path[-1]["log_loss"]):
            break
        total += probs[name]
        picks[name] = picks.get(name, 0) + 1
        path.append({"weights": dict(picks), "acc": acc, "log_loss": -neg_loss})
        print(f"pick {n:2d}: {name}  ->  held-out {acc:.4f}, log loss {-neg_loss:.4f}", flush=True)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("--model", action="append", required=True, help="a candidate model file; repeat")
    p.add_argument("--steps", type=int, default=MAX_STEPS, help="most picks")
    p.add_argument("--views", choices=["flip", "all"], default="all", help="candidates' test-time views: flip "
                   "alone, or ten crops too for models trained on crops")
    p.add_argument("--cache", type=Path, help="keep each candidate's held-out probabilities here for reruns")
    p.add_argument("--json", type=Path, help="also write the candidates' figures and the selection path here")
    args = p.parse_args(argv)
    problem = args.json and output_problem(args.json, make_folders=True)
    if problem:
        fail("ensemble.py", problem)
    try:
        probs, labels = held_out_probabilities(args.model, args.train_csv, args.views, args.cache)
    except (ValueError, OSError) as e:
        fail("ensemble.py", str(e))
    every = sum(probs[f"{m} flip"] for m in args.model) / len(args.model)
    print(f"every model, flip, equal weights: held-out {accuracy(every, labels):.4f} ({len(labels)} faces)")
    path = greedy_selection(probs, labels, args.steps)
    result = {"n_val": len(labels), "candidates": {name: accuracy(p, labels) for name, p in probs.items()},
              "every_flip": accuracy(every, labels), "path": path, "chosen": path[-1]}
    print(f"chosen: {path[-1]['weights']}: held-out {path[-1]['acc']:.4f}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
