"""Train a FER2013 classifier with early stopping on a held-out split.

  python train.py <train.csv> [--preset cpu|fast|full|compact|mlp] [--out weights/trained.pt] [flags]
  torchrun --nproc_per_node=N train.py <train.csv> [flags]     one model, N processes (DistributedDataParallel)

Without --preset: `full` where CUDA is present, `cpu` otherwise. Writes the best epoch's model to --out,
its history to <out>.json, and, while running, the state to resume from to <out>.resume.pt (removed
once the run finishes). The training faces live on the training device as uint8 and every batch is
augmented there in one batched operation, so the same code feeds a CPU or a GPU. Under torchrun every
process holds all training faces and trains on its share of each global batch; rank 0 alone scores the
held-out faces and writes files.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from dataset import (
    CLASS_NAMES,
    DEFAULT_SPLIT,
    DataError,
    augment,
    centre_crop,
    epoch_batches,
    mix,
    pixel_stats,
    read_faces,
    train_val_split,
)
from model import (
    DEFAULT_VGG,
    STEMS,
    atomic_save,
    atomic_write,
    build_model,
    count_parameters,
    fp32_state,
    fuse_for_inference,
    git_commit,
    keep_freed_memory,
    load_checkpoint,
    make_checkpoint,
    output_problem,
    whiten_stem,
)
from predict import BATCH_SIZE, RELEASED_ENSEMBLE, ensemble_proba, predict_proba
from quantized import load_model

HERE = Path(__file__).resolve().parent
LR_BATCH = 128  # --lr is the peak rate for this batch size; other sizes scale it linearly (Goyal et al. 2017)
WHITEN_FACES = 2000  # millions of 3x3 patches: plenty for their 9x9 covariance, in a moment
RANK_STREAM = 2**32  # rank r draws its augmentation from seed + r * this: its own stream, rank 0 a lone run's

# Every setting once, with its reason. A preset overrides some of them; explicit flags override the preset.
HPARAMS = {
    "out": str(HERE / "weights" / "trained.pt"),  # the homework's own place for a trained model
    # optimisation: SGD + Nesterov with a one-cycle schedule, the classic recipe for BatchNorm CNNs
    "epochs": 60,  # the one-cycle schedule spans them; early stopping may end sooner
    "batch_size": 128,  # large enough for stable BatchNorm statistics, small enough for many steps
    "lr": 0.05,  # peak lr per LR_BATCH faces: the rate the released cpu-preset models trained at
    "momentum": 0.9,  # the usual; Nesterov look-ahead on top
    "weight_decay": 5e-4,  # VGG-scale nets overfit 26k faces quickly without it
    "norm_decay": True,  # the decay on BatchNorm's scales and shifts and on biases too, as the released models
    # trained; off: on conv and linear weights only (Goyal et al. 2017), whose scale the BatchNorm after them undoes
    "label_smoothing": 0.1,  # FER2013 labels are noisy (human agreement is about 65 %)
    "ema": 0.0,  # per-step decay of a moving average of the weights and BatchNorm statistics, which is then what is
    # scored, kept and released (0: off); it smooths the last, noisy steps of a short schedule
    "warmup": 0.2,  # fraction of steps spent raising the lr: BatchNorm statistics settle first
    "patience": 15,  # epochs without a better held-out accuracy before stopping
    "seed": 0,  # initialisation, batch order, augmentation and dropout
    # the held-out split, recorded in every checkpoint so that ensembles and teachers can be checked
    "split_method": DEFAULT_SPLIT["method"],
    "val_fraction": DEFAULT_SPLIT["val_fraction"],
    "split_seed": DEFAULT_SPLIT["seed"],
    # hardware
    "device": "auto",  # CUDA when present
    "bf16": "auto",  # bf16 autocast where the hardware does bf16 natively (CUDA, CPUs with avx512_bf16/AMX);
    # elsewhere it is emulated and several times slower than fp32
    "compile": False,  # torch.compile pays only when the epochs saved outweigh its start-up (history logs both)
    "deterministic": False,  # CUDA: bitwise-repeatable runs at some speed; CPU runs repeat exactly anyway
    # model: the default architecture of model.py
    "arch": DEFAULT_VGG["arch"],
    "channels": ",".join(map(str, DEFAULT_VGG["channels"])),
    "convs_per_stage": DEFAULT_VGG["convs_per_stage"],
    "hidden": DEFAULT_VGG["hidden"],
    "dropout": DEFAULT_VGG["dropout"],
    "stage_dropout": DEFAULT_VGG["stage_dropout"],
    "stem": "conv",  # the first learnt conv reads the face itself; whiten: airbench's fixed whitening in front
    "mlp_depth": 2,  # two hidden layers: one more than a linear model, few enough to train without skips
    # augmentation, per face: FER2013 faces are roughly aligned, so only small geometric changes keep labels
    "no_augment": False,  # on by default: 26k faces are few for millions of weights
    "crop": 0,  # train on random crops of this side (0: the whole 48-px face); predict on the centre crop or, with
    # --tta crops, the five crops: fewer pixels per face is fewer FLOPs per step
    "progressive": 0,  # with --crop: the views of the schedule's first half sampled on this many pixels a side,
    # rising to the crop's own by three quarters (progressive resizing): fewer FLOPs early, full resolution for the
    # anneal; the head still sees the same last map, so the side may shrink only while side // 2**stages holds; 0: off
    "rotate": 10.0,  # degrees
    "shift": 0.1,  # fraction of the side
    "scale": 0.1,  # relative zoom in or out
    "erase": 0.5,  # probability of one random black rectangle (occlusions: hands, glasses)
    "mixup": 0.0,  # Beta(alpha, alpha) mixing of faces and labels; 0: off (an ablation in bench/gpu_suite.sh)
    "cutmix": 0.0,  # likewise, pasting a box of another face; 0: off
    # distillation (Hinton et al. 2015)
    "teacher": "", "teacher_cache": "",
    "distill": "fixed",  # fixed: the teachers' flip-view predictions on each whole face, computed once (cheap);
    # consistent: their predictions on each step's own augmented view (Beyer et al. 2022), a teacher pass a step
    "distill_alpha": 0.8,  # mostly the teacher's soft targets: they carry what the noisy labels do not
    "temperature": 4.0,  # softens the targets enough to show the teacher's second choices
    "init": "",
}
PRESETS = {
    # A 2-core CPU: a narrower VGG on random 40-px crops, which cost no accuracy per epoch and buy more epochs an
    # hour and faster predictions; as many epochs as fit 150 min on a 2-core AVX-512 CPU, since accuracy still rose
    # from 80 to 150; patience for the long high-lr middle (docs/training.md has the runs; an AVX2 CPU takes longer).
    # The crops sampled at 32 px for the schedule's first half: its high-lr epochs learn coarse features as well
    # from fewer pixels, for about four fifths of the time (recipe round 9).
    "cpu": {"channels": "40,80,160,320", "crop": 40, "epochs": 150, "patience": 40, "progressive": 32},
    # One GPU, about a minute: the full-width VGG, batch 256 for fewer, fuller GPU steps (lr scales with it).
    "fast": {"epochs": 40, "batch_size": 256},
    # One GPU, a few minutes: the same network trained three times longer, since 300-epoch VGGs reach the
    # best published single-network figures on FER2013; more patience, since the long high-lr middle
    # of the schedule can plateau for a while before the anneal.
    "full": {"epochs": 120, "batch_size": 256, "patience": 40},
    # The compact model (weights/compact.q8, under 225,000 bytes as int8): a 196k-parameter MobileNet
    # distilled from the released cpu ensemble, so on that ensemble's (row-stratified) split. It still
    # underfits at 40 epochs (train accuracy below held-out), so it gets twice the cpu preset's.
    "compact": {"arch": "mobilenet", "channels": "36,72,144,288", "convs_per_stage": 2, "dropout": 0.2,
                "epochs": 80, "teacher": ",".join(RELEASED_ENSEMBLE), "split_method": "stratified"},
    # The MLP baseline on its own recipe: matched to the default VGG's parameter count (a test checks the
    # hidden width); no augmentation, which an MLP without weight sharing cannot exploit (short CPU trials,
    # runs/mlp_recipe/, lost a quarter of the accuracy with it); more dropout, as its first layer alone
    # holds millions of weights.
    "mlp": {"arch": "mlp", "hidden": 1527, "mlp_depth": 2, "dropout": 0.5, "lr": 0.02, "no_augment": True,
            "epochs": 60, "batch_size": 256},
}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: tensor cores on CUDA, avx512_bf16 or AMX through oneDNN on a CPU."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def start_processes(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun with several processes, join the process group: NCCL on
    CUDA, one GPU per process (LOCAL_RANK), gloo on CPU. Otherwise (0, 1, the --device), as ever."""
    device, world = pick_device(device_flag), int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def from_rank0(make):
    """make() run on rank 0 alone and its result sent to every process: the files it reads (a resume file,
    a teacher cache) live on rank 0's machine, and held-out scores must be the same everywhere."""
    if not dist.is_initialized():
        return make()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave_processes() -> None:
    """Leave the process group once every rank has finished its last collective. The ranks meet in the
    rendezvous store, not in a gloo barrier: a rank that tears gloo down straight after a barrier can abort
    its peer, whose side of that barrier is still in flight (pytorch/gloo#155)."""
    store, rank = dist.distributed_c10d._get_default_store(), dist.get_rank()
    store.set(f"left/{rank}", "1")
    store.wait([f"left/{peer}" for peer in range(dist.get_world_size())])
    dist.destroy_process_group()


