"""FER2013 CSV files -> uint8 image tensors, the held-out split, and batched augmentation on any device.

Accepted formats (header names matched case-insensitively, spaces stripped; plain, or compressed as csv_gzip.py
reads where it is present):
  training  label,feature           test  id,feature
  fer2013.csv  emotion,pixels,Usage  icml_face_data.csv  emotion, Usage, pixels
"""

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

try:
    import csv_gzip
except ModuleNotFoundError as e:  # the HW8 hand-in ships without it: it reads plain CSV files only
    if e.name != "csv_gzip":
        raise
    csv_gzip = None
COMPRESSED_READ_ERRORS = csv_gzip.READ_ERRORS if csv_gzip is not None else ()  # what a damaged one raises

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIDE = 48
N_PIXELS = SIDE * SIDE
USAGES = ("Training", "PublicTest", "PrivateTest")
# The held-out split of a file without a Usage column: 10 % of each class, whole groups of identical faces.
DEFAULT_SPLIT = {"method": "grouped", "val_fraction": 0.1, "seed": 0}
CHUNK_ROWS = 512  # rows parsed at a time: memory near the uint8 faces plus a fixed working set
MIN_ROW_BYTES = 2 * N_PIXELS  # the shortest valid row: one digit and one separator per pixel
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


def _compression(path: Path) -> str | None:
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if not magic:
        raise DataError(f"{path}:1: empty file")
    return csv_gzip.COMPRESSION if csv_gzip is not None and magic == csv_gzip.MAGIC else None


def _text_bytes(path: Path, compression: str | None) -> int:
    """The file's size as text: a plain file is its own size, a compressed one's is recorded in it."""
    return path.stat().st_size if compression is None else csv_gzip.text_bytes(path)


