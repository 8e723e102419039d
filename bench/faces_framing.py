"""Fit, then measure, how faces.py finds and frames faces: FER2013 faces upscaled into larger pictures.

  python -m bench.faces_framing <train.csv> [--model PATH ...] [--fit-faces 3000]

The faces come from the released models' own split (the split their files record). Training rows fit the
mapping from the detector's box to FER2013's frame (median offsets and size ratio), the template of the five
landmarks in that frame (their median places), and ONet's threshold (the lowest whose boxes on no face stay
within FALSE_SHARE of all boxes on the training sheets); held-out rows, which the models never saw, then
measure faces.py as committed: the share of faces found, the share of boxes that are no face, and the
accuracy on the found faces' crops against the same faces' own 48x48 pixels, framed by the box alone, the
landmarks alone, and their mean (faces.fer_frame).

Each sheet is 10 x 4 tiles of 256 pixels; every face is upscaled (bicubic) to a random side of 144-224
pixels at a random place in its tile. The background is 1/f noise, the spectrum of natural scenes: a plain
one gives the detector nothing to mistake for a face, real photos and this noise do.
"""

import argparse

import numpy as np
import torch
from PIL import Image

import faces
from dataset import read_faces, recorded_split
from detector import MTCNN
from predict import ensemble_proba, load_for_inference, released
from quantized import load_model

COLS, ROWS, TILE, SIZES = 10, 4, 256, (144, 224)
FALSE_SHARE = 0.001  # the threshold's rule: a fiftieth of the 5 % target, as real clutter fools detectors more
THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)  # ONet's thresholds tried


def natural_noise(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """A gray picture of 1/f noise: random phases under the amplitude spectrum of natural images."""
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(height, width))
    spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
    noise = np.fft.irfft2(spectrum, s=(height, width))
    noise = (noise - noise.mean()) / noise.std()
    return Image.fromarray(np.clip(128 + 40 * noise, 0, 255).astype(np.uint8))