def default_preset(device: str) -> str:
    """The preset of a run that names none: full on a GPU, the narrower, shorter cpu recipe anywhere else."""
    return "full" if pick_device(device).type == "cuda" else "cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a FER2013 expression classifier.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("train_csv", help="training CSV: label,feature or the challenge's fer2013.csv (plain, or compressed "
                   "as csv_gzip.py reads, where present)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (default: full with CUDA, else cpu); "
                   "other flags still override it")
    p.add_argument("--out", help="where the best model goes; its history goes to <out>.json")
    p.add_argument("--resume", action="store_true", help="continue the killed run that wrote <out>.resume.pt")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="epoch limit (the one-cycle schedule spans it)")
    g.add_argument("--batch-size", type=int, help="faces per step and process; under torchrun the global batch "
                   "is this times the number of processes")
    g.add_argument("--lr", type=float, help=f"peak learning rate for a batch of {LR_BATCH}; the run uses "
                   f"lr * global batch / {LR_BATCH} (SGD, Nesterov, one-cycle)")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--norm-decay", action=argparse.BooleanOptionalAction, help="weight decay on BatchNorm's "
                   "scales and shifts and on biases too; --no-norm-decay: on conv and linear weights only")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--ema", type=float, help="decay of a per-step exponential moving average of the weights; the "
                   "average is scored and kept (0: off; 0.999 averages about the last 1,000 steps)")
    g.add_argument("--warmup", type=float, help="fraction of the steps spent raising the learning rate")
    g.add_argument("--patience", type=int, help="stop after this many epochs without a better val accuracy")
    g.add_argument("--seed", type=int, help="seeds the initialisation, the shuffling and the augmentation")
    g.add_argument("--class-weighted", action="store_true", help="weight the loss by inverse class frequency")
    g.add_argument("--init", help="start from this checkpoint's weights (same architecture and split), e.g. for "
                   "a second, lower learning-rate cycle")
    g = p.add_argument_group("held-out split (files without a Usage column)")
    g.add_argument("--split-method", choices=["grouped", "stratified"], help="grouped: stratified by whole groups "
                   "of identical faces, so no held-out face has a copy in training; stratified: by rows, the "
                   "first releases' split")
    g.add_argument("--val-fraction", type=float, help="held-out fraction of each class")
    g.add_argument("--split-seed", type=int, help="seeds the held-out split; keep it fixed to compare or ensemble")
    g = p.add_argument_group("distillation (Hinton et al. 2015)")
    g.add_argument("--teacher", help="comma-separated model files whose averaged predictions the model learns "
                   "from; they must not have seen this run's held-out split")
    g.add_argument("--distill", choices=["fixed", "consistent"], help="fixed: the teachers' predictions on each "
                   "whole face, computed once; consistent: on exactly the augmented view the student sees, every "
                   "step (a teacher pass a step, nothing cached)")
    g.add_argument("--teacher-cache", help="where the teacher's logits are kept between runs; default <out>.teacher.pt")
    g.add_argument("--distill-alpha", type=float, help="weight of the teacher's soft targets; 1 - it: the labels'")
    g.add_argument("--temperature", type=float, help="softening temperature of student and teacher")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    g.add_argument("--bf16", choices=["auto", "on", "off"], help="bf16 autocast; auto: on where the hardware has "
                   "native bf16 (CUDA; CPUs with avx512_bf16 or AMX)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the training step")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, help="CUDA: deterministic kernels "
                   "only (no cuDNN autotuning), so that a seed repeats its history and --resume its run bit for bit")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=["vgg", "resnet", "mobilenet", "mlp"])
    g.add_argument("--channels", help="VGG, ResNet, MobileNet: comma-separated widths, one per stage")
    g.add_argument("--convs-per-stage", type=int,
                   help="VGG: 3x3 convolutions per stage; ResNet: residual blocks; MobileNet: separable blocks")
    g.add_argument("--hidden", type=int, help="width of the hidden layer(s) of the head / the MLP")
    g.add_argument("--mlp-depth", type=int, help="MLP: number of hidden layers")
    g.add_argument("--dropout", type=float, help="dropout before the classifier layers")
    g.add_argument("--stage-dropout", type=float, help="VGG: dropout after each pooling")
    g.add_argument("--stem", choices=STEMS, help="VGG, ResNet: conv: the first conv reads the face; "
                   "whiten: a fixed conv whitening 3x3 patches (both signs) in front of it, set from the training "
                   "faces (airbench)")
    g.add_argument("--no-normalize", action="store_true", help="skip mean/std normalisation (ablation)")
    g = p.add_argument_group("augmentation (random per face, training only, batched on the training device)")
    g.add_argument("--no-augment", action="store_true", help="train on the faces as they are (ablation)")
    g.add_argument("--augment", dest="no_augment", action="store_false", help="augment where the preset does not")
    g.add_argument("--crop", type=int, help="train on random crops of this side, predict on the centre one "
                   "(0: the whole face)")
    g.add_argument("--progressive", type=int, help="with --crop: train the first half of the schedule on the crops "
                   "sampled at this many pixels a side, rising to the crop's own by three quarters (0: off)")
    g.add_argument("--rotate", type=float, help="max rotation, degrees")
    g.add_argument("--shift", type=float, help="max translation, fraction of the side")
    g.add_argument("--scale", type=float, help="max relative zoom in or out")
    g.add_argument("--erase", type=float, help="probability of random erasing")
    g.add_argument("--mixup", type=float, help="mixup Beta alpha (0: off)")
    g.add_argument("--cutmix", type=float, help="CutMix Beta alpha (0: off); with mixup too, one of them per batch")
    pre, _ = p.parse_known_args(argv)
    preset = pre.preset or default_preset(pre.device or HPARAMS["device"])
    p.set_defaults(**{**HPARAMS, **PRESETS[preset]}, preset=preset, preset_chosen=pre.preset is None)
    args = p.parse_args(argv)
    # a preset's progressive resizing belongs to its own crop and net: off, unless asked for, where they differ
    asked = p.parse_args(argv, argparse.Namespace(progressive=None)).progressive is not None
    args.preset_progressive_off = bool(not asked and args.progressive and (
        args.crop != PRESETS[preset].get("crop") or progressive_problem(args)))
    if args.preset_progressive_off:
        args.progressive = 0
    return args


