"""Expressions of the faces in photos, folders, videos and cameras: find each face, crop it as FER2013 framed
its faces, classify it with predict.py's models, and draw the result on a copy of the picture.

  python faces.py [photo | folder | video | camera-index ...] [--out faces_out] [--model PATH ...]
  python faces.py --serve [--host 127.0.0.1] [--port 8000]     the live page: camera and photos in a browser

Writes DIR/faces.csv (one row per face: source, frame, the square the model saw in the source's pixels,
the label and the seven probabilities) and an annotated copy of every picture and video. With no input
it runs on the sample photo that matplotlib ships. Everything is written to a temporary folder inside
DIR first and moved into place at the end, so a bad input leaves nothing half-written.
"""

import argparse
import csv
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import cv2
import dlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from tqdm import tqdm

import utils
from dataset import CLASS_NAMES, SIDE, DataError
from predict import RELEASED, ensemble_proba, load_for_inference, model_file_problem, released
from utils import keep_freed_memory

# dlib's HOG box -> FER2013's frame of the face, and the detector's score threshold: fitted on upscaled
# training faces of the released models' split by bench/faces_framing.py (runs/faces/framing.log).
FRAMING = {"dx": 0.0, "dy": -0.078, "scale": 1.109, "threshold": -0.8}
PHOTO_UPSAMPLE = 1  # dlib's upsampling for photos: faces down to about 40 pixels wide, at about 4x the work of 0
VIDEO_UPSAMPLE = 0  # for video frames: faces of about 80 pixels and more, at frame rate
OVERLAP_LIMIT = 0.3  # dlib keeps boxes that share up to half a face; two faces' boxes rarely share a third
DETECT_SIDE = 1280  # detection runs on pictures at most this long a side: big photos cost seconds otherwise
MAX_ASPECT = 20  # a picture's long side over its short one: a panorama fits, a strip too thin for a face does not
JPEG_REDUCTIONS = (1, 2, 4, 8)  # the scales, 1/n, at which libjpeg decodes a baseline JPEG without its full size
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
COLUMNS = ["source", "frame", "x", "y", "w", "h", "label", *(f"p_{name}" for name in CLASS_NAMES)]
DETECTOR = dlib.get_frontal_face_detector()  # HOG + linear SVM, built into dlib: nothing to download


class InputError(ValueError):
    """An input that cannot be read; the message is one line naming it."""


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


def detect(gray: np.ndarray, upsample: int, threshold: float = FRAMING["threshold"]) -> list[tuple[float, ...]]:
    """dlib's frontal HOG detector: (left, top, right, bottom, score) per face in gray's pixels."""
    scale = min(1.0, DETECT_SIDE / max(gray.shape))
    small = gray if scale == 1.0 else np.asarray(Image.fromarray(gray).resize(
        (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), Image.Resampling.BILINEAR))
    boxes, scores, _ = DETECTOR.run(small, upsample, threshold)
    return drop_overlaps([(b.left() / scale, b.top() / scale, (b.right() + 1) / scale, (b.bottom() + 1) / scale, s)
                          for b, s in zip(boxes, scores, strict=True)])


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The share of the smaller box that lies inside the other: 1 for a box within a box, as IoU would not say."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def drop_overlaps(boxes: list[tuple[float, ...]], limit: float = OVERLAP_LIMIT) -> list[tuple[float, ...]]:
    """Best score first, each box kept unless it overlaps a kept one by more than limit: one box per face."""
    kept: list[tuple[float, ...]] = []
    for box in sorted(boxes, key=lambda b: -b[4]):
        if all(overlap(box, other) <= limit for other in kept):
            kept.append(box)
    return kept


def fer_frame(box: tuple[float, ...], framing: dict = FRAMING) -> tuple[int, int, int]:
    """The square FER2013 would have cropped around a detector box: (x, y, side), rounded to pixels."""
    left, top, right, bottom = box[:4]
    w, h = right - left, bottom - top
    side = (w + h) / 2 * framing["scale"]
    cx, cy = (left + right) / 2 + framing["dx"] * w, (top + bottom) / 2 + framing["dy"] * h
    return round(cx - side / 2), round(cy - side / 2), max(round(side), 1)


