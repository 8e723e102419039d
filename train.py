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
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import utils
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
    build_model,
    count_parameters,
    fp32_state,
    fuse_for_inference,
    load_checkpoint,
    make_checkpoint,
    whiten_stem,
)
from predict import BATCH_SIZE, ensemble_proba, predict_proba, released
from quantized import load_model
from utils import atomic_write, git_commit, keep_freed_memory, output_problem

HERE = Path(__file__).resolve().parent
LR_BATCH = 128  # --lr is the peak rate for this batch size; other sizes scale it linearly (Goyal et al. 2017)
WHITEN_FACES = 2000  # millions of 3x3 patches: plenty for their 9x9 covariance, in a moment
RANK_STREAM = 2**32  # rank r draws its augmentation from seed + r * this: its own stream, rank 0 a lone run's
TEACHER_VIEWS = "flip"  # the fixed targets' views: those predict.py scores with by default
PROGRESSIVE_HOLD, PROGRESSIVE_FULL = 0.5, 0.75  # --progressive: its fewest pixels until half the schedule, the
# crop's own from three quarters on, so that the anneal, where a one-cycle run gains most, sees what predict.py sees

# Every setting once: name -> (default, reason[, choices]). The command line is derived from it (build_parser);
# a preset overrides some defaults, and a flag given explicitly overrides the preset.
SETTINGS = {
    "output": {
        "out": (str(HERE / "weights" / "trained.pt"), "where the best epoch's model goes; its history: <out>.json"),
    },
    "optimisation: SGD with Nesterov momentum under a one-cycle schedule, the classic recipe for BatchNorm CNNs": {
        "epochs": (60, "epoch limit: the one-cycle schedule spans them; early stopping may end sooner"),
        "batch_size": (128, "faces per step and process (under torchrun the global batch is this times the "
                       "processes): enough for stable BatchNorm statistics, small enough for many steps"),
        "lr": (0.05, f"peak learning rate per {LR_BATCH} faces; the run uses lr * global batch / {LR_BATCH}"),
        "momentum": (0.9, "SGD momentum, with Nesterov's look-ahead: the usual"),
        "weight_decay": (5e-4, "L2 penalty: VGG-scale nets overfit 26k faces quickly without it"),
        "norm_decay": (True, "decay BatchNorm's scales and shifts and the biases too; off: the conv and linear "
                       "weights only, whose scale the BatchNorm after them undoes"),
        "label_smoothing": (0.1, "FER2013's labels are noisy (human agreement is about 65 %)"),
        "warmup": (0.2, "fraction of the steps spent raising the lr, so that BatchNorm's statistics settle first"),
        "patience": (15, "stop after this many epochs without a better held-out accuracy"),
        "seed": (0, "seeds the initialisation, the batch order, the augmentation and dropout"),
        "class_weighted": (False, "weight the loss by inverse class frequency, so rare classes count as much"),
        "init": ("", "start from this checkpoint's weights (same architecture and split), e.g. for a second, "
                 "lower-lr cycle"),
    },
    "held-out split (files without a Usage column), recorded in every checkpoint to check ensembles and teachers": {
        "split_method": (DEFAULT_SPLIT["method"], "grouped: by whole groups of identical faces, so no held-out "
                         "face has a copy in training; stratified: by rows, the first releases' split",
                         ("grouped", "stratified")),
        "val_fraction": (DEFAULT_SPLIT["val_fraction"], "held-out fraction of each class"),
        "split_seed": (DEFAULT_SPLIT["seed"], "seeds the split; keep it fixed to compare or ensemble models"),
    },
    "hardware": {
        "device": ("auto", "auto (CUDA when present), cpu, cuda, cuda:1 ..."),
        "bf16": ("auto", "bf16 autocast; auto: where the hardware does it natively (CUDA, CPUs with avx512_bf16 or "
                 "AMX), since elsewhere it is emulated and slower than fp32", ("auto", "on", "off")),
        "deterministic": (False, "CUDA: deterministic kernels only (no cuDNN autotuning), so that a seed repeats "
                          "its run bit for bit, as CPU runs always do"),
    },
    "model: model.py's VGG by default": {
        "arch": (DEFAULT_VGG["arch"], "resnet: ResNet-9-shaped; mobilenet: depthwise-separable, small enough for "
                 "the compact file; mlp: the baseline", ("vgg", "resnet", "mobilenet", "mlp")),
        "channels": (",".join(map(str, DEFAULT_VGG["channels"])), "VGG, ResNet, MobileNet: widths, one per stage"),
        "convs_per_stage": (DEFAULT_VGG["convs_per_stage"], "VGG: 3x3 convolutions per stage; ResNet: residual "
                            "blocks; MobileNet: separable blocks"),
        "hidden": (DEFAULT_VGG["hidden"], "width of the head's hidden layer, or of the MLP's"),
        "mlp_depth": (2, "MLP: hidden layers, one more than a linear model, few enough to train without skips"),
        "dropout": (DEFAULT_VGG["dropout"], "dropout before the classifier layers"),
        "stage_dropout": (DEFAULT_VGG["stage_dropout"], "VGG: dropout after each pooling"),
        "stem": ("conv", "VGG, ResNet: conv: the first learnt conv reads the face; whiten: a fixed conv in front "
                 "of it whitens 3x3 patches (both signs), set from the training faces (airbench)", STEMS),
        "no_normalize": (False, "skip the training split's mean/std normalisation (an ablation)"),
    },
    "augmentation, random per face, batched on the device; faces are roughly aligned: small changes keep labels": {
        "no_augment": (False, "train on the faces as they are (an ablation: 26k faces are few for millions of "
                       "weights)"),
        "crop": (0, "train on random crops of this side, predict on the centre one (or five, predict.py --tta "
                 "crops): fewer FLOPs per step; 0: the whole face"),
        "progressive": (0, "with --crop: the schedule's first half samples the crops at this many pixels a side, "
                        "rising to the crop's own by three quarters: fewer FLOPs early, full resolution for the "
                        "anneal; 0: off"),
        "rotate": (10.0, "max rotation, degrees"),
        "shift": (0.1, "max translation, fraction of the side"),
        "scale": (0.1, "max relative zoom in or out"),
        "erase": (0.5, "probability of one random black rectangle, as hands or glasses hide parts of faces"),
        "mixup": (0.0, "mixup's Beta(a, a): faces and labels mixed, a regulariser the GPU ablations try; 0: off"),
        "cutmix": (0.0, "CutMix's Beta(a, a): a box of another face pasted in; with mixup, one of them per batch; "
                   "0: off"),
    },
    "distillation (Hinton et al. 2015): the teachers' soft targets carry what the noisy labels do not": {
        "teacher": ("", "comma-separated model files whose averaged predictions the model learns from; they "
                    "must have been trained on this run's split"),
        "distill": ("fixed", "fixed: the teachers' flip-view predictions on each whole face, computed once "
                    "(cheap); consistent: on each step's own augmented view (Beyer et al. 2022), a teacher pass "
                    "a step", ("fixed", "consistent")),
        "teacher_cache": ("", "where the fixed targets are kept between runs (empty: <out>.teacher.pt)"),
        "distill_alpha": (0.8, "weight of the teachers' soft targets, the labels' being 1 - it"),
        "temperature": (4.0, "softens student and teachers enough to show the teachers' second choices"),
    },
}
HPARAMS = {name: spec[0] for group in SETTINGS.values() for name, spec in group.items()}  # every default, by name
PRESETS = {
    # A 2-core CPU: a narrower VGG on random 40-px crops, for more epochs an hour and faster predictions at the
    # same accuracy per epoch, the crops sampled at 32 px in the schedule's high-lr first half; as many epochs as
    # fit about 150 minutes, with patience for the long high-lr middle (docs/training.md).
    "cpu": {"channels": "40,80,160,320", "crop": 40, "epochs": 150, "patience": 40, "progressive": 32},
    # One GPU, about a minute: the full-width VGG, batch 256 for fewer, fuller GPU steps (lr scales with it).
    "fast": {"epochs": 40, "batch_size": 256},
    # One GPU, a few minutes: the same network three times longer, since long VGG schedules reach the best
    # published single-network figures on FER2013; patience for the long high-lr middle of the schedule.
    "full": {"epochs": 120, "batch_size": 256, "patience": 40},
    # The compact model (weights/compact.q8, under 225,000 bytes as int8): a small MobileNet distilled from the
    # released ensemble, on its split, for twice the fast preset's epochs, as so small a net underfits.
    "compact": {"arch": "mobilenet", "channels": "36,72,144,288", "convs_per_stage": 2, "dropout": 0.2,
                "epochs": 80, "teacher": ",".join(released("default"))},
    # The MLP baseline on its own recipe: matched to the default VGG's parameter count (a test checks the
    # hidden width); no augmentation, which an MLP without weight sharing cannot exploit (research/mlp_recipe/);
    # more dropout, as its first layer alone holds millions of weights.
    "mlp": {"arch": "mlp", "hidden": 1527, "mlp_depth": 2, "dropout": 0.5, "lr": 0.02, "no_augment": True,
            "epochs": 60, "batch_size": 256},
}


