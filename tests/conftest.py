"""Synthetic FER-format data (each of the 7 classes is a distinct pattern plus noise, so it is learnable) and a
small MobileNet with trained-looking weights."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

from model import build_model  # noqa: E402


def synthetic_faces(n: int, seed: int = 0, noise: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2304) uint8 images and labels 0..6: class c is a bright bar at a class-specific place and angle."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:48, 0:48]
    patterns = []
    for c in range(7):
        angle = np.pi * c / 7
        d = np.abs((xx - 24) * np.sin(angle) - (yy - 24) * np.cos(angle))
        patterns.append(np.where(d < 4, 200.0, 60.0))
    images = np.stack([patterns[c] for c in labels]) + rng.normal(0, noise, (n, 48, 48))
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, -1), labels


def pixel_strings(images: np.ndarray) -> list[str]:
    return [" ".join(map(str, row)) for row in images]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    text = header + "\n" + "".join(r + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def write_train_csv(path: Path, n: int = 280, seed: int = 0, labels: np.ndarray | None = None) -> Path:
    images, true_labels = synthetic_faces(n, seed)
    labels = true_labels if labels is None else labels
    return write_csv(path, "label,feature", [f"{y},{p}" for y, p in zip(labels, pixel_strings(images), strict=True)])


def write_test_csv(path: Path, n: int = 50, seed: int = 1, first_id: int = 0) -> Path:
    images, _ = synthetic_faces(n, seed)
    return write_csv(path, "id,feature", [f"{first_id + i},{p}" for i, p in enumerate(pixel_strings(images))])


@pytest.fixture
def train_csv(tmp_path: Path) -> Path:
    return write_train_csv(tmp_path / "train.csv")


@pytest.fixture
def test_csv(tmp_path: Path) -> Path:
    return write_test_csv(tmp_path / "test.csv")


def trained_mobilenet() -> tuple[torch.nn.Module, dict]:
    """A MobileNet with BatchNorm statistics and weights off their initial values."""
    config = {"arch": "mobilenet", "channels": [8, 16, 32, 64], "blocks_per_stage": 1, "mean": 0.5, "std": 0.2}
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        x = torch.rand(32, 1, 48, 48)
        loss = torch.nn.functional.cross_entropy(model.train()(x), (x.mean((1, 2, 3)) * 70 % 7).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), config
