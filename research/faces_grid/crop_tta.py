"""Whether averaging the models over a few crops of each detected face raises bench/faces_grid.py's worst picture
(issue 48, point 6): faces.classify replaced by one that averages the ensemble's probabilities over the crops that
one variant takes, then bench.faces_grid's main run as it is.

  python -m research.faces_grid.crop_tta {three|shift|scale} <train.csv> --pictures 10 [--skip N]

three: faces.fer_frame's crop, the box's and the landmarks'; shift: fer_frame's and four moved by 4 % of its side;
scale: fer_frame's and two 10 % larger and smaller about the same centre.
"""

import sys

import torch
from PIL import Image

import faces
from bench import faces_grid
from predict import ensemble_proba


def square(cx: float, cy: float, side: float) -> tuple[int, int, int]:
    return round(cx - side / 2), round(cy - side / 2), max(round(side), 1)


def crops_of(detection: faces.Detection, variant: str) -> list[tuple[int, int, int]]:
    x, y, s = faces.fer_frame(detection)
    if variant == "three":
        return [(x, y, s), square(*faces.box_frame(detection, faces.FRAMING)),
                square(*faces.landmark_frame(detection.landmarks, faces.FRAMING))]
    if variant == "shift":
        k = round(0.04 * s)
        return [(x, y, s), (x - k, y, s), (x + k, y, s), (x, y - k, s), (x, y + k, s)]
    k = round(0.05 * s)
    return [(x, y, s), (x - k, y - k, s + 2 * k), (x + k, y + k, s - 2 * k)]


def averaged_classify(variant: str):
    def classify(gray: Image.Image, detections: list, models: list, tta: bool) -> list[faces.Face]:
        found = []
        for detection in detections:
            frames = crops_of(detection, variant)
            probs = ensemble_proba(models, faces.crop(gray, frames), tta=tta).mean(0)
            found.append(faces.Face(frames[0], probs.numpy()))
        return found
    return classify


if __name__ == "__main__":
    faces.classify = averaged_classify(sys.argv.pop(1))
    torch.set_num_threads(2)
    faces_grid.main()