class Switch(argparse.Action):
    """An on/off setting's two flags: --x and --no-x (for a setting named no_x: --no-x and --x)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from SETTINGS: a flag per setting, its type from its default (an on/off one
    a Switch), its help from its reason. A setting not given stays out of the namespace: parse_args fills it."""
    p = argparse.ArgumentParser(description="Train a FER2013 expression classifier.",
                                argument_default=argparse.SUPPRESS)
    p.add_argument("train_csv", help="training CSV: label,feature or the challenge's fer2013.csv (plain, or compressed "
                   "as csv_gzip.py reads, where present)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named recipe (default: full with "
                   "CUDA, else cpu); flags given explicitly still override it")
    p.add_argument("--resume", action="store_true", default=False, help="continue the killed run that wrote "
                   "<out>.resume.pt, with its own settings (only --device is taken anew)")
    p.add_argument("--force", action="store_true", default=False, help="overwrite an existing --out")
    for title, group in SETTINGS.items():
        g = p.add_argument_group(title)
        for name, (default, reason, *choices) in group.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(default, bool):  # its default shown as the flag that means it
                other = "--" + flag[5:] if flag.startswith("--no-") else "--no-" + flag[2:]
                g.add_argument(flag, other, dest=name, action=Switch,
                               help=help_text(reason, flag if default else other))
            else:
                g.add_argument(flag, type=type(default), choices=choices[0] if choices else None,
                               help=help_text(reason, default))
    return p


