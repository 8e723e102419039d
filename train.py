"""Train a FER2013 classifier with early stopping on a held-out split.

  python train.py <train.csv> [--preset cpu|fast|full] [--out weights/trained.pt] [flags]

Writes the best epoch's model to --out, its history to <out>.json, and, while running, the state
to resume from to <out>.resume.pt (removed once the run finishes).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dataset import CLASS_NAMES, DataError, FaceDataset, pixel_stats, read_faces, train_augmentation, train_val_split
from model import (
    DEFAULT_VGG,
    atomic_save,
    atomic_write,
    build_model,
    count_parameters,
    git_commit,
    load_checkpoint,
    load_model,
    make_checkpoint,
)
from predict import ensemble_proba, predict_proba

HERE = Path(__file__).resolve().parent

# Every default in one place. A preset overrides some of them; explicit flags override the preset.
DEFAULTS = {
    "out": str(HERE / "weights" / "trained.pt"),
    "epochs": 60, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "label_smoothing": 0.1, "warmup": 0.2, "val_fraction": 0.1, "patience": 15, "seed": 0, "split_seed": 0,
    "device": "auto", "workers": -1, "bf16": "auto",
    "arch": DEFAULT_VGG["arch"], "channels": ",".join(map(str, DEFAULT_VGG["channels"])),
    "convs_per_stage": DEFAULT_VGG["convs_per_stage"], "hidden": DEFAULT_VGG["hidden"],
    "dropout": DEFAULT_VGG["dropout"], "stage_dropout": DEFAULT_VGG["stage_dropout"], "mlp_depth": 2,
    "rotate": 10.0, "shift": 0.1, "scale": 0.1, "erase": 0.5,
    "teacher": "", "teacher_cache": "", "distill_alpha": 0.8, "temperature": 4.0, "init": "",
}
PRESETS = {
    # 2-core CPU, under an hour: a narrower VGG, bf16 autocast (fast on CPUs with avx512_bf16, as here).
    "cpu": {"channels": "40,80,160,320", "epochs": 40, "bf16": "on"},
    # One GPU: the default (full-width) VGG; 'fast' trades epochs for wall time.
    "full": {"epochs": 60},
    "fast": {"epochs": 20, "batch_size": 256, "lr": 0.1},
    # The compact model (weights/compact.q8, under 225,000 bytes as int8): a 196k-parameter MobileNet
    # distilled from the released cpu ensemble; about 95 min on the 2-core CPU. It still underfits at
    # 40 epochs (train accuracy below held-out), so it gets twice the cpu preset's.
    "compact": {"arch": "mobilenet", "channels": "36,72,144,288", "convs_per_stage": 2, "dropout": 0.2,
                "epochs": 80, "bf16": "on",
                "teacher": ",".join(str(HERE / "weights" / f"vgg_cpu_s{seed}.pt") for seed in (0, 1))},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a FER2013 expression classifier.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("train_csv", help="training CSV: label,feature or the challenge's fer2013.csv (plain or .gz)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe; other flags still override it")
    p.add_argument("--out", help="where the best model goes; its history goes to <out>.json")
    p.add_argument("--resume", action="store_true", help="continue the killed run that wrote <out>.resume.pt")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="epoch limit (the one-cycle schedule spans it)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule (SGD, Nesterov)")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--warmup", type=float, help="fraction of the steps spent raising the learning rate")
    g.add_argument("--patience", type=int, help="stop after this many epochs without a better val accuracy")
    g.add_argument("--val-fraction", type=float, help="stratified held-out fraction (files without Usage)")
    g.add_argument("--seed", type=int, help="seeds the initialisation, the shuffling and the augmentation")
    g.add_argument("--split-seed", type=int, help="seeds the held-out split; keep it fixed to compare or ensemble")
    g.add_argument("--class-weighted", action="store_true", help="weight the loss by inverse class frequency")
    g.add_argument("--init", help="start from this checkpoint's weights (same architecture and split), e.g. for "
                   "a second, lower learning-rate cycle")
    g = p.add_argument_group("distillation (Hinton et al. 2015)")
    g.add_argument("--teacher", help="comma-separated model files whose averaged predictions the model learns "
                   "from; they must not have seen this run's held-out split")
    g.add_argument("--teacher-cache", help="where the teacher's logits are kept between runs; default <out>.teacher.pt")
    g.add_argument("--distill-alpha", type=float, help="weight of the teacher's soft targets; 1 - it: the labels'")
    g.add_argument("--temperature", type=float, help="softening temperature of student and teacher")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    g.add_argument("--workers", type=int, help="data-loader processes; -1: 1 on CPU, 8 on CUDA")
    g.add_argument("--bf16", choices=["auto", "on", "off"], help="bf16 autocast; auto: on for CUDA only")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=["vgg", "mobilenet", "mlp"])
    g.add_argument("--channels", help="VGG, MobileNet: comma-separated widths, one per stage")
    g.add_argument("--convs-per-stage", type=int, help="VGG: 3x3 convolutions per stage; MobileNet: separable blocks")
    g.add_argument("--hidden", type=int, help="width of the hidden layer(s) of the head / the MLP")
    g.add_argument("--mlp-depth", type=int, help="MLP: number of hidden layers")
    g.add_argument("--dropout", type=float, help="dropout before the classifier layers")
    g.add_argument("--stage-dropout", type=float, help="VGG: dropout after each pooling")
    g.add_argument("--no-normalize", action="store_true", help="skip mean/std normalisation (ablation)")
    g = p.add_argument_group("augmentation (random per sample, training only)")
    g.add_argument("--no-augment", action="store_true", help="train on the faces as they are (ablation)")
    g.add_argument("--rotate", type=float, help="max rotation, degrees")
    g.add_argument("--shift", type=float, help="max translation, fraction of the side")
    g.add_argument("--scale", type=float, help="max relative zoom in or out")
    g.add_argument("--erase", type=float, help="probability of random erasing")
    pre, _ = p.parse_known_args(argv)
    p.set_defaults(**{**DEFAULTS, **PRESETS.get(pre.preset, {})})
    return p.parse_args(argv)


def model_config(args: argparse.Namespace, mean: float, std: float) -> dict:
    if args.no_normalize:
        mean, std = 0.0, 1.0
    if args.arch == "mlp":
        return {"arch": "mlp", "hidden": args.hidden, "depth": args.mlp_depth, "dropout": args.dropout,
                "mean": mean, "std": std}
    channels = [int(c) for c in args.channels.split(",")]
    if args.arch == "mobilenet":
        return {"arch": "mobilenet", "channels": channels, "blocks_per_stage": args.convs_per_stage,
                "dropout": args.dropout, "mean": mean, "std": std}
    return {"arch": "vgg", "channels": channels, "convs_per_stage": args.convs_per_stage, "hidden": args.hidden,
            "dropout": args.dropout, "stage_dropout": args.stage_dropout, "mean": mean, "std": std}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def write_json(obj: object, path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: bool = False) -> tuple[float, float]:
    """(cross-entropy, accuracy) on held-out faces, in fp32 as predict.py runs: the epoch chosen and
    the figure logged are those of the model as it will be used."""
    probs = predict_proba(model, images, tta=tta)
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return loss, (probs.argmax(1) == labels).float().mean().item()


def teacher_logits(paths: list[str], images: torch.Tensor, train_csv: str, cache: Path) -> torch.Tensor:
    """Log of the teachers' averaged flip-TTA probabilities for every face of the file, computed once and
    kept in cache; the cache is used only when it was made from the same teacher files and data file."""
    key = {"teachers": [(str(p), Path(p).stat().st_size) for p in paths],
           "train_csv": (str(train_csv), Path(train_csv).stat().st_size), "n": len(images)}
    if cache.exists():
        cached = torch.load(cache, map_location="cpu", weights_only=True)
        if cached.get("key") == key:
            return cached["logits"]
    print(f"computing the teacher's logits for {len(images)} faces ({', '.join(paths)})", flush=True)
    logits = ensemble_proba(paths, images).clamp_min(1e-8).log()
    atomic_save({"key": key, "logits": logits}, cache)
    return logits


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


def train_one_epoch(model: nn.Module, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn, device: torch.device,
                    bf16: bool, desc: str) -> tuple[float, float]:
    model.train()
    # Sums stay on the device: a .item() per step would make the CPU wait for the GPU every batch.
    total_loss, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for x, y, *teacher in tqdm(loader, desc=desc, leave=False, disable=None, dynamic_ncols=True):
        # channels_last: the layout oneDNN (CPU) and cuDNN (tensor cores) convolve fastest in.
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        teacher = teacher[0].to(device, non_blocking=True) if teacher else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y, teacher)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return total_loss.item() / seen, correct.item() / seen


def make_loader(dataset: FaceDataset, args: argparse.Namespace, device: torch.device,
                epoch: int) -> torch.utils.data.DataLoader:
    # A fresh generator per epoch: shuffling and the workers' augmentation seeds depend only on
    # (seed, epoch), so a resumed run sees exactly the batches the uninterrupted run would have.
    generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
    workers = args.workers if args.workers >= 0 else (8 if device.type == "cuda" else 1)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, generator=generator,
                                       pin_memory=device.type == "cuda")


def fail(message: str) -> None:
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    start_time = time.time()
    args = parse_args(argv)
    out = Path(args.out)
    resume_path, history_path = out.with_suffix(".resume.pt"), out.with_suffix(".json")
    if args.resume and not resume_path.exists():
        fail(f"--resume: {resume_path} does not exist")
    if out.exists() and not (args.resume or args.force):
        fail(f"{out} exists: pass --force to overwrite it, --resume to continue its run, or another --out")
    resume = torch.load(resume_path, map_location="cpu", weights_only=True) if args.resume else None
    if resume is not None:  # a resumed run keeps its own recipe; only the hardware flags are taken anew
        kept = {k: v for k, v in resume["args"].items() if k not in ("device", "workers", "resume", "force")}
        args = argparse.Namespace(**{**vars(args), **kept})

    device = pick_device(args.device)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device.type == "cuda")
    torch.manual_seed(args.seed)
    try:
        faces = read_faces(args.train_csv, require_labels=True)
    except DataError as e:
        fail(str(e))
    train_idx, val_idx, split = train_val_split(faces, args.val_fraction, args.split_seed)
    mean, std = pixel_stats(faces.images[train_idx])
    config = model_config(args, mean, std)
    model = build_model(config).to(device).to(memory_format=torch.channels_last)
    n_params = count_parameters(model)
    if args.init and resume is None:
        try:
            initial = load_checkpoint(args.init)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        shape = {k: v for k, v in config.items() if k not in ("mean", "std")}  # pixel stats vary in the last bits
        if {k: initial["config"].get(k) for k in shape} != shape or initial.get("split") != split:
            fail(f"--init {args.init}: another architecture or split than this run's")
        model.load_state_dict(initial["state_dict"])

    transform = None if args.no_augment else train_augmentation(args.rotate, args.shift, args.scale, args.erase)
    teacher = None
    if args.teacher:
        cache = Path(args.teacher_cache or out.with_suffix(".teacher.pt"))
        try:
            for path in args.teacher.split(","):
                if load_model(path)[1].get("split") != split:  # its soft targets would leak our held-out faces
                    fail(f"{path}: the teacher was trained on another split than this run's {split}")
            teacher = teacher_logits(args.teacher.split(","), faces.images, args.train_csv, cache)[train_idx]
        except (DataError, ValueError, FileNotFoundError) as e:
            fail(str(e))
    train_set = FaceDataset(faces.images[train_idx], faces.labels[train_idx], transform, teacher)
    val_images, val_labels = faces.images[val_idx], faces.labels[val_idx]
    if len(train_set) < args.batch_size:
        fail(f"{args.train_csv}: {len(train_set)} training rows, fewer than one batch of {args.batch_size}")
    steps_per_epoch = len(train_set) // args.batch_size

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, pct_start=args.warmup,
                                                    total_steps=args.epochs * steps_per_epoch)
    weights = class_weights(faces.labels[train_idx]).to(device) if args.class_weighted else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=args.label_smoothing)
    loss_fn = make_loss(criterion, args.distill_alpha, args.temperature)
    state = {"epoch": 0, "best_val_acc": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "elapsed": 0.0}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        state = resume["state"]
        print(f"resuming {resume_path} after epoch {state['epoch']}", flush=True)

    run_info = {"train_csv": str(args.train_csv), "split": split, "n_train": len(train_idx), "n_val": len(val_idx),
                "params": n_params, "device": str(device), "bf16": bf16, "torch": torch.__version__,
                "git_commit": git_commit(), "args": dict(vars(args))}
    print(f"{config['arch']} {n_params:,} parameters on {device}{' (bf16 autocast)' if bf16 else ''}; "
          f"{len(train_idx)} train / {len(val_idx)} val faces ({split['method']} split)", flush=True)

    def save_best() -> None:
        atomic_save(make_checkpoint(model, config, class_names=list(CLASS_NAMES), split=split,
                                    train_args=run_info["args"], git_commit=run_info["git_commit"],
                                    epoch=state["best_epoch"], val_acc=state["best_val_acc"]), out)

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        t0 = time.time()
        torch.manual_seed(args.seed * 100_003 + epoch)  # dropout in this process, per epoch as above
        loader = make_loader(train_set, args, device, epoch)
        train_loss, train_acc = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device, bf16,
                                                f"epoch {epoch}/{args.epochs}")
        val_loss, val_acc = evaluate(model, val_images, val_labels)
        seconds = time.time() - t0
        lr = scheduler.get_last_lr()[0]
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                 "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": seconds})
        state["epoch"], state["elapsed"] = epoch, state["elapsed"] + seconds
        improved = val_acc > state["best_val_acc"]
        if improved:
            state["best_val_acc"], state["best_epoch"], state["bad_epochs"] = val_acc, epoch, 0
            save_best()
        else:
            state["bad_epochs"] += 1
        print(f"epoch {epoch:3d}/{args.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
              f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.5f}  {seconds:5.1f}s{'  *' if improved else ''}",
              flush=True)
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "state": state, "args": vars(args)}, resume_path)
        write_json({**run_info, **state, "finished": False}, history_path)
        if state["bad_epochs"] >= args.patience:
            print(f"early stop: no better val accuracy for {args.patience} epochs", flush=True)
            break

    # The best epoch's model, scored again with flip test-time augmentation.
    best = load_checkpoint(out)
    model.load_state_dict(best["state_dict"])
    _, val_acc_tta = evaluate(model, val_images, val_labels, tta=True)
    best["val_acc_tta"] = val_acc_tta
    atomic_save(best, out)
    result = {**run_info, **state, "finished": True, "stopped_early": state["epoch"] < args.epochs,
              "best_val_acc_tta": val_acc_tta, "wall_seconds": time.time() - start_time}
    write_json(result, history_path)
    resume_path.unlink(missing_ok=True)
    print(f"best epoch {state['best_epoch']}: val acc {state['best_val_acc']:.4f}, with flip TTA "
          f"{val_acc_tta:.4f}; saved {out} ({time.time() - start_time:.0f}s)", flush=True)
    return result


if __name__ == "__main__":
    main()
