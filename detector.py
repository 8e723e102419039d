"""MTCNN face detector (Zhang, Zhang, Li and Qiao 2016, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks"): three small CNNs in a cascade. PNet slides a 12-pixel window over an image
pyramid and proposes boxes, RNet re-scores each proposal at 24x24 and ONet at 48x48, each stage calibrating
the box by its regression output and dropping overlaps; ONet also gives five landmarks.

The weights are the published ones (kpzhang93/MTCNN_face_detection_alignment, MIT licence), as facenet-pytorch
2.6.0 (MIT licence) ships them converted to PyTorch state dicts; `bash hw2_download.sh` fetches them into
weights/ and checks their sha256 (weights/MANIFEST). Coordinates are continuous pixel coordinates: the pixel
(i, j) covers [j, j + 1) x [i, i + 1), and a box is (left, top, right, bottom).
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.ops import nms, roi_align

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NET_FILES = {"pnet": "mtcnn_pnet.pt", "rnet": "mtcnn_rnet.pt", "onet": "mtcnn_onet.pt"}  # names in weights/
CELL, STRIDE = 12, 2  # PNet's window and its step, in the pyramid level's pixels
PYRAMID_FACTOR = 0.709  # each pyramid level's side against the one before: the paper's, the area about halves
THRESHOLDS = (0.6, 0.7, 0.7)  # face probability that PNet, RNet and ONet keep: the published settings
SCALE_IOU, PROPOSAL_IOU, REFINED_IOU = 0.5, 0.7, 0.7  # NMS within a pyramid level, over all levels, after RNet
FINAL_MIN_OVERLAP = 0.7  # after ONet, a box inside another's 70 % (intersection over the smaller one) is dropped
CROP_SAMPLES = 2  # samples a side in each output pixel of a crop: an area mean for shrinks up to 2x, 5x faster
# than as many samples as the shrink (roi_align's adaptive count); larger shrinks skip pixels
LANDMARKS = ("left eye", "right eye", "nose", "mouth left", "mouth right")  # ONet's order; left = picture's left


class PNet(nn.Module):
    """Proposals: a fully convolutional 12x12 classifier, a face probability and a box offset every 2 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


def flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C) in the order of the original Caffe nets, which were trained on transposed
    pictures (MATLAB's column-major layout): the dense layers' weights expect it."""
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class RNet(nn.Module):
    """Refinement: a 24x24 classifier with a box offset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(flatten_transposed(self.prelu3(self.conv3(x)))))
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output: a 48x48 classifier with a box offset and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(flatten_transposed(self.prelu4(self.conv4(x)))))
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def weights_problem(folder: Path = WEIGHTS_DIR) -> str | None:
    """Why the detector's weights cannot be loaded from folder, in one line; None when they are all there."""
    missing = [name for name in NET_FILES.values() if not (folder / name).is_file()]
    if missing:
        return f"{folder / missing[0]}: the face detector's weights are missing (bash hw2_download.sh fetches them)"
    return None


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 -> about -1..1, as the nets were trained; channels last, where the nets' max-pooling is several
    times faster."""
    return ((pixels - 127.5) / 128).contiguous(memory_format=torch.channels_last)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box widened to a square of its longer side about the same centre."""
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    half = (boxes[:, 2:4] - boxes[:, :2]).max(1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], 1)