def help_text(reason: str, default: object) -> str:
    return (reason + (f" (default: {default})" if default != "" else "")).replace("%", "%%")  # argparse %-formats it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed once: each setting is the flag given, else the preset's, else its default."""
    given = vars(build_parser().parse_args(argv))
    preset = given["preset"] or default_preset(given.get("device", HPARAMS["device"]))
    args = argparse.Namespace(**{**HPARAMS, **PRESETS[preset], **given, "preset": preset},
                              preset_chosen=given["preset"] is None, preset_progressive_off=False)
    # a preset's progressive resizing belongs to its own crop and net: off, unless asked for, where they differ
    if "progressive" not in given and args.progressive and (args.crop != PRESETS[preset].get("crop")
                                                             or progressive_problem(args)):
        args.progressive, args.preset_progressive_off = 0, True
    return args


def default_preset(device: str) -> str:
    """The preset of a run that names none: full on a GPU, the narrower, shorter cpu recipe anywhere else."""
    return "full" if pick_device(device).type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> dict:
    """Train one model as the command line says; returns its history (rank 0's is also <out>.json)."""
    start_time = time.time()
    args = parse_args(argv)
    rank, world, device = start_processes(args.device)  # (0, 1, --device) unless under torchrun
    run = Run(args, rank, world, device)
    run.say(preset_line(args))
    # outputs (rank 0's) checked before any work; a resumed run takes back its own settings
    check_outputs(run)
    resume = read_resume(run)
    # numerics: process-wide settings, the seed, and whether the steps run under bf16 autocast
    run.bf16 = set_numerics(run.args, device)
    # data: the split, the training split's pixel statistics, and the uint8 faces moved to the device once
    data = load_data(run)
    # the model, from scratch or from --init (a resumed run loads its own weights below)
    model, config = build_network(run, data)
    # what the student learns from besides the labels: fixed soft targets, or teachers watching every step
    teacher = load_teacher(run, data)
    # optimiser, schedule and loss, and the form each step runs in under several processes
    training = make_training(run, model, config, teacher, data)
    # where the run stands: fresh, or where the killed run saved it after its last finished epoch
    state = start_state(run, training, resume)
    info = run_info(run, training, data)
    run.say(summary_line(run, training, info))
    # the epochs, keeping the best one's model (early stopping), the resume state and the history
    train_epochs(run, training, data, state, info)
    result = {**info, **state, "finished": True, "stopped_early": state["epoch"] < run.args.epochs,
              "last_val_acc": state["history"][-1]["val_acc"], **epoch_timing(state["history"])}
    if world > 1:
        leave_processes()
    # the best epoch's model scored again with test-time augmentation, and the final history
    return finish(run, training.model, data, result, start_time) if rank == 0 else result