def model_config(args: argparse.Namespace, mean: float, std: float) -> dict:
    if args.no_normalize:
        mean, std = 0.0, 1.0
    side = {"side": args.crop} if args.crop else {}  # (whole-face models keep the config they always had)
    if args.arch == "mlp":
        return {"arch": "mlp", "hidden": args.hidden, "depth": args.mlp_depth, "dropout": args.dropout,
                "mean": mean, "std": std, **side}
    channels = [int(c) for c in args.channels.split(",")]
    if args.arch == "mobilenet":
        return {"arch": "mobilenet", "channels": channels, "blocks_per_stage": args.convs_per_stage,
                "dropout": args.dropout, "mean": mean, "std": std, **side}
    depth = "convs_per_stage" if args.arch == "vgg" else "blocks_per_stage"  # a ResNet's stages hold blocks
    stem = {"stem": args.stem} if args.stem != "conv" else {}  # (likewise)
    return {"arch": args.arch, "channels": channels, depth: args.convs_per_stage, "hidden": args.hidden,
            "dropout": args.dropout, "stage_dropout": args.stage_dropout, "mean": mean, "std": std, **side, **stem}


def write_json(obj: object, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             tta: bool | str = False) -> tuple[float, float]:
    """(cross-entropy, accuracy) on held-out faces, in fp32 as predict.py runs: the epoch chosen and
    the figure logged are those of the model as it will be used."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    probs = predict_proba(model, images, batch_size=1024 if on_gpu else BATCH_SIZE, tta=tta)  # CPU: predict's
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return loss, (probs.argmax(1) == labels).float().mean().item()


TEACHER_VIEWS = "flip"  # as chosen on held-out for --best: five crops did no better for crop-trained members


def teacher_logits(paths: list[str], images: torch.Tensor, train_csv: str, cache: Path,
                   models: list[nn.Module] | None = None) -> torch.Tensor:
    """Log of the teachers' averaged probabilities over their TEACHER_VIEWS for every face of the file,
    computed once and kept in cache; the cache is used only when it was made from the same teacher files
    and data file. models: those files already loaded for inference, so they are not read again."""
    key = {"teachers": [(str(p), Path(p).stat().st_size) for p in paths],
           "train_csv": (str(train_csv), Path(train_csv).stat().st_size), "n": len(images), "views": TEACHER_VIEWS}
    if cache.exists():
        cached = torch.load(cache, map_location="cpu", weights_only=True)
        if cached.get("key") == key:
            return cached["logits"]
    print(f"computing the teacher's logits for {len(images)} faces ({', '.join(paths)})", flush=True)
    logits = ensemble_proba(models or paths, images, tta=TEACHER_VIEWS).clamp_min(1e-8).log()
    atomic_save({"key": key, "logits": logits}, cache)
    return logits


@torch.no_grad()
def consistent_targets(teachers: list[nn.Module], x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Log of the teachers' averaged probabilities on exactly this step's augmented faces, each teacher
    on their middle at its own input side: the student then matches the teachers' function wherever the
    augmentation takes it, rather than targets fixed in advance (Beyer et al. 2022)."""
    probs = torch.zeros(len(x), len(CLASS_NAMES), device=x.device)
    for teacher in teachers:
        view = centre_crop(x, teacher.side).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            probs += teacher(view).float().softmax(1)
    return (probs / len(teachers)).clamp_min(1e-8).log()


