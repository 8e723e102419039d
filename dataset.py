"""FER2013 CSV files -> uint8 image tensors, the held-out split, and torchvision augmentation.

Accepted formats (header names matched case-insensitively, spaces stripped; plain or gzip):
  training  label,feature           test  id,feature
  fer2013.csv  emotion,pixels,Usage  icml_face_data.csv  emotion, Usage, pixels
"""

import gzip
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIDE = 48
N_PIXELS = SIDE * SIDE
USAGES = ("Training", "PublicTest", "PrivateTest")
COLUMN_ALIASES = {"label": ("label", "emotion"), "pixels": ("feature", "pixels"), "id": ("id",), "usage": ("usage",)}


class DataError(ValueError):
    """Bad input data; the message is one line: 'file:line: what is wrong'."""


@dataclass
class Faces:
    images: torch.Tensor  # (N, 1, 48, 48) uint8
    labels: torch.Tensor | None  # (N,) int64, None for a test file
    ids: np.ndarray  # (N,) int64: the id column, or the row index when there is none
    usage: np.ndarray | None  # (N,) str, only for the original challenge files


def _line(row: int) -> int:
    return row + 2  # 1-based, after the header line


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if not magic:
        raise DataError(f"{path}:1: empty file")
    compression = "gzip" if magic == b"\x1f\x8b" else None  # sniffed, so a misnamed file still reads
    try:
        # Everything as text: the columns are validated below with precise line numbers.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                         skipinitialspace=True, compression=compression)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}:1: empty file") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed CSV: {str(e).strip().splitlines()[-1]}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable gzip: {e}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    if len(df) == 0:
        raise DataError(f"{path}:2: no data rows after the header")
    return df


def _column(df: pd.DataFrame, path: Path, key: str, required: bool) -> np.ndarray | None:
    for name in COLUMN_ALIASES[key]:
        if name in df.columns:
            return df[name].to_numpy(dtype=object)
    if required:
        wanted = " or ".join(repr(n) for n in COLUMN_ALIASES[key])
        raise DataError(f"{path}:1: missing column {wanted}; header has {list(df.columns)}")
    return None


_ROW_END = 999  # a token no valid pixel can be: marks where each row ends in the joined buffer


def _is_pixel(token: str) -> bool:
    digits = token.removeprefix("+")
    return digits.isascii() and digits.isdigit() and int(digits) <= 255


def _first_pixel_problem(strings: np.ndarray, path: Path) -> DataError:
    """The slow, exact diagnosis, run only once the fast parse has found something wrong."""
    for row, text in enumerate(strings):
        tokens = str(text).split()
        bad = next((t for t in tokens if not _is_pixel(t)), None)
        if bad is not None:
            return DataError(f"{path}:{_line(row)}: pixel value {bad!r} is not an integer in 0..255")
        if len(tokens) != N_PIXELS:
            return DataError(f"{path}:{_line(row)}: expected {N_PIXELS} pixel values, found {len(tokens)}")
    return DataError(f"{path}: pixel column could not be parsed")


def parse_pixels(strings: np.ndarray, path: Path) -> np.ndarray:
    """Space-separated pixel strings -> (N, 2304) uint8 with one C-level parse of the whole column."""
    n = len(strings)
    try:
        raw = (f" {_ROW_END} ".join(strings) + f" {_ROW_END}").encode("ascii")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(raw, dtype=np.int64, sep=" ")  # int64: huge tokens saturate, never wrap
    except (ValueError, TypeError, UnicodeEncodeError):
        raise _first_pixel_problem(strings, path) from None
    ends = np.flatnonzero(values == _ROW_END)
    if ends.size != n or values.size != n * (N_PIXELS + 1) or not np.all(ends % (N_PIXELS + 1) == N_PIXELS):
        raise _first_pixel_problem(strings, path)
    pixels = values.reshape(n, N_PIXELS + 1)[:, :N_PIXELS]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise _first_pixel_problem(strings, path)
    return pixels.astype(np.uint8)


def _parse_integers(column: np.ndarray, path: Path, what: str) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
    if bad.size:
        row = int(bad[0])
        problem = f"missing {what}" if str(column[row]).strip() == "" else f"{what} {column[row]!r} is not an integer"
        raise DataError(f"{path}:{_line(row)}: {problem}")
    return numbers.astype(np.int64)