def _read_chunks(path: Path, compression: str | None) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of CHUNK_ROWS rows, every column as text (validated later with line numbers),
    headers lower-cased and stripped; raises DataError on what pandas cannot parse."""
    try:
        with pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True,
                         compression=compression, chunksize=CHUNK_ROWS) as chunks:
            for chunk in chunks:
                chunk.columns = [str(c).strip().lower() for c in chunk.columns]
                yield chunk
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}:1: empty file") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed CSV: {str(e).strip().splitlines()[-1]}") from None
    except COMPRESSED_READ_ERRORS as e:
        raise DataError(f"{path}: unreadable {compression}: {e}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file") from None


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


def _first_pixel_problem(strings: np.ndarray, path: Path, first_row: int) -> DataError:
    """The slow, exact diagnosis, run only once the fast parse has found something wrong."""
    for row, text in enumerate(strings, first_row):
        tokens = str(text).split()
        bad = next((t for t in tokens if not _is_pixel(t)), None)
        if bad is not None:
            return DataError(f"{path}:{_line(row)}: pixel value {bad!r} is not an integer in 0..255")
        if len(tokens) != N_PIXELS:
            return DataError(f"{path}:{_line(row)}: expected {N_PIXELS} pixel values, found {len(tokens)}")
    return DataError(f"{path}: pixel column could not be parsed")


def parse_pixels(strings: np.ndarray, path: Path, first_row: int = 0) -> np.ndarray:
    """Space-separated pixel strings -> (N, 2304) uint8 with one C-level parse of them all; first_row: the
    row index of strings[0] in the file, for the line numbers of errors."""
    n = len(strings)
    try:
        raw = (f" {_ROW_END} ".join(strings) + f" {_ROW_END}").encode("ascii")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(raw, dtype=np.int64, sep=" ")  # int64: huge tokens saturate, never wrap
    except (ValueError, TypeError, UnicodeEncodeError):
        raise _first_pixel_problem(strings, path, first_row) from None
    ends = np.flatnonzero(values == _ROW_END)
    if ends.size != n or values.size != n * (N_PIXELS + 1) or not np.all(ends % (N_PIXELS + 1) == N_PIXELS):
        raise _first_pixel_problem(strings, path, first_row)
    pixels = values.reshape(n, N_PIXELS + 1)[:, :N_PIXELS]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise _first_pixel_problem(strings, path, first_row)
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
    """Read any of the accepted CSV formats; raise DataError (one line) on bad input. The pixels are parsed
    CHUNK_ROWS rows at a time into one uint8 array, so memory grows with the faces, not with their text."""
    path = Path(path)
    compression = _compression(path)
    # room for the most rows the file's size allows: pages never written are never resident
    pixels = np.empty((_text_bytes(path, compression) // MIN_ROW_BYTES + 1, N_PIXELS), dtype=np.uint8)
    columns: dict[str, list[np.ndarray]] = {"label": [], "id": [], "usage": []}
    n = 0
    for chunk in _read_chunks(path, compression):
        if chunk.empty:  # a file of only a header reads as one empty chunk
            continue
        if n + len(chunk) > len(pixels):  # only where a compressed file's recorded size wrapped past 4 GiB
            pixels = np.concatenate([pixels[:n], np.empty((max(n, len(chunk)), N_PIXELS), np.uint8)])
        pixels[n:n + len(chunk)] = parse_pixels(_column(chunk, path, "pixels", required=True), path, n)
        for key, parts in columns.items():
            column = _column(chunk, path, key, required=key == "label" and require_labels)
            if column is not None:
                parts.append(column)
        n += len(chunk)
    if n == 0:
        raise DataError(f"{path}:2: no data rows after the header")
    label_col, id_col, usage_col = (np.concatenate(parts) if parts else None for parts in columns.values())
    return Faces(
        images=torch.from_numpy(pixels[:n]).view(-1, 1, SIDE, SIDE),
        labels=None if label_col is None else torch.from_numpy(_parse_labels(label_col, path)),
        ids=np.arange(n, dtype=np.int64) if id_col is None else _parse_ids(id_col, path),
        usage=None if usage_col is None else _parse_usage(usage_col, path),
    )


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out round(val_fraction * n_c) random rows of each class c; returns sorted index arrays.
    The split of the first releases: copies of one face can land on both sides (see grouped_split)."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        val.append(rows[: round(val_fraction * rows.size)])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx)
    return train_idx, val_idx


def duplicate_groups(images: torch.Tensor) -> np.ndarray:
    """One group id per face; faces with identical pixels share it (ids in order of first appearance)."""
    rows = images.reshape(len(images), -1).numpy()
    codes, _ = pd.factorize(np.array([row.tobytes() for row in rows], dtype=object))  # exact bytes, no hash
    return codes


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified like stratified_split, but by whole groups of identical faces, so that no held-out face
    has a copy in the training part (a copy would be a memorised answer). A group counts under the label
    of its first row; each class gets shuffled groups until round(val_fraction * its rows) are held out."""
    rng = np.random.default_rng(seed)
    first = np.unique(groups, return_index=True)[1]
    group_labels, sizes = labels[first], np.bincount(groups)
    val_groups = []
    for c in np.unique(group_labels):
        chosen = rng.permutation(np.flatnonzero(group_labels == c))
        target = round(val_fraction * sizes[chosen].sum())
        n = np.searchsorted(np.cumsum(sizes[chosen]), target) + 1 if target else 0  # first prefix reaching it
        val_groups.append(chosen[:n])
    held_out = np.isin(groups, np.concatenate(val_groups))
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def train_val_split(faces: Faces, val_fraction: float, seed: int,
                    method: str = DEFAULT_SPLIT["method"]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The challenge's own Training/PublicTest split when a Usage column exists, else a stratified one by
    groups of identical faces ("grouped") or, for models of the first releases, by rows ("stratified")."""
    if faces.labels is None:
        raise ValueError("a training file needs labels")
    if faces.usage is not None:
        train_idx = np.flatnonzero(faces.usage == "Training")
        val_idx = np.flatnonzero(faces.usage == "PublicTest")
        return train_idx, val_idx, {"method": "usage", "train": "Training", "val": "PublicTest"}
    labels = faces.labels.numpy()
    if method == "stratified":
        train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    elif method == "grouped":
        train_idx, val_idx = grouped_split(labels, duplicate_groups(faces.images), val_fraction, seed)
    else:
        raise ValueError(f"unknown split method {method!r}")
    return train_idx, val_idx, {"method": method, "val_fraction": val_fraction, "seed": seed}


def recorded_split(faces: Faces, split: dict) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out rows of the split a checkpoint records (the third value of train_val_split)."""
    if split["method"] == "usage":
        return train_val_split(faces, 0.0, 0)[:2]
    train_idx, val_idx, _ = train_val_split(faces, split["val_fraction"], split["seed"], split["method"])
    return train_idx, val_idx


def heldout_faces(train_csv: str | Path, split: dict) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The held-out faces, their labels, and which of them have no copy in the training part."""
    faces = read_faces(train_csv, require_labels=True)
    train_idx, val_idx = recorded_split(faces, split)
    groups = duplicate_groups(faces.images)
    clean = ~np.isin(groups[val_idx], groups[train_idx])
    return faces.images[val_idx], faces.labels[val_idx], clean


def common_split(splits: list[dict | None]) -> dict:
    """The one split that several models record (their checkpoints' "split"): an ensemble or a set of
    teachers is only scored on faces none of its members trained on."""
    if None in splits:
        raise ValueError("a model records no split, so its held-out faces are unknown")
    distinct = {json.dumps(s, sort_keys=True) for s in splits}
    if len(distinct) != 1:
        raise ValueError(f"the models record different splits: {sorted(distinct)}")
    return splits[0]


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the pixels on the 0..1 scale; computed on the training split only."""
    x = images.to(torch.float64) / 255
    return float(x.mean()), float(x.std())


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index tensors of the full batches of one seeded permutation of n rows, on the generator's device
    (the last partial batch is dropped, so every step has the same shape)."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    return list(order[: n - n % batch_size].view(-1, batch_size))


def centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """The middle side x side pixels of each face (B, 1, S, S): what a crop-trained model sees of a face."""
    top = (x.shape[-1] - side) // 2
    return x[:, :, top:top + side, top:top + side]


def augment(x: torch.Tensor, generator: torch.Generator, rotate: float, shift: float, scale: float,
            erase: float, out_side: int | None = None, pixels: int | None = None) -> torch.Tensor:
    """Random per face, as one batched operation on x's device: horizontal flip, rotation up to `rotate`
    degrees, zoom by up to +-scale, translation by up to +-shift of the side (all in one grid_sample,
    black outside the face), then, with probability `erase`, one black rectangle of 2-15 % of the area
    (aspect 0.3-3.3, as torchvision's RandomErasing). x: float (B, 1, S, S) on the 0..1 scale. out_side:
    the faces come out as that many pixels a side, the middle of the transformed face at its own scale (the
    shift makes it a random crop), from the same grid_sample: a smaller input costs nothing extra here. pixels: that
    view sampled on a coarser grid of this many pixels a side (progressive resizing: the same face, fewer FLOPs)."""
    b, _, side, _ = x.shape
    out_side = out_side or side
    pixels = pixels or out_side
    u = torch.rand(b, 10, generator=generator, device=x.device)
    # Inverse map of each output pixel to the input (normalised coordinates): undo the translation, then
    # the rotation and zoom; negating the x row mirrors the face.
    angle = (2 * u[:, 0] - 1) * math.radians(rotate)
    zoom = 1 + (2 * u[:, 1] - 1) * scale
    tx, ty = (2 * u[:, 2] - 1) * 2 * shift, (2 * u[:, 3] - 1) * 2 * shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                         torch.stack([-sin, cos, sin * tx - cos * ty], 1)], 1)
    theta[:, 0] *= torch.where(u[:, 4] < 0.5, -1.0, 1.0)[:, None]
    theta[:, :, :2] *= out_side / side  # the output spans the middle out_side pixels of the input, not all of it
    grid = F.affine_grid(theta, [b, 1, pixels, pixels], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    side = pixels
    # Random erasing: a rectangle of area a and aspect r, placed uniformly, on a random subset of faces.
    area = (0.02 + 0.13 * u[:, 5]) * side * side
    aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * u[:, 6])
    h = (area * aspect).sqrt().round().clamp(1, side - 1)
    w = (area / aspect).sqrt().round().clamp(1, side - 1)
    top = (u[:, 7] * (side - h + 1)).floor()
    left = (u[:, 8] * (side - w + 1)).floor()
    r = torch.arange(side, device=x.device, dtype=x.dtype)
    rows = (r >= top[:, None]) & (r < (top + h)[:, None])
    cols = (r >= left[:, None]) & (r < (left + w)[:, None])
    box = rows[:, :, None] & cols[:, None, :] & (u[:, 9] < erase)[:, None, None]
    return x.masked_fill(box[:, None], 0.0)