def face_sheet(images: torch.Tensor, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Up to COLS x ROWS faces on 1/f noise; returns the picture and each face's frame (x, y, side)."""
    sheet = natural_noise(ROWS * TILE, COLS * TILE, rng)
    frames = []
    for i, face in enumerate(images):
        side = int(rng.integers(SIZES[0], SIZES[1] + 1))
        x = (i % COLS) * TILE + int(rng.integers(0, TILE - side + 1))
        y = (i // COLS) * TILE + int(rng.integers(0, TILE - side + 1))
        sheet.paste(Image.fromarray(face[0].numpy()).resize((side, side), Image.Resampling.BICUBIC), (x, y))
        frames.append((x, y, side))
    return np.asarray(sheet), frames


def owner(box: tuple, frames: list[tuple[int, int, int]]) -> int | None:
    """The face whose frame holds the box's centre, if any."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return next((i for i, (x, y, s) in enumerate(frames) if x <= cx < x + s and y <= cy < y + s), None)


def sheets(images: torch.Tensor, seed: int, detector: MTCNN | None = None):
    """(sheet, frames, detections) for each sheet of COLS x ROWS faces, detected as photos are at upsampling 0."""
    rng = np.random.default_rng(seed)
    per_sheet = COLS * ROWS
    for start in range(0, len(images), per_sheet):
        picture, frames = face_sheet(images[start:start + per_sheet], rng)
        yield picture, frames, faces.detect(picture, 0, detector)


def fit(images: torch.Tensor) -> dict:
    """The mapping and the template, from each found face's best detection, and ONet's threshold, from
    detections down to the lowest tried."""
    loose = MTCNN.load(thresholds=(*faces.DETECTION_THRESHOLDS[:2], float(THRESHOLDS[0])))
    best_score, false_scores, ratios, places = [], [], [], []
    for _, frames, found in sheets(images, 0, loose):
        best: dict[int, faces.Detection] = {}
        for detection in found:
            i = owner(detection, frames)
            if i is None:
                false_scores.append(detection.score)
            elif i not in best or detection.score > best[i].score:
                best[i] = detection
        best_score.extend(best[i].score if i in best else -np.inf for i in range(len(frames)))
        for i, d in best.items():
            x, y, s = frames[i]
            w, h = d.right - d.left, d.bottom - d.top
            ratios.append(((x + s / 2 - (d.left + d.right) / 2) / w, (y + s / 2 - (d.top + d.bottom) / 2) / h,
                           s / ((w + h) / 2)))
            places.append((d.landmarks - (x, y)) / s)
    best_score, false_scores = np.array(best_score), np.array(false_scores)
    print(f"fit on {len(images)} training faces: ONet threshold, faces found, boxes on no face (share of all boxes)")
    threshold = None
    for t in THRESHOLDS:
        found, false = int((best_score > t).sum()), int((false_scores > t).sum())
        share = false / max(found + false, 1)
        print(f"  {t:5.2f}  {found / len(images):6.1%}  {false:4d} ({share:.2%})")
        if threshold is None and share <= FALSE_SHARE:
            threshold = float(t)
    fitted = {}
    for name, values in zip(("dx", "dy", "scale"), np.array(ratios).T, strict=True):
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        print(f"  {name}: median {median:+.3f}, interquartile {q1:+.3f} .. {q3:+.3f}")
        fitted[name] = round(float(median), 3)
    fitted["landmarks"] = tuple(tuple(round(float(v), 3) for v in point) for point in np.median(places, 0))
    return {**fitted, "threshold": threshold}


def accuracy(crops: list[torch.Tensor], labels: torch.Tensor, models: list) -> float:
    return (ensemble_proba(models, torch.stack(crops)).argmax(1) == labels).float().mean().item()


def measure(images: torch.Tensor, labels: torch.Tensor, models: list) -> None:
    """faces.py as committed on held-out faces: found, false boxes, accuracy of crops against own pixels."""
    framings = {"box alone": lambda d: faces.box_frame(d, faces.FRAMING),
                "landmarks alone": lambda d: faces.landmark_frame(d.landmarks, faces.FRAMING)}
    crops: dict[str, dict[int, torch.Tensor]] = {name: {} for name in [*framings, "faces.fer_frame (mean)"]}
    n_false, n_boxes, offset = 0, 0, 0
    for picture, frames, found in sheets(images, 1):
        gray = Image.fromarray(picture)
        n_boxes += len(found)
        for detection in found:
            i = owner(detection, frames)
            if i is None or offset + i in crops["box alone"]:
                n_false += 1
                continue
            for name, frame_of in framings.items():
                cx, cy, side = frame_of(detection)
                square = round(cx - side / 2), round(cy - side / 2), max(round(side), 1)
                crops[name][offset + i] = faces.crop(gray, [square])[0]
            crops["faces.fer_frame (mean)"][offset + i] = faces.crop(gray, [faces.fer_frame(detection)])[0]
        offset += len(frames)
    idx = sorted(crops["box alone"])
    own = ensemble_proba(models, images).argmax(1) == labels
    own_found = own[idx].float().mean().item()
    print(f"held-out faces: {len(images)}; found {len(idx)} ({len(idx) / len(images):.1%}); boxes {n_boxes}, "
          f"on no face {n_false} ({n_false / max(n_boxes, 1):.1%})")
    print(f"accuracy (ensemble, flip TTA): own pixels, all faces {own.float().mean().item():.2%}; "
          f"own pixels, found faces {own_found:.2%}")
    for name, by_face in crops.items():
        right = accuracy([by_face[i] for i in idx], labels[idx], models)
        print(f"  detected crops framed by {name}: {right:.2%} = {right / own_found:.3f} x own")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train_csv")
    p.add_argument("--model", action="append", help="default: the released ensemble")
    p.add_argument("--fit-faces", type=int, default=3000, help="training faces the mapping is fitted on")
    args = p.parse_args()
    paths = args.model or released("fast")
    torch.set_num_threads(2)
    data = read_faces(args.train_csv, require_labels=True)
    train_idx, val_idx = recorded_split(data, load_model(paths[0])[1]["split"])
    rng = np.random.default_rng(0)
    fitted = fit(data.images[rng.permutation(train_idx)[:args.fit_faces]])
    committed = {**faces.FRAMING, "threshold": faces.DETECTION_THRESHOLDS[2]}
    print(f"fitted: {fitted}")
    print(f"faces.FRAMING, ONet threshold: {committed}{'' if fitted == committed else '  (differs from the fit)'}")
    measure(data.images[val_idx], data.labels[val_idx], [load_for_inference(m) for m in paths])


if __name__ == "__main__":
    main()