def _parse_labels(column: np.ndarray, path: Path) -> np.ndarray:
    labels = _parse_integers(column, path, "label")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{path}:{_line(row)}: label {column[row]!r} is not one of 0..{len(CLASS_NAMES) - 1}")
    return labels


def _parse_ids(column: np.ndarray, path: Path) -> np.ndarray:
    ids = _parse_integers(column, path, "id")
    dup = pd.Series(ids).duplicated(keep="first").to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        raise DataError(f"{path}:{_line(row)}: duplicate id {ids[row]} (first on line {_line(first)})")
    return ids


def _parse_usage(column: np.ndarray, path: Path) -> np.ndarray:
    usage = np.array([str(u).strip() for u in column], dtype=object)
    bad = np.flatnonzero(~np.isin(usage, USAGES))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"{path}:{_line(row)}: Usage {column[row]!r} is not one of {', '.join(USAGES)}")
    return usage


def read_faces(path: str | Path, require_labels: bool = False) -> Faces:
    """Read any of the accepted CSV formats; raise DataError (one line) on bad input."""
    path = Path(path)
    df = _read_table(path)
    pixels = parse_pixels(_column(df, path, "pixels", required=True), path)
    label_col = _column(df, path, "label", required=require_labels)
    id_col = _column(df, path, "id", required=False)
    usage_col = _column(df, path, "usage", required=False)
    return Faces(
        images=torch.from_numpy(pixels).view(-1, 1, SIDE, SIDE),
        labels=None if label_col is None else torch.from_numpy(_parse_labels(label_col, path)),
        ids=np.arange(len(df), dtype=np.int64) if id_col is None else _parse_ids(id_col, path),
        usage=None if usage_col is None else _parse_usage(usage_col, path),
    )


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out round(val_fraction * n_c) random rows of each class c; returns sorted index arrays."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        val.append(rows[: round(val_fraction * rows.size)])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx)
    return train_idx, val_idx


def train_val_split(faces: Faces, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The challenge's own Training/PublicTest split when a Usage column exists, else a stratified one."""
    if faces.labels is None:
        raise ValueError("a training file needs labels")
    if faces.usage is not None:
        train_idx = np.flatnonzero(faces.usage == "Training")
        val_idx = np.flatnonzero(faces.usage == "PublicTest")
        return train_idx, val_idx, {"method": "usage", "train": "Training", "val": "PublicTest"}
    train_idx, val_idx = stratified_split(faces.labels.numpy(), val_fraction, seed)
    return train_idx, val_idx, {"method": "stratified", "val_fraction": val_fraction, "seed": seed}


def recorded_split(faces: Faces, split: dict) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out rows of the split a checkpoint records (the third value of train_val_split)."""
    train_idx, val_idx, _ = train_val_split(faces, split.get("val_fraction", 0.1), split.get("seed", 0))
    return train_idx, val_idx


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the pixels on the 0..1 scale; computed on the training split only."""
    x = images.to(torch.float64) / 255
    return float(x.mean()), float(x.std())


def train_augmentation(rotate: float = 10.0, shift: float = 0.1, scale: float = 0.1,
                       erase: float = 0.5) -> v2.Compose:
    """Random per sample: flip, small affine (rotation, scale, translation), random erasing."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=rotate, translate=(shift, shift), scale=(1 - scale, 1 + scale)),
        v2.RandomErasing(p=erase, scale=(0.02, 0.15), value=0),
    ])


class FaceDataset(torch.utils.data.Dataset):
    """uint8 faces -> float (1, 48, 48) in 0..1, augmented when a transform is given; with teacher
    logits (N, 7), each item is (face, label, teacher logits) for distillation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Compose | None = None,
                 teacher_logits: torch.Tensor | None = None):
        self.images, self.labels, self.transform, self.teacher_logits = images, labels, transform, teacher_logits

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        x = self.images[i].float().div_(255)
        if self.transform is not None:
            x = self.transform(x)
        if self.teacher_logits is None:
            return x, self.labels[i]
        return x, self.labels[i], self.teacher_logits[i]