def decay_groups(model: nn.Module, norm_decay: bool) -> list[dict]:
    """The optimiser's parameter groups: one, decayed alike, or (norm_decay False) the conv and linear weights
    apart from the BatchNorm scales and shifts and the biases, which get no weight decay."""
    if norm_decay:
        return [{"params": list(model.parameters())}]
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """n / (classes * n_c): every class carries the same total weight in the loss."""
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES)).float()
    return counts.sum() / (len(CLASS_NAMES) * counts.clamp_min(1))


def make_loss(criterion: nn.Module, alpha: float, temperature: float):
    """The batch loss: cross-entropy on the labels, mixed with KL divergence to the teacher's softened
    distribution when the batch carries teacher logits (T^2 keeps its gradients on the labels' scale)."""
    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        hard = criterion(logits, labels)
        if teacher is None:
            return hard
        student = nn.functional.log_softmax(logits / temperature, 1)
        target = nn.functional.log_softmax(teacher / temperature, 1)
        soft = nn.functional.kl_div(student, target, log_target=True, reduction="batchmean") * temperature**2
        return alpha * soft + (1 - alpha) * hard
    return loss_fn


def epoch_seed(seed: int, epoch: int) -> int:
    """Every random draw of an epoch comes from this: a resumed run repeats the uninterrupted run's epochs."""
    return seed * 100_003 + epoch