def crop(gray: Image.Image, frames: list[tuple[int, int, int]]) -> torch.Tensor:
    """(N, 1, 48, 48) uint8 faces; a frame reaching past the edge is filled black, as training's shifts are."""
    faces = [np.asarray(gray.crop((x, y, x + s, y + s)).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
             for x, y, s in frames]
    return torch.from_numpy(np.stack(faces)).view(-1, 1, SIDE, SIDE) if faces else torch.empty(0, 1, SIDE, SIDE)


def classify(gray: Image.Image, boxes: list[tuple[float, ...]], models: list, tta: bool) -> list[Face]:
    frames = [fer_frame(box) for box in boxes]
    probs = ensemble_proba(models, crop(gray, frames), tta=tta) if frames else torch.empty(0, len(CLASS_NAMES))
    return [Face(frame, p.numpy()) for frame, p in zip(frames, probs, strict=True)]


def find_faces(rgb: np.ndarray, models: list, upsample: int, tta: bool) -> list[Face]:
    """Every face of one picture (H, W, 3 uint8), detected and classified on its gray version."""
    gray = Image.fromarray(rgb).convert("L")  # ITU-R 601 luma, as FER2013's grayscale faces
    return classify(gray, detect(np.asarray(gray), upsample), models, tta)


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


def run_stream(capture: cv2.VideoCapture, source: str, out: Path, models: list, args: argparse.Namespace,
               total: int | None) -> list[list]:
    """The loop of videos and cameras alike: every frame detected, classified, drawn and written to out."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0  # a camera or a stream may not say; 25 plays at about real time
    writer, table = None, []
    bar = tqdm(total=total, desc=source, unit="frame", disable=None, leave=False)
    try:
        for index in range(args.max_frames or sys.maxsize):
            ok, bgr = capture.read()
            if not ok:
                break
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
        print(f"{source}: stopped after {bar.n} frames", file=sys.stderr)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise InputError(f"{source}: no frame could be read")
    return table


def inputs_of(names: list[str]) -> list[Path | int]:
    """Paths of the pictures and videos named (a folder: the ones directly inside it), and camera indices."""
    found = []
    for name in names:
        path = Path(name)
        if name.isdigit() and not path.exists():
            found.append(int(name))
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
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
    draw(rgb, faces).save(out)
    return rows(str(source), 0, faces)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Expressions of the faces in photos, folders, videos and cameras.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="*", help="photos, folders of them, videos, or camera indices (0: the first "
                   "camera); none: matplotlib's sample photo")
    p.add_argument("--out", default="faces_out", help="folder for faces.csv and the annotated copies")
    p.add_argument("--model", action="append", help="a model file; repeat for an ensemble (default: the "
                   f"released pair, {', '.join(RELEASED['fast'])}; {RELEASED['compact'][0]} is faster)")
    p.add_argument("--ensemble", action="store_true", help="the released ensemble, "
                   f"{', '.join(RELEASED['default'])}: more accurate, about twice the time")
    p.add_argument("--no-tta", action="store_true", help="skip horizontal-flip test-time augmentation")
    p.add_argument("--upsample", type=int, default=PHOTO_UPSAMPLE, help="photos: dlib's upsampling; 1 finds faces "
                   "down to about 40 pixels wide; each step doubles the picture's side, so about 4x the work")
    p.add_argument("--video-upsample", type=int, default=VIDEO_UPSAMPLE, help="videos and cameras: the same, kept "
                   "at 0 for speed (faces of about 80 pixels and more)")
    p.add_argument("--max-frames", type=int, default=0, help="videos and cameras: stop after this many frames "
                   "(0: the whole video; a camera runs until Ctrl-C)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the models; 0: PyTorch's default")
    g = p.add_argument_group("the live page (serve.py)")
    g.add_argument("--serve", action="store_true", help="serve a page that shows the expressions of the faces in "
                   "the browser's camera and in photos dropped on it; writes nothing")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on; another than 127.0.0.1 lets other "
                   "machines send pictures")
    g.add_argument("--port", type=int, default=8000, help="port to listen on; 0: any free one")
    return p.parse_args(argv)


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


def serve_page(args: argparse.Namespace) -> list[list]:
    import serve  # only here: the server is one use of several

    serve.hand_back_big_buffers()  # before the models' threads start
    models = chosen_models(args)
    try:
        serve.serve(models, args.host, args.port, tta=not args.no_tta)
    except OSError as e:  # the port is taken, or the address is not this machine's
        fail(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})")
    return []


def main(argv: list[str] | None = None) -> list[list]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults on every batch's fresh tensors
    if args.serve:
        if args.inputs:
            fail("--serve takes no inputs: the page sends them")
        return serve_page(args)
    names = args.inputs
    if not names:
        names = [str(sample_photo())]
        print(f"no input given: running on matplotlib's sample photo {names[0]}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        fail(f"{out}: exists and is not a folder")
    models = chosen_models(args)
    try:
        sources = inputs_of(names)
    except InputError as e:
        fail(str(e))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # everything goes to a temporary folder inside out, and moves into out once all inputs are done
    staging = Path(tempfile.mkdtemp(prefix=".faces-", dir=out))
    try:
        table, taken, copies = [], set(), []  # the rows, and the annotated copies' names in out
        for source in tqdm(sources, desc="inputs", unit="file", disable=None if len(sources) > 1 else True):
            copies.append(output_name(source, taken))
            table += process(source, staging / copies[-1], models, args)
        with open(staging / "faces.csv", "w", newline="") as f:
            csv.writer(f).writerows([COLUMNS, *table])
        for name in [*copies, "faces.csv"]:
            (staging / name).replace(out / name)
    except InputError as e:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            out.rmdir()
        fail(str(e))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"faces: {len(table)} in {len(sources)} input(s); wrote {out / 'faces.csv'} and {len(copies)} annotated "
          f"cop{'y' if len(copies) == 1 else 'ies'}")
    return table


if __name__ == "__main__":
    main()