def calibrate(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Each box's sides moved by the net's offsets, in units of the box's width and height."""
    size = (boxes[:, 2:4] - boxes[:, :2]).repeat(1, 2)
    return boxes[:, :4] + offsets * size


def min_overlap_nms(boxes: torch.Tensor, scores: torch.Tensor, limit: float) -> torch.Tensor:
    """Indices kept, best score first, dropping a box whose intersection with a kept one exceeds limit of the
    smaller box's area: a small box inside a face's box goes, as IoU would not say."""
    kept: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in scores.argsort(descending=True).tolist():
        if not kept:
            kept.append(i)
            continue
        other = boxes[kept]
        w = (torch.minimum(other[:, 2], boxes[i, 2]) - torch.maximum(other[:, 0], boxes[i, 0])).clamp(min=0)
        h = (torch.minimum(other[:, 3], boxes[i, 3]) - torch.maximum(other[:, 1], boxes[i, 1])).clamp(min=0)
        if bool((w * h / torch.minimum(area[kept], area[i]) <= limit).all()):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


def pyramid_scales(height: int, width: int, min_face: float) -> list[float]:
    """The scales at which PNet's 12-pixel window covers faces from min_face pixels up to the shorter side."""
    scale, side, scales = CELL / min_face, min(height, width) * CELL / min_face, []
    while side >= CELL:
        scales.append(scale)
        scale, side = scale * PYRAMID_FACTOR, side * PYRAMID_FACTOR
    return scales


def crops(image: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 3, side, side) normalized crops of the boxes from image (1, 3, H, W); black past the picture's edge,
    as the original pads."""
    patches = roi_align(image, [boxes[:, :4]], output_size=side, spatial_scale=1.0, sampling_ratio=CROP_SAMPLES,
                        aligned=True)
    return normalize(patches)


class MTCNN:
    """The cascade with its three nets; detect() finds the faces of one RGB picture."""

    def __init__(self, pnet: PNet, rnet: RNet, onet: ONet, thresholds: tuple[float, float, float] = THRESHOLDS):
        self.pnet, self.rnet, self.onet = pnet.eval(), rnet.eval(), onet.eval()
        self.thresholds = thresholds

    @classmethod
    def load(cls, folder: Path = WEIGHTS_DIR, thresholds: tuple[float, float, float] = THRESHOLDS) -> "MTCNN":
        """The published weights from folder (weights_problem says first whether they are there)."""
        nets = {name: net() for name, net in (("pnet", PNet), ("rnet", RNet), ("onet", ONet))}
        for name, net in nets.items():
            net.load_state_dict(torch.load(folder / NET_FILES[name], map_location="cpu", weights_only=True))
        return cls(**nets, thresholds=thresholds)

    def propose(self, picture: Image.Image, min_face: float) -> torch.Tensor:
        """PNet over the pyramid: (N, 5) boxes (left, top, right, bottom, score), calibrated and squared."""
        found, source = [], picture
        for scale in pyramid_scales(picture.height, picture.width, min_face):
            # each level's pixel the mean of the pixels under it
            level = source.resize((int(picture.width * scale + 1), int(picture.height * scale + 1)),
                                  Image.Resampling.BOX)
            if source is picture and level.width < picture.width:
                source = level  # the smaller levels shrink this one: the picture is read once
            pixels = torch.from_numpy(np.array(level)).permute(2, 0, 1)[None].float()
            probs, offsets = self.pnet(normalize(pixels))
            rows, cols = torch.nonzero(probs[0] >= self.thresholds[0], as_tuple=True)
            if len(rows) == 0:
                continue
            corner = torch.stack([cols, rows], 1).float() * STRIDE
            boxes = torch.cat([corner / scale, (corner + CELL) / scale, probs[0, rows, cols, None],
                               offsets[0, :, rows, cols].T], 1)
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], SCALE_IOU)])
        if not found:
            return torch.empty(0, 5)
        boxes = torch.cat(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], PROPOSAL_IOU)]
        return torch.cat([square(calibrate(boxes, boxes[:, 5:9])), boxes[:, 4:5]], 1)

    def refine(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """RNet on each proposal at 24x24: the ones it keeps, calibrated and squared."""
        probs, offsets = self.rnet(crops(image, boxes, 24))
        keep = probs > self.thresholds[1]
        boxes, probs, offsets = boxes[keep], probs[keep], offsets[keep]
        pick = nms(boxes[:, :4], probs, REFINED_IOU)
        return torch.cat([square(calibrate(boxes[pick], offsets[pick])), probs[pick, None]], 1)

    def output(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ONet on each refined box at 48x48: (N, 5) boxes with scores and (N, 5, 2) landmarks."""
        probs, offsets, points = self.onet(crops(image, boxes, 48))
        keep = probs > self.thresholds[2]
        boxes, probs, offsets, points = boxes[keep], probs[keep], offsets[keep], points[keep]
        size = boxes[:, 2:4] - boxes[:, :2]
        landmarks = boxes[:, None, :2] + torch.stack([points[:, :5], points[:, 5:]], 2) * size[:, None]
        boxes = torch.cat([calibrate(boxes, offsets), probs[:, None]], 1)
        pick = min_overlap_nms(boxes[:, :4], probs, FINAL_MIN_OVERLAP)
        return boxes[pick], landmarks[pick]

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, min_face: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
        """The faces of an (H, W, 3) uint8 RGB picture down to min_face pixels wide: (N, 5) boxes (left, top,
        right, bottom, probability) and (N, 5, 2) landmarks (x, y) in LANDMARKS' order, best first."""
        image = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None]
        boxes = self.propose(Image.fromarray(rgb), min_face)
        if len(boxes):
            boxes = self.refine(image, boxes)
        if not len(boxes):
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes, landmarks = self.output(image, boxes)
        return boxes.numpy(), landmarks.numpy()