PROGRESSIVE_HOLD, PROGRESSIVE_FULL = 0.5, 0.75  # --progressive: its fewest pixels until half the schedule, the
# crop's own from three quarters on, so that the anneal, where a one-cycle run gains most, sees what predict.py sees


def progressive_pixels(args: argparse.Namespace, epoch: int) -> int | None:
    """The side of this epoch's training views in pixels under --progressive (None: the crop's own)."""
    if not args.progressive:
        return None
    ramp = (epoch / args.epochs - PROGRESSIVE_HOLD) / (PROGRESSIVE_FULL - PROGRESSIVE_HOLD)
    return round(args.progressive + (args.crop - args.progressive) * min(max(ramp, 0.0), 1.0))


def progressive_problem(args: argparse.Namespace) -> str | None:
    """Why --progressive cannot run with these flags, if it cannot."""
    if not args.progressive:
        return None
    if not args.crop or args.arch == "mlp" or (args.teacher and args.distill == "consistent"):
        return "--progressive: needs --crop and a convolutional net, without watching teachers"
    stride = 2 ** len(args.channels.split(","))  # the net's max-pools: the head reads side // stride a side
    if args.progressive >= args.crop or args.progressive // stride != args.crop // stride:
        return (f"--progressive {args.progressive}: the last map would differ from the {args.crop}-px crop's "
                f"{args.crop // stride}x{args.crop // stride}; give a side from {args.crop // stride * stride} to "
                f"{args.crop - 1}")
    return None