@dataclass
class Run:
    """What every step of one run shares: its settings, its place among the processes, its numerics."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    bf16: bool = False

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    @property
    def resume_path(self) -> Path:
        return self.out.with_suffix(".resume.pt")

    @property
    def history_path(self) -> Path:
        return self.out.with_suffix(".json")

    @property
    def global_batch(self) -> int:
        return self.args.batch_size * self.world

    def say(self, message: str) -> None:
        """One process speaks for all."""
        if self.rank == 0:
            print(message, flush=True)


def preset_line(args: argparse.Namespace) -> str:
    chosen = " (no --preset given: full with CUDA, else cpu; --preset to choose)" if args.preset_chosen else ""
    off = (f"; its --progressive {PRESETS[args.preset]['progressive']} is off with these flags"
           if args.preset_progressive_off else "")
    return f"preset: {args.preset}{chosen}{off}"


def check_outputs(run: Run) -> None:
    """Fail before any work where rank 0 could not write --out, or would overwrite a model unasked."""
    args, out = run.args, run.out
    if run.rank > 0:
        return
    if args.resume and not run.resume_path.exists():
        fail(f"--resume: {run.resume_path} does not exist")
    if out.exists() and not out.is_dir() and not (args.resume or args.force):
        fail(f"{out} exists: pass --force to overwrite it, --resume to continue its run, or another --out")
    problem = output_problem(out, make_folders=True)
    if problem:
        fail(problem)


def read_resume(run: Run) -> dict | None:
    """With --resume, the state a killed run saved (rank 0's file, for every rank), and its settings taken back
    into run.args: all but --device, and none that train.py no longer has. Else None."""
    if not run.args.resume:
        return None
    resume = from_rank0(lambda: torch.load(run.resume_path, map_location="cpu", weights_only=True))
    if resume.get("world_size", 1) != run.world:  # its schedule counted that many shards
        fail(f"--resume: {run.resume_path} was written by {resume.get('world_size', 1)} process(es), this run has "
             f"{run.world}")
    current = vars(run.args)
    kept = {k: v for k, v in resume["args"].items() if k in current and k not in ("device", "resume", "force")}
    run.args = argparse.Namespace(**{**current, **kept})
    return resume


def set_numerics(args: argparse.Namespace, device: torch.device) -> bool:
    """Process-wide settings and the seed; returns whether the steps run under bf16 autocast."""
    if args.deterministic and device.type == "cuda":  # (CPU kernels need no such setting)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        torch.use_deterministic_algorithms(True, warn_only=True)  # an op without such a kernel warns
    # fixed batch shapes: cuDNN times its algorithms once and keeps the fastest, which may vary run to run
    torch.backends.cudnn.benchmark = not args.deterministic
    keep_freed_memory()  # each step's CPU tensors reuse the last step's memory instead of faulting in fresh pages
    torch.manual_seed(args.seed)
    return args.bf16 == "on" or (args.bf16 == "auto" and native_bf16(device))


@dataclass
class Data:
    """A run's faces: the file's (for the teachers' cache), the training split's on the training device, the
    held-out split's on the CPU (predict.py's numerics), and the split with its pixel statistics."""
    images: torch.Tensor
    train_idx: np.ndarray
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    split: dict
    mean: float
    std: float


def load_data(run: Run) -> Data:
    args = run.args
    try:
        faces = read_faces(args.train_csv, require_labels=True)
    except DataError as e:
        fail(str(e))
    train_idx, val_idx, split = train_val_split(faces, args.val_fraction, args.split_seed, args.split_method)
    if len(train_idx) < run.global_batch:
        fail(f"{args.train_csv}: {len(train_idx)} training rows, fewer than one batch of {run.global_batch}")
    mean, std = pixel_stats(faces.images[train_idx])
    return Data(faces.images, train_idx, faces.images[train_idx].to(run.device), faces.labels[train_idx].to(run.device),
                faces.images[val_idx], faces.labels[val_idx], split, mean, std)


def build_network(run: Run, data: Data) -> tuple[nn.Module, dict]:
    """The network in channels_last layout, and its config as checkpoints record it."""
    args = run.args
    if args.stem != "conv" and args.arch not in ("vgg", "resnet"):
        fail(f"--stem {args.stem}: a VGG or ResNet stem, not {args.arch}'s")
    problem = progressive_problem(args)
    if problem:
        fail(problem)
    config = model_config(args, data.mean, data.std)
    model = build_model(config).to(run.device).to(memory_format=torch.channels_last)
    if args.stem == "whiten":  # (--init and --resume then load the stem the run started with)
        whiten_stem(model, data.train_images[:WHITEN_FACES].float().div(255))
    if args.init and not args.resume:
        load_init(model, config, args.init, data.split)
    return model, config


def model_config(args: argparse.Namespace, mean: float, std: float) -> dict:
    if args.no_normalize:
        mean, std = 0.0, 1.0
    side = {"side": args.crop} if args.crop else {}  # (a whole-face config has none, as the released ones)
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


def load_init(model: nn.Module, config: dict, path: str, split: dict) -> None:
    """--init: the weights of a checkpoint of the same architecture, trained on the same split."""
    try:
        initial = load_checkpoint(path)
    except (ValueError, OSError) as e:
        fail(str(e))
    shape = {k: v for k, v in config.items() if k not in ("mean", "std")}  # pixel stats vary in the last bits
    if {k: initial["config"].get(k) for k in shape} != shape or initial.get("split") != split:
        fail(f"--init {path}: another architecture or split than this run's")
    model.load_state_dict(fp32_state(initial["state_dict"]))


@dataclass
class Training:
    """What each step uses: the model (scored, saved and resumed) and the form a step runs it in (itself, or
    its DDP wrapper), the optimiser and schedule, the loss, and the teacher's targets or models, if any."""
    model: nn.Module
    config: dict
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Callable[..., torch.Tensor]
    teacher: torch.Tensor | list[nn.Module] | None
    peak_lr: float


def make_training(run: Run, model: nn.Module, config: dict, teacher: torch.Tensor | list[nn.Module] | None,
                  data: Data) -> Training:
    """SGD with Nesterov momentum under a one-cycle schedule; the lr follows the global batch (the gradient DDP
    averages over it); the loss smooths the labels, mixed with the teacher's targets when there is one."""
    args = run.args
    peak_lr = args.lr * run.global_batch / LR_BATCH
    optimizer = torch.optim.SGD(decay_groups(model, args.norm_decay), lr=peak_lr, momentum=args.momentum,
                                nesterov=True, weight_decay=args.weight_decay)
    total_steps = args.epochs * (len(data.train_idx) // run.global_batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak_lr, pct_start=args.warmup,
                                                    total_steps=total_steps)
    weights = class_weights(data.train_labels.cpu()).to(run.device) if args.class_weighted else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=args.label_smoothing)
    model, step_model = for_processes(model, run)
    return Training(model, config, step_model, optimizer, scheduler,
                    make_loss(criterion, args.distill_alpha, args.temperature), teacher, peak_lr)


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


