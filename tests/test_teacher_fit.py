"""bench/teacher_fit.py: a teacher's targets on its own training faces against held-out ones."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_faces, write_train_csv

import predict
import train
from bench import teacher_fit
from dataset import read_faces, recorded_split
from model import load_checkpoint
from predict import predict_proba
from quantized import load_model

TINY = ["--channels", "8,16", "--hidden", "32", "--batch-size", "32", "--bf16", "off", "--no-augment", "--crop", "0"]


def test_confident_targets_have_low_entropy_and_uniform_ones_the_most() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    sure = torch.full((4, 7), 1e-4).scatter_(1, labels[:, None], 1 - 6e-4).log()
    unsure = torch.full((4, 7), 1 / 7).log()
    s, u = teacher_fit.target_figures(sure, labels, 4.0), teacher_fit.target_figures(unsure, labels, 4.0)
    assert s["accuracy"] == 1.0 and s["mean_label_prob"] == pytest.approx(1 - 6e-4)
    assert u["mean_soft_entropy"] == pytest.approx(math.log(7)) and s["mean_soft_entropy"] < 0.8 * math.log(7)


def memorise(path: Path, images: torch.Tensor, labels: torch.Tensor, steps: int = 60) -> None:
    """Fit the model file's network to these faces, noise and all, with nothing to stop it, and save it back."""
    checkpoint = load_checkpoint(path)
    model = load_model(path)[0].train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    x = images.float().div(255)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    torch.save({**checkpoint, "state_dict": model.state_dict()}, path)


def test_a_teacher_that_memorised_noisy_labels_is_surer_on_its_training_faces(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # a third of the labels random: only memorising gets them right, and only on the faces it trained on
    n, rng = 350, np.random.default_rng(0)
    labels = synthetic_faces(n)[1].copy()
    noisy = rng.random(n) < 1 / 3
    labels[noisy] = rng.integers(0, 7, noisy.sum())
    csv = write_train_csv(tmp_path / "train.csv", n=n, labels=labels)
    teacher = tmp_path / "teacher.pt"
    train.main([str(csv), "--out", str(teacher), *TINY, "--epochs", "1"])
    faces = read_faces(csv, require_labels=True)
    train_idx, val_idx = recorded_split(faces, load_model(teacher)[1]["split"])
    memorise(teacher, faces.images[train_idx], faces.labels[train_idx])
    # flips off: a mirrored bar is another class's bar
    reads = []
    for module in (teacher_fit, predict):
        monkeypatch.setattr(module, "load_model", lambda path, *a, **k: reads.append(str(path)) or load_model(path, *a, **k))
    result = teacher_fit.main([str(csv), "--model", str(teacher), "--views", "none", "--json", str(tmp_path / "f.json")])
    assert reads == [str(teacher)]  # read once, for its split and its predictions
    fit, held = result["training"], result["held_out"]
    assert (fit["n"], held["n"]) == (len(train_idx), len(val_idx)) and json.loads((tmp_path / "f.json").read_text()) == result
    assert fit["accuracy"] > 0.9 and held["accuracy"] < 0.8  # the noise is learnt on training faces only
    assert fit["mean_soft_entropy"] < held["mean_soft_entropy"]
    # the held-out figure is the one predict.py gives on the recorded split's held-out faces
    probs = predict_proba(load_model(teacher)[0], faces.images[val_idx], tta="none")
    assert held["accuracy"] == (probs.argmax(1) == faces.labels[val_idx]).float().mean().item()


def test_teachers_on_different_splits_are_one_line(tmp_path: Path) -> None:
    csv = write_train_csv(tmp_path / "train.csv")
    for seed in (0, 1):
        train.main([str(csv), "--out", str(tmp_path / f"t{seed}.pt"), *TINY, "--epochs", "1", "--split-seed", str(seed)])
    with pytest.raises(SystemExit) as exit_info:
        teacher_fit.main([str(csv), "--model", str(tmp_path / "t0.pt"), "--model", str(tmp_path / "t1.pt")])
    assert "different splits" in str(exit_info.value) and "\n" not in str(exit_info.value)