def train_one_epoch(model: nn.Module, step_model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    teacher: torch.Tensor | None, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn, args: argparse.Namespace,
                    bf16: bool, epoch: int, rank: int = 0, world: int = 1, ema: AveragedModel | None = None,
                    teachers: list[nn.Module] | None = None) -> dict:
    """One pass over the device-resident uint8 faces; step_model is model itself, or its DDP or compiled
    form. Under torchrun each rank takes its slice of every global batch of one shared permutation.
    teacher: fixed soft targets, one row per face; teachers: models that watch every step's view instead."""
    model.train()
    device = images.device
    start = time.time()
    generator = torch.Generator(device).manual_seed(epoch_seed(args.seed, epoch))  # batch order: alike on all ranks
    batches = [idx[rank * args.batch_size:(rank + 1) * args.batch_size]  # this rank's share of each global batch
               for idx in epoch_batches(len(images), args.batch_size * world, generator)]
    stream = epoch_seed(args.seed, epoch) + rank * RANK_STREAM  # augmentation, mixup and dropout: per rank
    if rank:
        generator.manual_seed(stream)
    host_rng = np.random.default_rng(stream)  # mixup's lam and CutMix's box: host numbers
    torch.manual_seed(stream)  # dropout (the global generators, CUDA's too)
    # Sums stay on the device: a .item() per step would make the CPU wait for the GPU every batch.
    total_loss, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    pixels = progressive_pixels(args, epoch)
    for idx in tqdm(batches, desc=f"epoch {epoch}/{args.epochs}", leave=False, disable=None if rank == 0 else True,
                    dynamic_ncols=True):
        # the batch: gathered, scaled and augmented on the device, in one operation for all faces
        # (with watching teachers the view stays whole: each of them, and the student, takes its own middle)
        x = images[idx].float().div_(255)
        side = None if teachers else args.crop or None
        if not args.no_augment:
            x = augment(x, generator, args.rotate, args.shift, args.scale, args.erase, out_side=side, pixels=pixels)
        elif side:
            x = centre_crop(x, side)
            if pixels:  # the same sample points as augment's grid would take
                x = nn.functional.interpolate(x, size=(pixels, pixels), mode="bilinear", align_corners=False)
        x, partner, lam = mix(x, generator, host_rng, args.mixup, args.cutmix)
        y, t = labels[idx], None if teacher is None else teacher[idx]
        if teachers:  # consistent distillation: the targets of exactly these (mixed) faces
            t = consistent_targets(teachers, x, bf16)
            x = centre_crop(x, args.crop) if args.crop else x
        x = x.contiguous(memory_format=torch.channels_last)  # the layout oneDNN and cuDNN convolve fastest in
        # forward under autocast; the loss in fp32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = step_model(x).float()
        loss = loss_fn(logits, y, t)
        if partner is not None:  # mixed faces: the loss against both faces' targets, weighted by lam
            partner_t = t if teachers or t is None else t[partner]  # watching teachers saw the mixed face itself
            loss = lam * loss + (1 - lam) * loss_fn(logits, y[partner], partner_t)
        # the update (under DDP, backward also averages the gradients over the ranks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.detach()
        correct += (logits.argmax(1) == y).sum()
    totals = torch.stack([total_loss, correct])
    if world > 1:  # the epoch's figures over all ranks
        dist.all_reduce(totals)
    steps = len(batches) * world
    result = {"train_loss": totals[0].item() / steps, "train_acc": totals[1].item() / (steps * args.batch_size),
              "train_seconds": time.time() - start}  # (after .item(): the device has finished the epoch)
    if pixels:
        result["train_pixels"] = pixels
    if world > 1:  # a check, logged: how many faces the ranks saw, and how many more than once
        seen = torch.bincount(torch.cat(batches), minlength=len(images))
        dist.all_reduce(seen)
        result.update(faces_seen=int((seen > 0).sum()), faces_seen_twice=int((seen > 1).sum()))
    return result