def make_loss(criterion: nn.Module, alpha: float, temperature: float) -> Callable[..., torch.Tensor]:
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


def start_state(run: Run, training: Training, resume: dict | None) -> dict:
    """A fresh run's state, or the resumed one's, its model, optimiser and schedule loaded."""
    if resume is None:
        return {"epoch": 0, "best_val_acc": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "elapsed": 0.0}
    training.model.load_state_dict(resume["model"])
    training.optimizer.load_state_dict(resume["optimizer"])
    training.scheduler.load_state_dict(resume["scheduler"])
    run.say(f"resuming {run.resume_path} after epoch {resume['state']['epoch']}")
    return resume["state"]


def run_info(run: Run, training: Training, data: Data) -> dict:
    """What the history and the checkpoint record of the run besides its epochs."""
    return {"train_csv": str(run.args.train_csv), "split": data.split, "n_train": len(data.train_idx),
            "n_val": len(data.val_labels), "params": count_parameters(training.model), "device": str(run.device),
            "device_name": device_name(run.device), "bf16": run.bf16, "world_size": run.world,
            "peak_lr": training.peak_lr, "torch": torch.__version__, "git_commit": git_commit(),
            "args": dict(vars(run.args))}


def summary_line(run: Run, training: Training, info: dict) -> str:
    watching = isinstance(training.teacher, list)
    return (f"{training.config['arch']} {info['params']:,} parameters on {info['device_name']}"
            f"{' (bf16 autocast)' if run.bf16 else ''}{f', {run.world} processes' if run.world > 1 else ''}; "
            f"{info['n_train']} train / {info['n_val']} val faces ({info['split']['method']} split); batch "
            f"{run.global_batch}, peak lr {training.peak_lr:g}"
            f"{f'; {len(training.teacher)} teachers watch every step' if watching else ''}")


