"""faces.py on a photo-like picture of many faces: each held-out face upscaled to 144 pixels on a flat grey
background, 48 pixels apart, 10 x 10 to a picture, run through faces.find_faces exactly as `python faces.py
picture.png` runs it (photo upsampling).

  python -m bench.faces_grid <train.csv> [--pictures 5] [--model PATH ...] [--save grid.png]

Counts, per picture of 100 faces: the faces found (at least one box centred in the face's cell: the face and
half the gap around it), the extra boxes (every box beyond the first on a face, and every box on no face),
and the accuracy of the labels of the found faces against the same faces' own 48x48 pixels, with its ratio
per picture and the worst picture's. The faces are held-out rows of the released models' split, with no
pixel-identical copy in training: the first pictures' worth of them in a fixed shuffle (--skip passes over
some, for a set of faces apart from the one reported).
"""

import argparse

import numpy as np
import torch
from PIL import Image

import faces
from dataset import duplicate_groups, read_faces, recorded_split
from predict import ensemble_proba, load_for_inference, released
from quantized import load_model

GRID, FACE, GAP = 10, 144, 48  # faces per side, face side and gap in pixels: the picture


def grid_picture(images: torch.Tensor) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Up to GRID x GRID faces on flat grey; returns the RGB picture and each face's top-left corner."""
    side = GRID * FACE + (GRID + 1) * GAP
    picture = Image.new("L", (side, side), 128)
    corners = []
    for i, face in enumerate(images):
        x, y = GAP + (i % GRID) * (FACE + GAP), GAP + (i // GRID) * (FACE + GAP)
        picture.paste(Image.fromarray(face[0].numpy()).resize((FACE, FACE), Image.Resampling.BICUBIC), (x, y))
        corners.append((x, y))
    return np.asarray(picture.convert("RGB")), corners


def cell_of(frame: tuple[int, int, int], corners: list[tuple[int, int]]) -> int | None:
    """The face whose cell (the face and half the gap around it) holds the frame's centre, if any."""
    cx, cy = frame[0] + frame[2] / 2, frame[1] + frame[2] / 2
    half = GAP / 2
    return next((i for i, (x, y) in enumerate(corners)
                 if x - half <= cx < x + FACE + half and y - half <= cy < y + FACE + half), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train_csv")
    p.add_argument("--pictures", type=int, default=5, help="pictures of GRID x GRID held-out faces")
    p.add_argument("--model", action="append", help="default: the released ensemble")
    p.add_argument("--skip", type=int, default=0, help="held-out faces passed over before the first picture")
    p.add_argument("--save", help="write the first picture, annotated, to this file")
    args = p.parse_args()
    paths = args.model or released("fast")
    torch.set_num_threads(2)
    data = read_faces(args.train_csv, require_labels=True)
    train_idx, val_idx = recorded_split(data, load_model(paths[0])[1]["split"])
    groups = duplicate_groups(data.images)
    clean = val_idx[~np.isin(groups[val_idx], groups[train_idx])]  # no copy of these faces was trained on
    chosen = np.random.default_rng(0).permutation(clean)[args.skip:args.skip + args.pictures * GRID * GRID]
    models = [load_for_inference(m) for m in paths]
    own = ensemble_proba(models, data.images[chosen]).argmax(1).numpy()
    labels = data.labels[chosen].numpy()
    print(f"{args.pictures} pictures of {GRID}x{GRID} held-out faces ({FACE} px, {GAP} px apart, flat grey), "
          f"faces.find_faces with photo upsampling {faces.PHOTO_UPSAMPLE}; faces {args.skip}.. of the shuffle; "
          f"models: {', '.join(map(str, paths))}")
    totals, ratios = np.zeros(4), []  # found, extra boxes, right on own pixels (found faces), right on crops
    for n in range(args.pictures):
        part = slice(n * GRID * GRID, (n + 1) * GRID * GRID)
        rgb, corners = grid_picture(data.images[chosen[part]])
        found = faces.find_faces(rgb, models, faces.PHOTO_UPSAMPLE, tta=True)
        first: dict[int, faces.Face] = {}
        for face in found:
            i = cell_of(face.frame, corners)
            if i is not None and i not in first:
                first[i] = face
        hit = sorted(first)
        own_right = int((own[part][hit] == labels[part][hit]).sum())
        crop_right = sum(int(first[i].probs.argmax() == labels[part][i]) for i in hit)
        figures = np.array([len(hit), len(found) - len(hit), own_right, crop_right])
        totals += figures
        found_n = max(len(hit), 1)
        ratios.append(crop_right / max(own_right, 1))
        print(f"picture {n + 1}: found {len(hit)}/{len(corners)}, extra boxes {figures[1]}, accuracy on found "
              f"faces: own pixels {own_right / found_n:.1%}, detected crops {crop_right / found_n:.1%} "
              f"= {ratios[-1]:.3f} x own")
        if args.save and n == 0:
            faces.draw(rgb, found).save(args.save)
    per = args.pictures
    print(f"mean per picture of {GRID * GRID}: found {totals[0] / per:.1f}, extra boxes {totals[1] / per:.1f}; "
          f"accuracy on found faces: own pixels {totals[2] / totals[0]:.2%}, detected crops {totals[3] / totals[0]:.2%}"
          f" = {totals[3] / totals[2]:.3f} x own; worst picture {min(ratios):.3f} x own")


if __name__ == "__main__":
    main()
