"""bench/faces_grid.py: the picture's geometry and which face a box belongs to."""

import torch

from bench import faces_grid as grid


def test_faces_sit_in_their_cells_and_boxes_find_their_face() -> None:
    images = torch.arange(3, dtype=torch.uint8).mul(100).view(3, 1, 1, 1).expand(3, 1, 48, 48).contiguous()
    rgb, corners = grid.grid_picture(images)
    side = grid.GRID * grid.FACE + (grid.GRID + 1) * grid.GAP
    assert rgb.shape == (side, side, 3) and corners[:2] == [(grid.GAP, grid.GAP), (2 * grid.GAP + grid.FACE, grid.GAP)]
    for i, (x, y) in enumerate(corners):
        assert (rgb[y:y + grid.FACE, x:x + grid.FACE] == 100 * i).all()  # each face, upscaled, in its place
    assert rgb[0, 0, 0] == 128 and rgb[grid.GAP + grid.FACE + 5, 0, 0] == 128  # flat grey around them
    x, y = corners[1]
    assert grid.cell_of((x + 10, y + 10, 100), corners) == 1
    assert grid.cell_of((x - grid.GAP // 2 - 40, y, 60), corners) == 0  # centre in the left half of the gap
    assert grid.cell_of((x, y + grid.FACE + 20, 80), corners) is None  # centre below the first row: no face there