def fail(message: str) -> None:
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    start_time = time.time()
    args = parse_args(argv)
    rank, world, device = start_processes(args.device)  # (0, 1, --device) unless under torchrun
    say = print if rank == 0 else lambda *_, **__: None  # one process speaks for all
    say(f"preset: {args.preset}" + (" (no --preset given: full with CUDA, else cpu; --preset to choose)"
                                    if args.preset_chosen else "")
        + (f"; its --progressive {PRESETS[args.preset]['progressive']} is off with these flags"
           if args.preset_progressive_off else ""), flush=True)

    # outputs (rank 0's): check before any work, and resume the recipe of a killed run
    out = Path(args.out)
    resume_path, history_path = out.with_suffix(".resume.pt"), out.with_suffix(".json")
    if rank == 0:
        if args.resume and not resume_path.exists():
            fail(f"--resume: {resume_path} does not exist")
        if out.exists() and not out.is_dir() and not (args.resume or args.force):
            fail(f"{out} exists: pass --force to overwrite it, --resume to continue its run, or another --out")
        problem = output_problem(out, make_folders=True)
        if problem:
            fail(problem)
    resume = from_rank0(lambda: torch.load(resume_path, map_location="cpu", weights_only=True) if args.resume
                        else None)
    if resume is not None and resume.get("world_size", 1) != world:  # its schedule counted that many shards
        fail(f"--resume: {resume_path} was written by {resume.get('world_size', 1)} process(es), this run has {world}")
    if resume is not None:  # a resumed run keeps its own recipe; only the hardware flags are taken anew
        kept = {k: v for k, v in resume["args"].items() if k not in ("device", "resume", "force")}
        args = argparse.Namespace(**{**vars(args), **kept})

    # numerics
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16(device))
    if args.deterministic and device.type == "cuda":  # (process-wide settings: CPU kernels need none)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        torch.use_deterministic_algorithms(True, warn_only=True)  # an op without such a kernel warns
    # fixed batch shapes: cuDNN times its algorithms once and keeps the fastest, which may vary run to run
    torch.backends.cudnn.benchmark = not args.deterministic
    keep_freed_memory()  # each step's CPU tensors reuse the last step's memory instead of faulting in fresh pages
    torch.manual_seed(args.seed)

    # data: the split, the training split's pixel statistics, and the uint8 faces moved to the device once
    try:
        faces = read_faces(args.train_csv, require_labels=True)
    except DataError as e:
        fail(str(e))
    train_idx, val_idx, split = train_val_split(faces, args.val_fraction, args.split_seed, args.split_method)
    mean, std = pixel_stats(faces.images[train_idx])
    train_images, train_labels = faces.images[train_idx].to(device), faces.labels[train_idx].to(device)
    val_images, val_labels = faces.images[val_idx], faces.labels[val_idx]
    global_batch = args.batch_size * world
    if len(train_idx) < global_batch:
        fail(f"{args.train_csv}: {len(train_idx)} training rows, fewer than one batch of {global_batch}")

    # the model, from scratch or from --init
    if args.stem != "conv" and args.arch not in ("vgg", "resnet"):
        fail(f"--stem {args.stem}: a VGG or ResNet stem, not {args.arch}'s")
    problem = progressive_problem(args)
    if problem:
        fail(problem)
    config = model_config(args, mean, std)
    model = build_model(config).to(device).to(memory_format=torch.channels_last)
    if args.stem == "whiten":  # (--init and --resume then load the stem the run started with)
        whiten_stem(model, train_images[:WHITEN_FACES].float().div(255))
    n_params = count_parameters(model)
    if args.init and resume is None:
        try:
            initial = load_checkpoint(args.init)
        except (ValueError, OSError) as e:
            fail(str(e))
        shape = {k: v for k, v in config.items() if k not in ("mean", "std")}  # pixel stats vary in the last bits
        if {k: initial["config"].get(k) for k in shape} != shape or initial.get("split") != split:
            fail(f"--init {args.init}: another architecture or split than this run's")
        model.load_state_dict(fp32_state(initial["state_dict"]))

    # the teachers: their soft targets computed once per teacher and data file, or the models themselves
    def load_teachers() -> list[nn.Module]:
        try:
            loaded = [load_model(path) for path in args.teacher.split(",")]
        except (ValueError, OSError) as e:
            fail(str(e))
        for path, (_, header) in zip(args.teacher.split(","), loaded, strict=True):
            if header.get("split") != split:  # its soft targets would leak our held-out faces
                fail(f"{path}: the teacher was trained on another split than this run's {split}")
        return [fuse_for_inference(m).eval().to(memory_format=torch.channels_last) for m, _ in loaded]

    def load_teacher_targets() -> torch.Tensor:
        models = load_teachers()  # the split check reads them; the targets, if not cached, come from them
        try:
            cache = Path(args.teacher_cache or out.with_suffix(".teacher.pt"))
            return teacher_logits(args.teacher.split(","), faces.images, args.train_csv, cache, models)[train_idx]
        except (DataError, ValueError, OSError) as e:
            fail(str(e))

    consistent = args.teacher and args.distill == "consistent"
    teacher = from_rank0(load_teacher_targets).to(device) if args.teacher and not consistent else None
    teachers = [m.to(device) for m in from_rank0(load_teachers)] if consistent else None

    # optimiser, schedule and loss; the lr follows the global batch (the gradient DDP averages over it)
    steps_per_epoch = len(train_idx) // global_batch
    peak_lr = args.lr * global_batch / LR_BATCH
    optimizer = torch.optim.SGD(decay_groups(model, args.norm_decay), lr=peak_lr, momentum=args.momentum,
                                nesterov=True, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak_lr, pct_start=args.warmup,
                                                    total_steps=args.epochs * steps_per_epoch)
    weights = class_weights(train_labels.cpu()).to(device) if args.class_weighted else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=args.label_smoothing)
    loss_fn = make_loss(criterion, args.distill_alpha, args.temperature)
    # several processes: DDP averages the gradients in backward, and on CUDA the BatchNorm statistics are
    # those of the global batch (SyncBatchNorm has no CPU kernels: gloo runs keep per-rank batch statistics,
    # and DDP gives every rank rank 0's running ones)
    step_model = model
    if world > 1:
        if device.type == "cuda":
            model = step_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        step_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    # compiled once; the eager module shares its weights and scores the held-out faces without recompiling
    step_model = torch.compile(step_model) if args.compile else step_model
    # the moving average of the weights (and BatchNorm's statistics), when asked for: scored and kept instead
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True) if args.ema else None
    scored = ema.module if ema is not None else model

    # where the run stands: fresh, or the state a killed run saved after its last finished epoch
    state = {"epoch": 0, "best_val_acc": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "elapsed": 0.0}
    if resume is not None:
        model.load_state_dict(resume["model"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        state = resume["state"]
        say(f"resuming {resume_path} after epoch {state['epoch']}", flush=True)
    run_info = {"train_csv": str(args.train_csv), "split": split, "n_train": len(train_idx), "n_val": len(val_idx),
                "params": n_params, "device": str(device), "device_name": device_name(device), "bf16": bf16,
                "compile": args.compile, "world_size": world, "peak_lr": peak_lr, "torch": torch.__version__,
                "git_commit": git_commit(), "args": dict(vars(args))}
    say(f"{config['arch']} {n_params:,} parameters on {run_info['device_name']}{' (bf16 autocast)' if bf16 else ''}"
        f"{', compiled' if args.compile else ''}{f', {world} processes' if world > 1 else ''}; {len(train_idx)} "
        f"train / {len(val_idx)} val faces ({split['method']} split); batch {global_batch}, peak lr {peak_lr:g}"
        f"{f'; {len(teachers)} teachers watch every step' if teachers else ''}", flush=True)

    def save_best() -> None:
        atomic_save(make_checkpoint(scored, config, class_names=list(CLASS_NAMES), split=split,
                                    train_args=run_info["args"], git_commit=run_info["git_commit"],
                                    epoch=state["best_epoch"], val_acc=state["best_val_acc"]), out)

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        # one epoch of training, then the held-out score in fp32, rank 0's for every rank
        t0 = time.time()
        figures = train_one_epoch(model, step_model, train_images, train_labels, teacher, optimizer, scheduler,
                                  loss_fn, args, bf16, epoch, rank, world, ema, teachers)
        val_loss, val_acc = from_rank0(lambda: evaluate(scored, val_images, val_labels))
        seconds = time.time() - t0
        lr = scheduler.get_last_lr()[0]
        faces_per_second = steps_per_epoch * global_batch / figures.pop("train_seconds")  # training alone
        state["history"].append({"epoch": epoch, **figures, "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                                 "seconds": seconds, "train_faces_per_s": faces_per_second})
        state["epoch"], state["elapsed"] = epoch, state["elapsed"] + seconds
        # keep the best epoch's model (early stopping's checkpoint); every rank decides alike from the same scores
        improved = val_acc > state["best_val_acc"]
        if improved:
            state["best_val_acc"], state["best_epoch"], state["bad_epochs"] = val_acc, epoch, 0
            if rank == 0:
                save_best()
        else:
            state["bad_epochs"] += 1
        say(f"epoch {epoch:3d}/{args.epochs}  train loss {figures['train_loss']:.4f} acc {figures['train_acc']:.4f}  "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.5f}  {faces_per_second:5.0f} faces/s  {seconds:5.1f}s"
            f"{'  *' if improved else ''}",
            flush=True)
        # what a killed run resumes from, and the history so far
        if rank == 0:
            atomic_save({"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                         "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "state": state, "args": vars(args),
                         "world_size": world}, resume_path)
            write_json({**run_info, **state, "finished": False}, history_path)
        if state["bad_epochs"] >= args.patience:
            say(f"early stop: no better val accuracy for {args.patience} epochs", flush=True)
            break

    result = {**run_info, **state, "finished": True, "stopped_early": state["epoch"] < args.epochs,
              "last_val_acc": state["history"][-1]["val_acc"], **epoch_timing(state["history"])}
    if world > 1:
        leave_processes()
    if rank > 0:
        return result
    # the best epoch's model, scored again with flip test-time augmentation, and a crop-trained one with all ten views
    best = load_checkpoint(out)
    scored.load_state_dict(best["state_dict"])
    _, val_acc_tta = evaluate(scored, val_images, val_labels, tta="flip")
    crops = {"val_acc_crops": evaluate(scored, val_images, val_labels, tta="crops")[1]} if args.crop else {}
    best.update(val_acc_tta=val_acc_tta, **crops)
    atomic_save(best, out)
    result.update(best_val_acc_tta=val_acc_tta, **{f"best_{k}": v for k, v in crops.items()},
                  wall_seconds=time.time() - start_time)
    write_json(result, history_path)
    resume_path.unlink(missing_ok=True)
    ten = f", ten crops {crops['val_acc_crops']:.4f}" if crops else ""
    say(f"best epoch {state['best_epoch']}: val acc {state['best_val_acc']:.4f}, with flip TTA {val_acc_tta:.4f}{ten}; "
        f"saved {out} ({time.time() - start_time:.0f}s)", flush=True)
    return result


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def epoch_timing(history: list[dict]) -> dict:
    """Steady epoch seconds (median after the first) and the first epoch's excess over them: the one-off
    cost of torch.compile, cuDNN's algorithm search and warm-up, to weigh against the per-epoch gain."""
    if len(history) < 2:
        return {}
    steady = statistics.median(h["seconds"] for h in history[1:])
    return {"steady_epoch_seconds": steady, "first_epoch_extra_seconds": history[0]["seconds"] - steady}


if __name__ == "__main__":
    main()
