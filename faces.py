"""Expressions of the faces in photos, folders, videos and cameras: find each face, crop it as FER2013 framed
its faces, classify it with predict.py's models, and draw the result on a copy of the picture.

  python faces.py [photo | folder | video | camera-index ...] [--out faces_out] [--model PATH ...]

Writes DIR/faces.csv (one row per face: source, frame, the square the model saw in the source's pixels,
the label and the seven probabilities) and an annotated copy of every picture and video. With no input
it runs on the sample photo that matplotlib ships. Faces are found by MTCNN (detector.py). Everything is
written to a temporary folder inside DIR first and moved into place at the end, so nothing is half-written;
a file that cannot be read is named in one line and skipped, and the run then ends with how many there
were and exit code 1 (2 when none could be read).
"""

import argparse
import csv
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from tqdm import tqdm

import utils
from dataset import CLASS_NAMES, SIDE, DataError
from detector import MTCNN, weights_problem
from predict import RELEASED, ensemble_proba, load_for_inference, model_file_problem, released
from utils import keep_freed_memory

# FER2013's frame of a face from MTCNN's box (its centre moved by dx, dy of the box's width and height, its side
# scale times the box's) and from its landmarks (their places in a frame of side 1: eyes, nose, mouth's corners):
# fitted on upscaled training faces of the released models' split by bench/faces_framing.py (runs/faces/framing.log)
FRAMING = {"dx": 0.016, "dy": -0.005, "scale": 1.073,
           "landmarks": ((0.316, 0.389), (0.691, 0.383), (0.504, 0.6), (0.349, 0.785), (0.661, 0.78))}
# face probability that PNet, RNet and ONet keep: PNet's and RNet's below the published 0.6 and 0.7 find more
# held-out faces in mosaics (bench/detector.py); ONet's keeps boxes on no face near bench/faces_framing.py's rule
# on its training sheets, where the next step up would lose more faces than false boxes (docs/faces.md)
DETECTION_THRESHOLDS = (0.4, 0.4, 0.9)
SMALLEST_FACE = 40  # pixels: the narrowest face searched for at upsampling 0; each step of upsampling halves it
PHOTO_UPSAMPLE = 1  # photos: faces down to 20 pixels wide, at about 4x the work of 0
VIDEO_UPSAMPLE = 0  # video frames: faces of 40 pixels and more, at frame rate
OVERLAP_LIMIT = 0.3  # two faces' boxes rarely share a third of the smaller one; a second box on one face does
AV_LOG_QUIET = -8  # FFmpeg's log level that prints nothing
CROP_FILTER = Image.Resampling.BICUBIC  # shrinking a face to 48x48: sharper than bilinear, nearer FER's pixels
DETECT_SIDE = 1280  # detection runs on pictures at most this long a side: big photos cost seconds otherwise
MAX_ASPECT = 20  # a picture's long side over its short one: a panorama fits, a strip too thin for a face does not
JPEG_REDUCTIONS = (1, 2, 4, 8)  # the scales, 1/n, at which libjpeg decodes a baseline JPEG without its full size
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
COLUMNS = ["source", "frame", "x", "y", "w", "h", "label", *(f"p_{name}" for name in CLASS_NAMES)]


class InputError(ValueError):
    """An input that cannot be read; the message is one line naming it."""


class Detection(NamedTuple):
    """One face the detector found, in the picture's pixels."""

    left: float
    top: float
    right: float
    bottom: float
    score: float  # the detector's face probability
    landmarks: np.ndarray  # (5, 2) x, y of the eyes, the nose and the mouth's corners (detector.LANDMARKS)


@dataclass
class Face:
    frame: tuple[int, int, int]  # x, y, side of the square crop in the source's pixels
    probs: np.ndarray  # (7,)

    @property
    def label(self) -> str:
        return CLASS_NAMES[int(self.probs.argmax())]


def sample_photo() -> Path:
    import matplotlib.cbook  # only here: the sample photo is the one use, and matplotlib takes a while to import

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@functools.cache
def face_detector() -> MTCNN:
    """The MTCNN cascade, loaded on first use (main and serve.main check first that its weights are there)."""
    return MTCNN.load(thresholds=DETECTION_THRESHOLDS)


