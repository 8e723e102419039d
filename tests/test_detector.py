"""detector.py: the MTCNN cascade's geometry with stand-in nets, its plumbing with random-weight nets, and the
published weights on matplotlib's sample photo (where hw2_download.sh has fetched them; CI must have them)."""

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import detector
import faces


class OneHotPNet(torch.nn.Module):
    """PNet's output shapes, with a face (probability 0.9) only at output cell (row, col) of the first pyramid
    level, and the box offsets given."""

    def __init__(self, row: int, col: int, offsets: tuple[float, float, float, float]):
        super().__init__()
        self.row, self.col, self.offsets, self.calls = row, col, torch.tensor(offsets), 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = (x.shape[2] - 12) // 2 + 1, (x.shape[3] - 12) // 2 + 1
        probs = torch.zeros(1, h, w)
        if self.calls == 0:
            probs[0, self.row, self.col] = 0.9
        self.calls += 1
        return probs, self.offsets.view(1, 4, 1, 1).expand(1, 4, h, w)


def random_cascade(seed: int = 0, thresholds: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> detector.MTCNN:
    torch.manual_seed(seed)
    return detector.MTCNN(detector.PNet(), detector.RNet(), detector.ONet(), thresholds)


def test_the_pyramid_starts_at_the_smallest_face_and_stops_at_the_window() -> None:
    scales = detector.pyramid_scales(480, 640, min_face=40)
    assert scales[0] == pytest.approx(12 / 40)
    assert all(b / a == pytest.approx(detector.PYRAMID_FACTOR) for a, b in itertools.pairwise(scales))
    assert 480 * scales[-1] >= 12 > 480 * scales[-1] * detector.PYRAMID_FACTOR
    assert detector.pyramid_scales(11, 4000, min_face=12) == []  # too low for one 12-pixel window


def test_a_pnet_cell_becomes_its_window_in_the_picture_moved_by_its_offsets() -> None:
    cascade = random_cascade(thresholds=(0.5, 0.5, 0.5))
    cascade.pnet = OneHotPNet(row=3, col=5, offsets=(0.1, 0.0, 0.1, 0.0))
    boxes = cascade.propose(Image.new("RGB", (300, 200)), min_face=24)
    scale = 12 / 24
    left, top = 2 * 5 / scale, 2 * 3 / scale  # the window's corner: stride 2 in the level's pixels
    # the 24-pixel window, moved right by a tenth of its width, is already square
    assert boxes.shape == (1, 5)
    assert boxes[0, :4].tolist() == pytest.approx([left + 2.4, top, left + 24 + 2.4, top + 24])
    assert boxes[0, 4].item() == pytest.approx(0.9)


def test_box_helpers() -> None:
    assert detector.square(torch.tensor([[10.0, 20.0, 30.0, 60.0]])).tolist() == [[0.0, 20.0, 40.0, 60.0]]
    calibrated = detector.calibrate(torch.tensor([[0.0, 0.0, 10.0, 20.0]]), torch.tensor([[0.1, -0.1, 0.2, 0.5]]))
    assert calibrated[0].tolist() == pytest.approx([1.0, -2.0, 12.0, 30.0])
    boxes = torch.tensor([[0.0, 0, 100, 100], [10, 10, 50, 50], [60, 0, 160, 100], [300, 0, 400, 100]])
    # the box inside the face goes (all of it overlaps), the one sharing 40 % and the far one stay
    kept = detector.min_overlap_nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.7)
    assert kept.tolist() == [0, 2, 3]
    x = torch.arange(2 * 3 * 2 * 4).view(2, 3, 2, 4)
    assert detector.flatten_transposed(x)[0, :4].tolist() == [x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0],
                                                              x[0, 0, 1, 0]]


def test_random_nets_give_boxes_and_landmarks_of_the_right_shapes() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes, landmarks = random_cascade().detect(rgb, min_face=20)
    assert len(boxes) > 0 and boxes.shape[1] == 5 and landmarks.shape == (len(boxes), 5, 2)
    assert (np.diff(boxes[:, 4]) <= 0).all()  # best first
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    none, points = random_cascade(thresholds=(1.0, 1.0, 1.0)).detect(rgb, min_face=20)
    assert none.shape == (0, 5) and points.shape == (0, 5, 2)
    tiny, _ = random_cascade().detect(rgb[:8], min_face=20)
    assert len(tiny) == 0


def test_missing_weights_are_named_with_the_fix(tmp_path: Path) -> None:
    problem = detector.weights_problem(tmp_path)
    assert problem and "mtcnn_pnet.pt" in problem and "hw2_download.sh" in problem


@pytest.fixture
def published() -> detector.MTCNN:
    problem = detector.weights_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI runs hw2_download.sh first: {problem}")
    if problem:
        pytest.skip(problem)
    return detector.MTCNN.load()


def test_the_published_weights_find_the_sample_face_and_its_landmarks(published: detector.MTCNN) -> None:
    rgb = np.asarray(Image.open(faces.sample_photo()).convert("RGB"))
    boxes, landmarks = published.detect(rgb, min_face=20)
    assert len(boxes) == 1 and boxes[0, 4] > 0.99
    left, top, right, bottom = boxes[0, :4]
    assert 140 < left < 200 and 80 < top < 140 and 325 < right < 385 and 310 < bottom < 370  # her face
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = landmarks[0]
    assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)


def test_a_picture_without_a_face_gives_no_box(published: detector.MTCNN) -> None:
    rng = np.random.default_rng(0)
    noise = np.asarray(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((320, 240)))
    assert len(published.detect(noise, min_face=20)[0]) == 0
