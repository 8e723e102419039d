"""Write the Kaggle submission (id,label) for a CSV of faces.

  python predict.py <test.csv> <pred.csv> [--model PATH ... | --fast] [--tta none|flip|crops]

Without --model: the released ensemble (RELEASED["default"]); --fast: its two strongest members. Several
--model paths form an ensemble: their class probabilities are averaged. A model is a .pt checkpoint, an int8
.q8 file or a k-bit one (weights/compact.q8), told apart by content.
"""

import argparse
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

import utils
from dataset import CLASS_NAMES, DataError, read_faces
from model import fuse_for_inference
from quantized import load_model
from utils import atomic_write, keep_freed_memory, output_problem

HERE = Path(__file__).resolve().parent
# The released networks (weights/MANIFEST; int8 or k-bit: tools/quantize.py), each set for one use. All but the
# compact net share the grouped held-out split, on which bench/ensemble.py chose the default by greedy forward
# selection (runs/ensemble/); flip views for every member: ten crops gained less than the seed spread.
RELEASED = {
    "default": ["resnet_full48_s2.q8", "vgg_full48_s0.q8", "vgg_crop40_s0.q8", "resnet_crop40_s0.q8"],  # in pick order
    "fast": ["resnet_full48_s2.q8", "vgg_full48_s0.q8"],  # its first two picks, for about half the time
    "compact": ["compact.q8"],  # the k-bit MobileNet (HW8), for the camera page
}


def released(use: str) -> list[str]:
    """Paths of the released networks for one use: "default", "fast" or "compact"."""
    return [str(HERE / "weights" / name) for name in RELEASED[use]]


# Small batches stay in the CPU cache: 32 was among the fastest for both the VGG and the compact net on
# the 2-core dev machine (research/inference/batch_size.log); at 64 the compact net's test set took 2.7x as long.
BATCH_SIZE = 32


# Test-time views (--tta): "flip" averages each face with its mirror image; "crops" also takes the five crops
# (centre and corners) that a model trained on random crops of a smaller side has room for: ten views in all.
TTA_VIEWS = ("none", "flip", "crops")


def views(side: int, model_side: int, tta: bool | str) -> list[tuple[int, int, bool]]:
    """(top, left, mirrored) of each view of a side x side face that a model of input model_side sees."""
    tta = {True: "flip", False: "none"}.get(tta, tta)
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown test-time views {tta!r}: one of {', '.join(TTA_VIEWS)}")
    margin = side - model_side
    centre = [(margin // 2, margin // 2)]
    corners = [(0, 0), (0, margin), (margin, 0), (margin, margin)] if tta == "crops" and margin > 0 else []
    flips = [False, True] if tta != "none" else [False]
    return [(top, left, flip) for top, left in centre + corners for flip in flips]


@torch.inference_mode()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = BATCH_SIZE,
                  tta: bool | str = True) -> torch.Tensor:
    """Class probabilities for uint8 faces (N, 1, 48, 48), averaged over the test-time views (TTA_VIEWS;
    True: flip, False: none); a model trained on crops sees the centre crop, or all five with "crops"."""
    device = next(model.parameters()).device
    model.eval()
    side, model_side = images.shape[-1], getattr(model, "side", images.shape[-1])
    chosen = views(side, model_side, tta)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255)
        p = 0
        for top, left, flip in chosen:
            view = x[:, :, top:top + model_side, left:left + model_side]
            view = (view.flip(3) if flip else view).contiguous(memory_format=torch.channels_last)  # oneDNN's layout
            p = p + model(view).softmax(1)
        out.append(p.cpu() / len(chosen))
    return torch.cat(out)


def model_file_problem(path: str) -> str | None:
    """What stops a --model path before it is read, in one line; None for a file."""
    if Path(path).is_dir():
        return f"{path}: is a folder, not a model file"
    if not Path(path).is_file():
        return f"{path}: model file not found (the released weights: bash hw2_download.sh)"
    return None


def load_for_inference(path: str) -> nn.Module:
    """The model of a checkpoint, BatchNorm folded, channels_last; a bad file is a one-line DataError."""
    try:
        model, _ = load_model(path)
    except ValueError as e:  # not a model file at all: load_checkpoint / load_compact say what it is not
        raise DataError(str(e)) from None
    except (RuntimeError, KeyError, TypeError) as e:  # a model file whose weights do not fit its architecture
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: a damaged model file ({reason})") from None
    return fuse_for_inference(model).to(memory_format=torch.channels_last)


def ensemble_proba(models: list[str | nn.Module], images: torch.Tensor, tta: bool | str = True,
                   batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Mean of the models' probabilities; fp32 on the CPU, so the same input gives the same bytes. A model
    is a file, loaded here and let go after its pass, or a module from load_for_inference, kept by a caller
    that predicts again and again (faces.py's video frames)."""
    total = torch.zeros(len(images), len(CLASS_NAMES))
    for model in models:
        total += predict_proba(model if isinstance(model, nn.Module) else load_for_inference(model), images,
                               batch_size, tta)
    return total / len(models)


def write_submission(ids: np.ndarray, labels: np.ndarray, path: str | Path) -> None:
    """id,label rows in input order, written atomically."""
    with atomic_write(path, "w") as f:
        f.write("id,label\n")
        f.writelines(f"{i},{c}\n" for i, c in zip(ids.tolist(), labels.tolist(), strict=True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Predict FER2013 expressions into an id,label CSV.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("test_csv", help="faces to label: id,feature (or any accepted format; no id: row numbers)")
    p.add_argument("pred_csv", help="where the id,label submission goes")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", action="append", help="a model file; repeat for an ensemble (default: the "
                       f"released ensemble, {', '.join(RELEASED['default'])})")
    which.add_argument("--fast", action="store_true", help="the released pair, about half the time: "
                       f"{', '.join(RELEASED['fast'])}")
    p.add_argument("--tta", choices=TTA_VIEWS, default="flip", help="test-time views: none; flip (the face and its "
                   "mirror image); crops (flip x the five crops of a model trained on smaller crops: ten views)")
    p.add_argument("--no-tta", dest="tta", action="store_const", const="none", help="the same as --tta none")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="faces per forward pass")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0: PyTorch's default")
    return p.parse_args(argv)


def chosen_models(args: argparse.Namespace) -> list[str]:
    """The model files a run uses: --model's, else the released ensemble, or its pair with --fast."""
    return args.model or released("fast" if args.fast else "default")


fail = partial(utils.fail, "predict.py")  # one line on stderr, exit code 2


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = chosen_models(args)
    for m in models:
        problem = model_file_problem(m)
        if problem:
            fail(problem)
    problem = output_problem(args.pred_csv)
    if problem:
        fail(problem)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults on every batch's fresh tensors
    try:
        faces = read_faces(args.test_csv)
        probs = ensemble_proba(models, faces.images, tta=args.tta, batch_size=args.batch_size)
    except DataError as e:
        fail(str(e))
    write_submission(faces.ids, probs.argmax(1).numpy(), args.pred_csv)


if __name__ == "__main__":
    main()
