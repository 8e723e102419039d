"""Frames per second of faces.py on one 640x480 frame with one face: detection, crop and models, end to end.

  python -m bench.faces_speed [--frames 60]

The frame is matplotlib's sample photo scaled to a 256-pixel-wide head on a flat background, as a webcam
frame of someone at a desk. Settings run in turns, each frame timed alone; the figure is the median.
Drawing and video encoding are timed separately, since a user may skip them.
"""

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

import faces
from predict import load_for_inference, released


def webcam_frame() -> np.ndarray:
    frame = Image.new("RGB", (640, 480), (90, 120, 150))
    frame.paste(Image.open(faces.sample_photo()).convert("RGB").resize((256, 300)), (192, 90))
    return np.asarray(frame)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60)
    args = p.parse_args()
    rgb = webcam_frame()
    settings = {
        "released pair, flip TTA, 1 thread": (released("fast"), True, 1),
        "released pair, flip TTA, 2 threads": (released("fast"), True, 2),
        "released pair, no TTA, 1 thread": (released("fast"), False, 1),
        "compact.q8, flip TTA, 1 thread": (released("compact"), True, 1),
    }
    models = {name: [load_for_inference(m) for m in paths] for name, (paths, _, _) in settings.items()}
    times = {name: [] for name in settings}
    detect_times, draw_times = [], []
    found = faces.find_faces(rgb, models[next(iter(models))], faces.VIDEO_UPSAMPLE, True)
    print(f"torch {torch.__version__}; frame 640x480, faces found: {len(found)} "
          f"({', '.join(f'{f.label} at {f.frame}' for f in found)})")
    for i in range(args.frames + 3):  # the first 3 rounds warm up
        for name, (_, tta, threads) in settings.items():
            torch.set_num_threads(threads)
            t = time.perf_counter()
            faces.find_faces(rgb, models[name], faces.VIDEO_UPSAMPLE, tta)
            if i >= 3:
                times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        faces.detect(rgb, faces.VIDEO_UPSAMPLE)
        detect_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        faces.draw(rgb, found)
        draw_times.append(time.perf_counter() - t)
    print(f"detection alone (MTCNN, faces down to {faces.SMALLEST_FACE / 2**faces.VIDEO_UPSAMPLE:.0f} pixels, "
          f"{torch.get_num_threads()} threads): {statistics.median(detect_times) * 1000:.1f} ms")
    print(f"drawing the result: {statistics.median(draw_times) * 1000:.1f} ms")
    for name, values in times.items():
        ms = statistics.median(values) * 1000
        print(f"{name:<42} {ms:6.1f} ms per frame = {1000 / ms:5.1f} fps  (n={len(values)})")


if __name__ == "__main__":
    main()