def detect(picture: np.ndarray, upsample: int, detector: MTCNN | None = None) -> list[Detection]:
    """The faces of an RGB (H, W, 3) or gray (H, W) uint8 picture, down to SMALLEST_FACE / 2**upsample pixels
    wide, best first, one detection per face."""
    rgb = picture if picture.ndim == 3 else np.repeat(picture[:, :, None], 3, 2)
    scale = min(1.0, DETECT_SIDE / max(rgb.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    boxes, landmarks = (detector or face_detector()).detect(rgb, SMALLEST_FACE * scale / 2**upsample)
    return drop_overlaps([Detection(*map(float, box[:4] / scale), float(box[4]), points / scale)
                          for box, points in zip(boxes, landmarks, strict=True)])


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The share of the smaller box that lies inside the other: 1 for a box within a box, as IoU would not say."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def drop_overlaps(boxes: list[tuple], limit: float = OVERLAP_LIMIT) -> list[tuple]:
    """Best score first, each box (left, top, right, bottom, score, ...) kept unless it overlaps a kept one by
    more than limit: one box per face."""
    kept: list[tuple] = []
    for box in sorted(boxes, key=lambda b: -b[4]):
        if all(overlap(box, other) <= limit for other in kept):
            kept.append(box)
    return kept


def box_frame(box: tuple, framing: dict) -> tuple[float, float, float]:
    """FER2013's frame as the detector's box predicts it: (centre x, centre y, side)."""
    left, top, right, bottom = box[:4]
    w, h = right - left, bottom - top
    cx, cy = (left + right) / 2 + framing["dx"] * w, (top + bottom) / 2 + framing["dy"] * h
    return cx, cy, (w + h) / 2 * framing["scale"]


def landmark_frame(landmarks: np.ndarray, framing: dict) -> tuple[float, float, float]:
    """FER2013's frame as the five landmarks predict it: the square whose copy of framing's template (the
    landmarks' places in a frame of side 1) fits them best in least squares, scaled and moved, not turned."""
    template = np.asarray(framing["landmarks"])
    t, p = template - template.mean(0), landmarks - landmarks.mean(0)
    side = float((p * t).sum() / (t * t).sum())
    corner = landmarks.mean(0) - side * template.mean(0)
    return float(corner[0]) + side / 2, float(corner[1]) + side / 2, side


def fer_frame(detection: Detection, framing: dict = FRAMING) -> tuple[int, int, int]:
    """The square FER2013 would have cropped around a face: (x, y, side), rounded to pixels. The mean of the
    box's and the landmarks' predictions, whose errors are partly independent (bench/faces_framing.py)."""
    (bx, by, bs), (lx, ly, ls) = box_frame(detection, framing), landmark_frame(detection.landmarks, framing)
    side = max(float(np.sqrt(bs * ls)) if ls > 0 else bs, 1.0)  # a degenerate fit leaves the box's side
    cx, cy = (bx + lx) / 2, (by + ly) / 2
    return round(cx - side / 2), round(cy - side / 2), max(round(side), 1)


def crop(gray: Image.Image, frames: list[tuple[int, int, int]]) -> torch.Tensor:
    """(N, 1, 48, 48) uint8 faces; a frame reaching past the edge is filled black, as training's shifts are."""
    faces = [np.asarray(gray.crop((x, y, x + s, y + s)).resize((SIDE, SIDE), CROP_FILTER)) for x, y, s in frames]
    return torch.from_numpy(np.stack(faces)).view(-1, 1, SIDE, SIDE) if faces else torch.empty(0, 1, SIDE, SIDE)


def classify(gray: Image.Image, detections: list[Detection], models: list, tta: bool) -> list[Face]:
    frames = [fer_frame(detection) for detection in detections]
    probs = ensemble_proba(models, crop(gray, frames), tta=tta) if frames else torch.empty(0, len(CLASS_NAMES))
    return [Face(frame, p.numpy()) for frame, p in zip(frames, probs, strict=True)]


def find_faces(rgb: np.ndarray, models: list, upsample: int, tta: bool) -> list[Face]:
    """Every face of one picture (H, W, 3 uint8), detected in colour and classified on its gray version."""
    gray = Image.fromarray(rgb).convert("L")  # ITU-R 601 luma, as FER2013's grayscale faces
    return classify(gray, detect(rgb, upsample), models, tta)


def draw(rgb: np.ndarray, faces: list[Face]) -> Image.Image:
    """The picture with each face's square, its label and the label's probability."""
    picture = Image.fromarray(rgb)
    pen = ImageDraw.Draw(picture)
    for face in faces:
        x, y, side = face.frame
        width = max(2, side // 60)
        font = ImageFont.load_default(size=max(12, side // 7))
        text = f"{face.label} {face.probs.max():.0%}"
        pen.rectangle((x, y, x + side, y + side), outline=(255, 210, 0), width=width)
        left, top, right, bottom = pen.textbbox((x, y), text, font=font, anchor="lb")
        pen.rectangle((left - width, top - width, right + width, bottom + width), fill=(255, 210, 0))
        pen.text((x, y), text, font=font, fill=(0, 0, 0), anchor="lb")
    return picture


def rows(source: str, frame: int, faces: list[Face]) -> list[list]:
    return [[source, frame, *face.frame[:2], face.frame[2], face.frame[2], face.label,
             *(f"{p:.4f}" for p in face.probs)] for face in faces]


@contextmanager
def opened_image(source: Path | IO[bytes], name: str, max_pixels: int | None = None) -> Iterator[Image.Image]:
    """An image file opened, its header's size checked, not yet decoded; what Pillow cannot read, now or while
    decoding inside the block, is an InputError of one line."""
    try:
        with Image.open(source) as image:
            check_size(image.size, name, max_pixels)
            yield image
    except InputError:
        raise
    except UnidentifiedImageError:  # (its own message names the file object, not the file)
        raise InputError(f"{name}: not a readable image (not an image format Pillow knows)") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: not a readable image ({str(e).strip() or type(e).__name__})") from None


def check_size(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    width, height = size
    if min(width, height) < 1:
        raise InputError(f"{name}: {width}x{height} pixels, an empty picture")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"{name}: {width}x{height} pixels, one side more than {MAX_ASPECT} times the other")
    if max_pixels and width * height > max_pixels:
        raise InputError(f"{name}: {width}x{height} pixels, more than {max_pixels:,}")


def upright_rgb(image: Image.Image) -> Image.Image:
    """The decoded picture, turned upright as its EXIF orientation says (phone photos), as RGB."""
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")


def read_image(source: Path | IO[bytes], name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    """An image file (a path or an open binary file) as RGB, upright, at its full size; max_pixels refuses a
    bigger picture before it is decoded."""
    with opened_image(source, name or str(source), max_pixels) as image:
        return np.asarray(upright_rgb(image))


def read_image_within(source: IO[bytes], name: str, max_pixels: int, decode_pixels: int,
                      max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An image file as RGB, upright and shrunk by a whole factor to at most max_side a side (more than half of
    it), and the upright source's width and height. A baseline JPEG is shrunk while it is decoded; any other
    picture is decoded whole, so one of more than decode_pixels is refused before it is (a progressive JPEG
    too: its decoder holds every coefficient, whatever the scale)."""
    with opened_image(source, name, max_pixels) as image:
        header = image.size
        if image.format == "JPEG" and "progressive" not in image.info:
            reduction = jpeg_reduction(header, max_side)
            image.draft("RGB", (max(1, header[0] // reduction), max(1, header[1] // reduction)))
        if image.width * image.height > decode_pixels:
            raise InputError(f"{name}: {header[0]}x{header[1]} pixels, more than {decode_pixels:,} to decode "
                             "(only a baseline JPEG is decoded smaller)")
        decoded = image.size
        ImageOps.exif_transpose(image, in_place=True)
        turned = image.size != decoded  # a quarter turn by its EXIF orientation
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        factor = -(-max(rgb.size) // max_side)
        return np.asarray(rgb.reduce(factor) if factor > 1 else rgb), header[::-1] if turned else header


def jpeg_reduction(size: tuple[int, int], max_side: int) -> int:
    """The JPEG decoder's reduction (1, 2, 4 or 8) for a picture of size: the least that brings it to max_side."""
    return next((r for r in JPEG_REDUCTIONS if -(-max(size) // r) <= max_side), JPEG_REDUCTIONS[-1])


def open_camera(index: int) -> cv2.VideoCapture:
    return cv2.VideoCapture(index)


def quiet_opencv() -> None:
    """OpenCV's own log lines ("[ WARN:0@0.1] global cap_v4l.cpp ... can't open camera by index") and FFmpeg's
    ("[mjpeg @ 0x...] huffman table decode error") off: each failure is reported in one line of ours instead."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(AV_LOG_QUIET))  # read when the first video is opened


def run_stream(capture: cv2.VideoCapture, source: str, out: Path, models: list, args: argparse.Namespace,
               total: int | None) -> list[list]:
    """The loop of videos and cameras alike: every frame detected, classified, drawn and written to out."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0  # a camera or a stream may not say; 25 plays at about real time
    writer, table, read = None, [], 0
    bar = tqdm(total=total, desc=source, unit="frame", disable=None, leave=False)
    try:
        for index in range(args.max_frames or sys.maxsize):
            ok, bgr = capture.read()
            if not ok:
                break
            read += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = find_faces(rgb, models, args.video_upsample, not args.no_tta)
            table += rows(source, index, faces)
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, rgb.shape[1::-1])
                if not writer.isOpened():
                    raise InputError(f"{out.name}: this OpenCV cannot write MPEG-4 video")
            writer.write(cv2.cvtColor(np.asarray(draw(rgb, faces)), cv2.COLOR_RGB2BGR))
            bar.update()
    except KeyboardInterrupt:  # a camera runs until interrupted: what was recorded is kept
        print(f"{source}: stopped after {read} frames", file=sys.stderr)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise InputError(f"{source}: no frame could be read")
    if total and read < total:
        print(f"faces.py: warning: {source}: read {read} of its {total} frames (a truncated or damaged file?)",
              file=sys.stderr)
    return table


def inputs_of(names: list[str]) -> list[Path | int]:
    """Paths of the pictures and videos named (a folder: the ones directly inside it), and camera indices; a
    missing path or a folder without pictures or videos is an InputError."""
    found = []
    for name in names:
        path = Path(name)
        if name.isdigit() and not path.exists():
            found.append(int(name))
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not inside:
                raise InputError(f"{path}: a folder with no pictures or videos in it (looked for "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def output_name(source: Path | int, taken: set[str]) -> str:
    """The annotated copy's name in DIR: the source's own (videos as .mp4), made unique."""
    if isinstance(source, int):
        stem, suffix = f"camera{source}", ".mp4"
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        stem, suffix = source.stem, ".mp4"
    else:  # an image keeps its format; one without a known suffix is written as PNG
        stem, suffix = source.stem, source.suffix.lower() if source.suffix.lower() in IMAGE_SUFFIXES else ".png"
    name, n = f"{stem}{suffix}", 1
    while name in taken or name == "faces.csv":
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return name


def process(source: Path | int, out: Path, models: list, args: argparse.Namespace) -> list[list]:
    if isinstance(source, int):
        capture = open_camera(source)
        if not capture.isOpened():
            raise InputError(f"camera {source}: cannot be opened")
        return run_stream(capture, f"camera {source}", out, models, args, None)
    if source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise InputError(f"{source}: not a readable video")
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None  # for the progress bar; 0: not known
        if frames and args.max_frames:
            frames = min(frames, args.max_frames)
        return run_stream(capture, str(source), out, models, args, frames)
    rgb = read_image(source)
    faces = find_faces(rgb, models, args.upsample, not args.no_tta)
    if not faces:
        print(f"{source}: no face found", file=sys.stderr)
    try:
        draw(rgb, faces).save(out)
    except (OSError, ValueError) as e:  # a format's own limits, such as WebP's 16383 pixels a side
        raise InputError(f"{source}: its annotated copy cannot be written as {out.suffix} ({e})") from None
    return rows(str(source), 0, faces)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Expressions of the faces in photos, folders, videos and cameras.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="*", help="photos, folders of them, videos, or camera indices (0: the first "
                   "camera); none: matplotlib's sample photo")
    p.add_argument("--out", default="faces_out", help="folder for faces.csv and the annotated copies")
    add_model_options(p, threads=0)
    p.add_argument("--upsample", type=int, default=PHOTO_UPSAMPLE, help="photos: the detector's upsampling; 0 "
                   f"finds faces down to {SMALLEST_FACE} pixels wide, each step half that size at about 4x the work")
    p.add_argument("--video-upsample", type=int, default=VIDEO_UPSAMPLE, help="videos and cameras: the same, kept "
                   f"at 0 for speed (faces of {SMALLEST_FACE} pixels and more)")
    p.add_argument("--max-frames", type=int, default=0, help="videos and cameras: stop after this many frames "
                   "(0: the whole video; a camera runs until Ctrl-C)")
    return p.parse_args(argv)


def add_model_options(p: argparse.ArgumentParser, threads: int) -> None:
    """The options that choose the models and how they run, for faces.py and serve.py alike (chosen_models)."""
    p.add_argument("--model", action="append", help="a model file; repeat for an ensemble (default: the "
                   f"released pair, {', '.join(RELEASED['fast'])}; {RELEASED['compact'][0]} is faster)")
    p.add_argument("--ensemble", action="store_true", help="the released ensemble, "
                   f"{', '.join(RELEASED['default'])}: more accurate, about twice the time")
    p.add_argument("--no-tta", action="store_true", help="skip horizontal-flip test-time augmentation")
    p.add_argument("--threads", type=int, default=threads, help="CPU threads for the models; 0: PyTorch's default")


fail = partial(utils.fail, "faces.py")  # one line on stderr, exit code 2


def load_models(paths: list[str]) -> list:
    """The models, loaded once for every picture; a bad path or file stops with one line."""
    problem = next(filter(None, map(model_file_problem, paths)), None)
    if problem:
        fail(problem)
    try:
        return [load_for_inference(m) for m in paths]
    except DataError as e:
        fail(str(e))


def chosen_models(args: argparse.Namespace) -> list:
    """The --model files, or the released ensemble with --ensemble, or the released pair."""
    if args.model and args.ensemble:
        fail("--ensemble and --model: choose one")
    return load_models(args.model or released("default" if args.ensemble else "fast"))


def run_all(sources: list[Path | int], out: Path, models: list, args: argparse.Namespace) -> tuple[list[list], int]:
    """Every input into a temporary folder inside out, each bad one named in one line and skipped; then the good
    ones' annotated copies and faces.csv, each moved into out by a rename. Returns the rows and the number of
    inputs that could not be read; when none could be, nothing is written."""
    staging = Path(tempfile.mkdtemp(prefix=".faces-", dir=out))
    try:
        table, taken, copies, bad = [], set(), [], 0  # the rows, the copies' names in out, the failures
        for source in tqdm(sources, desc="inputs", unit="file", disable=None if len(sources) > 1 else True):
            name = output_name(source, taken)
            try:
                table += process(source, staging / name, models, args)
                copies.append(name)
            except InputError as e:
                print(f"faces.py: skipped {e}", file=sys.stderr)
                (staging / name).unlink(missing_ok=True)  # a video cut short
                bad += 1
        if copies:
            with open(staging / "faces.csv", "w", newline="") as f:
                csv.writer(f).writerows([COLUMNS, *table])
            for name in [*copies, "faces.csv"]:
                (staging / name).replace(out / name)
        return table, bad
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> list[list]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults on every batch's fresh tensors
    quiet_opencv()
    problem = weights_problem()
    if problem:
        fail(problem)
    names = args.inputs
    if not names:
        names = [str(sample_photo())]
        print(f"no input given: running on matplotlib's sample photo {names[0]}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        fail(f"{out}: exists and is not a folder")
    try:
        sources = inputs_of(names)
    except InputError as e:
        fail(str(e))
    models = chosen_models(args)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{out}: cannot make the folder ({e.strerror or e})")
    try:
        table, bad = run_all(sources, out, models, args)
    finally:
        if created and not any(out.iterdir()):
            out.rmdir()
    good = len(sources) - bad
    if good:
        print(f"faces: {len(table)} in {good} input(s); wrote {out / 'faces.csv'} and {good} annotated "
              f"cop{'y' if good == 1 else 'ies'}")
    if bad:
        print(f"faces.py: {bad} of {len(sources)} files could not be read", file=sys.stderr)
        sys.exit(1 if good else 2)
    return table


if __name__ == "__main__":
    main()