def mix(x: torch.Tensor, generator: torch.Generator, rng: np.random.Generator, mixup: float,
        cutmix: float) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) with a shuffled copy of the batch: returns
    (mixed faces, the partner order, lam), the loss being lam * loss(y) + (1 - lam) * loss(y[order]).
    alpha 0 turns each off; with both on, each batch takes one of them at random. lam and the CutMix
    box come from the host rng, so nothing waits for the device."""
    choices = [name for name, alpha in (("mixup", mixup), ("cutmix", cutmix)) if alpha > 0]
    if not choices:
        return x, None, 1.0
    kind = choices[rng.integers(len(choices))]
    lam = float(rng.beta(mixup, mixup) if kind == "mixup" else rng.beta(cutmix, cutmix))
    order = torch.randperm(len(x), generator=generator, device=x.device)
    if kind == "mixup":
        return lam * x + (1 - lam) * x[order], order, lam
    side = x.shape[-1]
    cut = round(side * math.sqrt(1 - lam))
    cy, cx = rng.integers(side, size=2)
    top, bottom = max(cy - cut // 2, 0), min(cy + cut - cut // 2, side)
    left, right = max(cx - cut // 2, 0), min(cx + cut - cut // 2, side)
    x = x.clone()
    x[:, :, top:bottom, left:right] = x[order][:, :, top:bottom, left:right]
    return x, order, 1 - (bottom - top) * (right - left) / side**2  # lam of the box actually pasted