def train_epochs(run: Run, training: Training, data: Data, state: dict, info: dict) -> None:
    """From where state stands to --epochs or early stopping; state records every epoch."""
    args = run.args
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        # one epoch of training, then the held-out score in fp32, rank 0's for every rank
        t0 = time.time()
        figures = train_one_epoch(run, training, data, epoch)
        val_loss, val_acc = from_rank0(lambda: evaluate(training.model, data.val_images, data.val_labels))
        seconds = time.time() - t0
        lr = training.scheduler.get_last_lr()[0]
        faces = len(data.train_idx) // run.global_batch * run.global_batch
        faces_per_second = faces / figures.pop("train_seconds")  # training alone
        state["history"].append({"epoch": epoch, **figures, "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                                 "seconds": seconds, "train_faces_per_s": faces_per_second})
        state["epoch"], state["elapsed"] = epoch, state["elapsed"] + seconds
        # keep the best epoch's model (early stopping's checkpoint); every rank decides alike from the same scores
        improved = val_acc > state["best_val_acc"]
        if improved:
            state["best_val_acc"], state["best_epoch"], state["bad_epochs"] = val_acc, epoch, 0
            if run.rank == 0:
                save_best(run, training, state, info)
        else:
            state["bad_epochs"] += 1
        run.say(f"epoch {epoch:3d}/{args.epochs}  train loss {figures['train_loss']:.4f} acc "
                f"{figures['train_acc']:.4f}  val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.5f}  "
                f"{faces_per_second:5.0f} faces/s  {seconds:5.1f}s{'  *' if improved else ''}")
        # what a killed run resumes from, and the history so far
        if run.rank == 0:
            save_progress(run, training, state, info)
        # early stopping
        if state["bad_epochs"] >= args.patience:
            run.say(f"early stop: no better val accuracy for {args.patience} epochs")
            break


def train_one_epoch(run: Run, training: Training, data: Data, epoch: int) -> dict:
    """One pass over the device-resident uint8 faces. Under torchrun each rank takes its slice of every global
    batch of one shared permutation."""
    args, rank, teacher = run.args, run.rank, training.teacher
    images, labels, device = data.train_images, data.train_labels, data.train_images.device
    watching = isinstance(teacher, list)  # consistent distillation: teacher models, not fixed targets
    training.model.train()
    start = time.time()
    generator = torch.Generator(device).manual_seed(epoch_seed(args.seed, epoch))  # batch order: alike on all ranks
    batches = [idx[rank * args.batch_size:(rank + 1) * args.batch_size]  # this rank's share of each global batch
               for idx in epoch_batches(len(images), run.global_batch, generator)]
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
        x = training_view(images[idx].float().div_(255), generator, args, pixels, whole=watching)
        x, partner, lam = mix(x, generator, host_rng, args.mixup, args.cutmix)
        y, t = labels[idx], teacher[idx] if torch.is_tensor(teacher) else None
        if watching:  # consistent distillation: the targets of exactly these (mixed) faces
            t = consistent_targets(teacher, x, run.bf16)
            x = centre_crop(x, args.crop) if args.crop else x
        x = x.contiguous(memory_format=torch.channels_last)  # the layout oneDNN and cuDNN convolve fastest in
        # forward under autocast; the loss in fp32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16):
            logits = training.step_model(x).float()
        loss = training.loss_fn(logits, y, t)
        if partner is not None:  # mixed faces: the loss against both faces' targets, weighted by lam
            partner_t = t if watching or t is None else t[partner]  # watching teachers saw the mixed face itself
            loss = lam * loss + (1 - lam) * training.loss_fn(logits, y[partner], partner_t)
        # the update (under DDP, backward also averages the gradients over the ranks)
        training.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        training.optimizer.step()
        training.scheduler.step()
        total_loss += loss.detach()
        correct += (logits.argmax(1) == y).sum()
    return epoch_figures(run, total_loss, correct, batches, len(images), pixels, time.time() - start)


def epoch_seed(seed: int, epoch: int) -> int:
    """Every random draw of an epoch comes from this: a resumed run repeats the uninterrupted run's epochs."""
    return seed * 100_003 + epoch


def training_view(x: torch.Tensor, generator: torch.Generator, args: argparse.Namespace, pixels: int | None,
                  whole: bool) -> torch.Tensor:
    """The faces (0..1) as this step trains on them: augmented, cropped to --crop, sampled at --progressive's
    pixels. whole: the crop is left to the caller (watching teachers each take their own middle of the view)."""
    side = None if whole else args.crop or None
    if not args.no_augment:
        return augment(x, generator, args.rotate, args.shift, args.scale, args.erase, out_side=side, pixels=pixels)
    if side:
        x = centre_crop(x, side)
        if pixels:  # the same sample points as augment's grid would take
            x = nn.functional.interpolate(x, size=(pixels, pixels), mode="bilinear", align_corners=False)
    return x


def epoch_figures(run: Run, total_loss: torch.Tensor, correct: torch.Tensor, batches: list[torch.Tensor],
                  n_faces: int, pixels: int | None, seconds: float) -> dict:
    """The epoch's loss and accuracy over all ranks (read once: the device has then finished the epoch)."""
    totals = torch.stack([total_loss, correct])
    if run.world > 1:
        dist.all_reduce(totals)
    steps = len(batches) * run.world
    result = {"train_loss": totals[0].item() / steps, "train_acc": totals[1].item() / (steps * run.args.batch_size),
              "train_seconds": seconds}
    if pixels:
        result["train_pixels"] = pixels
    if run.world > 1:  # a check, logged: how many faces the ranks saw, and how many more than once
        seen = torch.bincount(torch.cat(batches), minlength=n_faces)
        dist.all_reduce(seen)
        result.update(faces_seen=int((seen > 0).sum()), faces_seen_twice=int((seen > 1).sum()))
    return result


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             tta: bool | str = False) -> tuple[float, float]:
    """(cross-entropy, accuracy) on held-out faces, in fp32 as predict.py runs: the epoch chosen and
    the figure logged are those of the model as it will be used."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    probs = predict_proba(model, images, batch_size=1024 if on_gpu else BATCH_SIZE, tta=tta)  # CPU: predict's
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return loss, (probs.argmax(1) == labels).float().mean().item()


def save_best(run: Run, training: Training, state: dict, info: dict) -> None:
    atomic_save(make_checkpoint(training.model, training.config, class_names=list(CLASS_NAMES), split=info["split"],
                                train_args=info["args"], git_commit=info["git_commit"], epoch=state["best_epoch"],
                                val_acc=state["best_val_acc"]), run.out)


def save_progress(run: Run, training: Training, state: dict, info: dict) -> None:
    """The resume file (model, optimiser, schedule, state, settings) and the history so far."""
    atomic_save({"model": training.model.state_dict(), "optimizer": training.optimizer.state_dict(),
                 "scheduler": training.scheduler.state_dict(), "state": state, "args": vars(run.args),
                 "world_size": run.world}, run.resume_path)
    write_json({**info, **state, "finished": False}, run.history_path)


def finish(run: Run, model: nn.Module, data: Data, result: dict, start_time: float) -> dict:
    """Score the best epoch's model again with flip test-time augmentation, and a crop-trained one with all ten
    views; record them in its checkpoint and the history, and remove the resume file."""
    out = run.out
    best = load_checkpoint(out)
    model.load_state_dict(best["state_dict"])
    held_out = data.val_images, data.val_labels
    _, val_acc_tta = evaluate(model, *held_out, tta="flip")
    crops = {"val_acc_crops": evaluate(model, *held_out, tta="crops")[1]} if run.args.crop else {}
    best.update(val_acc_tta=val_acc_tta, **crops)
    atomic_save(best, out)
    result.update(best_val_acc_tta=val_acc_tta, **{f"best_{k}": v for k, v in crops.items()},
                  wall_seconds=time.time() - start_time)
    write_json(result, run.history_path)
    run.resume_path.unlink(missing_ok=True)
    ten = f", ten crops {crops['val_acc_crops']:.4f}" if crops else ""
    run.say(f"best epoch {result['best_epoch']}: val acc {result['best_val_acc']:.4f}, with flip TTA "
            f"{val_acc_tta:.4f}{ten}; saved {out} ({time.time() - start_time:.0f}s)")
    return result


# Distillation (Hinton et al. 2015): fixed targets computed once, or teachers that watch every step.

def load_teacher(run: Run, data: Data) -> torch.Tensor | list[nn.Module] | None:
    """None without --teacher; --distill fixed: the teachers' soft targets, one row per training face;
    consistent: the teacher models themselves, on the training device."""
    args = run.args
    if not args.teacher:
        return None
    paths = args.teacher.split(",")
    if args.distill == "consistent":
        return [m.to(run.device) for m in from_rank0(lambda: load_teachers(paths, data.split))]
    cache = Path(args.teacher_cache or run.out.with_suffix(".teacher.pt"))
    return from_rank0(lambda: fixed_targets(paths, data, args.train_csv, cache)).to(run.device)


def load_teachers(paths: list[str], split: dict) -> list[nn.Module]:
    """The teacher models, ready for inference; each must have been trained on this run's split, or its soft
    targets would leak the held-out faces."""
    try:
        loaded = [load_model(path) for path in paths]
    except (ValueError, OSError) as e:
        fail(str(e))
    for path, (_, header) in zip(paths, loaded, strict=True):
        if header.get("split") != split:
            fail(f"{path}: the teacher was trained on another split than this run's {split}")
    return [fuse_for_inference(m).eval().to(memory_format=torch.channels_last) for m, _ in loaded]


def fixed_targets(paths: list[str], data: Data, train_csv: str, cache: Path) -> torch.Tensor:
    """The teachers' log-probabilities for the training faces, from the cache where it fits."""
    models = load_teachers(paths, data.split)  # the split check reads them; the targets, if not cached, come from them
    try:
        return teacher_logits(paths, data.images, train_csv, cache, models)[data.train_idx]
    except (DataError, ValueError, OSError) as e:
        fail(str(e))


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


# Progressive resizing: the crops sampled at fewer pixels early in the schedule.

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


# Several processes (torchrun): one model, each process training on its share of every global batch.

def start_processes(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun with several processes, join the process group: NCCL on
    CUDA, one GPU per process (LOCAL_RANK), gloo on CPU. Otherwise (0, 1, the --device)."""
    device, world = pick_device(device_flag), int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def for_processes(model: nn.Module, run: Run) -> tuple[nn.Module, nn.Module]:
    """(model, the module each step runs). Several processes: DDP averages the gradients in backward, and on
    CUDA the BatchNorm statistics are those of the global batch (SyncBatchNorm has no CPU kernels: gloo runs keep
    per-rank batch statistics, and DDP gives every rank rank 0's running ones)."""
    if run.world == 1:
        return model, model
    if run.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, DistributedDataParallel(model, device_ids=[run.device] if run.device.type == "cuda" else None)


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


# Small helpers.

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: tensor cores on CUDA, avx512_bf16 or AMX through oneDNN on a CPU."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def epoch_timing(history: list[dict]) -> dict:
    """Steady epoch seconds (median after the first) and the first epoch's excess over them: the one-off
    cost of cuDNN's algorithm search and warm-up."""
    if len(history) < 2:
        return {}
    steady = statistics.median(h["seconds"] for h in history[1:])
    return {"steady_epoch_seconds": steady, "first_epoch_extra_seconds": history[0]["seconds"] - steady}


def write_json(obj: object, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


fail = partial(utils.fail, "train.py")  # one line on stderr, exit code 2


if __name__ == "__main__":
    main()
