"""faces.py's face detector (MTCNN, detector.py) on natural photos with and without faces, and on mosaics of
held-out FER2013 faces: the boxes it draws, the faces it finds, and the seconds it takes.

  python -m bench.detector --photos scikit_image-*.whl [--train ../shared/fer2013/train.csv.gz] [--pictures 10]
                           [--thresholds 0.6 0.7 0.7]

Photos: scikit-image's sample pictures (skimage/data in its wheel: `pip download --no-deps --only-binary=:all:
scikit-image`; a folder of the same files works too), read from the wheel without installing it. Two of them
hold a face (FACES: a point inside each, marked by hand); every other box is a false one. Mosaics: 10 x 10
held-out faces a picture, as bench/faces_grid.py builds them (the same faces, 144 pixels, flat grey); a face
is found when a box is centred in its cell, and every other box is extra. Both run faces.detect as `python
faces.py picture` does (photo upsampling), on the threads PyTorch takes by default; --thresholds tries
other face probabilities for PNet, RNet and ONet than faces.DETECTION_THRESHOLDS (such as the published ones).
"""

import argparse
import io
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import faces
from bench.faces_grid import GRID, cell_of, grid_picture
from dataset import duplicate_groups, read_faces, recorded_split
from detector import MTCNN
from predict import released
from quantized import load_model

FACES = {"astronaut.png": [(223, 116)], "camera.png": [(228, 157)]}  # a point inside each face, by hand
LEFT_OUT = {"chessboard_GRAY.png", "chessboard_RGB.png", "motorcycle_right.png"}  # 8x8 boards; a stereo twin
SUFFIXES = (".png", ".jpg")


def photos(source: Path) -> dict[str, np.ndarray]:
    """The sample pictures as RGB, by file name: from scikit-image's wheel, or from a folder."""
    if source.is_dir():
        files = {p.name: p.read_bytes() for p in sorted(source.iterdir())}
    else:
        with zipfile.ZipFile(source) as wheel:
            files = {Path(n).name: wheel.read(n) for n in sorted(wheel.namelist())
                     if n.startswith("skimage/data/")}
    return {name: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for name, data in files.items()
            if name.endswith(SUFFIXES) and name not in LEFT_OUT}


def timed_detect(rgb: np.ndarray, cascade: MTCNN) -> tuple[list[faces.Detection], float]:
    start = time.perf_counter()
    found = faces.detect(rgb, faces.PHOTO_UPSAMPLE, cascade)
    return found, time.perf_counter() - start


def on_photos(pictures: dict[str, np.ndarray], cascade: MTCNN) -> None:
    false_free, false_faces, found_faces, times = 0, 0, 0, []
    print(f"photos: {len(pictures)} pictures, {sum(map(len, FACES.values()))} faces in {len(FACES)} of them")
    for name, rgb in pictures.items():
        found, seconds = timed_detect(rgb, cascade)
        times.append(seconds)
        marks = FACES.get(name, [])
        hit = [any(d.left <= x < d.right and d.top <= y < d.bottom for d in found) for x, y in marks]
        extra = sum(not any(d.left <= x < d.right and d.top <= y < d.bottom for x, y in marks) for d in found)
        found_faces += sum(hit)
        if marks:
            false_faces += extra
        else:
            false_free += extra
        boxes = ", ".join(f"({d.left:.0f}, {d.top:.0f}, {d.right:.0f}, {d.bottom:.0f}; {d.score:.3f})" for d in found)
        print(f"  {name:<24} {rgb.shape[1]:>4}x{rgb.shape[0]:<4} faces {sum(hit)}/{len(marks)}, false boxes {extra}, "
              f"{seconds * 1000:5.0f} ms  {boxes}")
    print(f"photos without a face: {len(pictures) - len(FACES)}, false boxes on them {false_free}; photos with a "
          f"face: found {found_faces} of {sum(map(len, FACES.values()))}, false boxes {false_faces}; "
          f"median {statistics.median(times) * 1000:.0f} ms a picture (max {max(times) * 1000:.0f})")


def on_mosaics(train_csv: str, pictures: int, cascade: MTCNN) -> None:
    data = read_faces(train_csv, require_labels=True)
    train_idx, val_idx = recorded_split(data, load_model(released("default")[0])[1]["split"])
    groups = duplicate_groups(data.images)
    clean = val_idx[~np.isin(groups[val_idx], groups[train_idx])]
    chosen = np.random.default_rng(0).permutation(clean)[:pictures * GRID * GRID]  # bench/faces_grid.py's faces
    counts, times = [], []
    for n in range(pictures):
        rgb, corners = grid_picture(data.images[chosen[n * GRID * GRID:(n + 1) * GRID * GRID]])
        found, seconds = timed_detect(rgb, cascade)
        cells = [cell_of((d.left, d.top, (d.right - d.left + d.bottom - d.top) / 2), corners) for d in found]
        hit = len({c for c in cells if c is not None})
        counts.append((hit, len(found) - hit))
        times.append(seconds)
        print(f"  mosaic {n + 1}: found {hit}/{len(corners)}, extra boxes {len(found) - hit}, {seconds:.2f} s")
    hits, extras = np.array(counts).T
    print(f"mosaics: {pictures} of {GRID * GRID} held-out faces ({rgb.shape[1]}x{rgb.shape[0]}); found per "
          f"picture {hits.mean():.1f} (fewest {hits.min()}), extra boxes per picture {extras.mean():.1f} (most "
          f"{extras.max()}); median {statistics.median(times):.2f} s a picture")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", required=True, type=Path, help="scikit-image's wheel, or a folder of its pictures")
    p.add_argument("--train", help="the training CSV, for the mosaics of held-out faces (none: photos only)")
    p.add_argument("--pictures", type=int, default=10, help="mosaics of 100 faces")
    p.add_argument("--thresholds", type=float, nargs=3, default=faces.DETECTION_THRESHOLDS,
                   help="face probabilities PNet, RNet and ONet keep")
    args = p.parse_args()
    cascade = MTCNN.load(thresholds=tuple(args.thresholds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; thresholds "
          f"{tuple(args.thresholds)}; photo upsampling {faces.PHOTO_UPSAMPLE} (faces down to "
          f"{faces.SMALLEST_FACE / 2**faces.PHOTO_UPSAMPLE:.0f} pixels), pictures shrunk to {faces.DETECT_SIDE} a side")
    on_photos(photos(args.photos), cascade)
    if args.train:
        on_mosaics(args.train, args.pictures, cascade)


if __name__ == "__main__":
    main()
