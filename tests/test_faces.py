"""faces.py on real faces: matplotlib's sample photo, pictures and videos made from it, and bad inputs."""

import csv
import io
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

import faces
from dataset import CLASS_NAMES

HEAD = (256, 300)  # the sample photo scaled so that its face is about 120 pixels wide


def head() -> Image.Image:
    return Image.open(faces.sample_photo()).convert("RGB").resize(HEAD)


def table(out: Path) -> list[dict]:
    with open(out / "faces.csv", newline="") as f:
        return list(csv.DictReader(f))


def centre(row: dict) -> tuple[float, float]:
    return int(row["x"]) + int(row["w"]) / 2, int(row["y"]) + int(row["h"]) / 2


def write_video(path: Path, frames: int, with_face: bool = True) -> Path:
    """A 640x480 video of the head moving right 20 pixels a frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for i in range(frames):
        frame = Image.new("RGB", (640, 480), (90, 120, 150))
        if with_face:
            frame.paste(head(), (100 + 20 * i, 90))
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_the_sample_photo_gives_one_face_on_the_face(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = faces.main(["--out", str(tmp_path)])  # no input: the sample photo
    assert "sample photo" in capsys.readouterr().out
    written = table(tmp_path)
    assert len(rows) == len(written) == 1 and list(written[0]) == faces.COLUMNS
    face = written[0]
    cx, cy = centre(face)
    assert 240 < cx < 290 and 200 < cy < 260 and 150 < int(face["w"]) == int(face["h"]) < 260  # her eyes and nose
    probs = [float(face[f"p_{name}"]) for name in CLASS_NAMES]
    assert abs(sum(probs) - 1) < 1e-3 and face["label"] == CLASS_NAMES[int(np.argmax(probs))]
    assert face["frame"] == "0" and Image.open(tmp_path / "grace_hopper.jpg").size == (512, 600)


def test_a_picture_of_several_faces_gives_each_its_box(tmp_path: Path) -> None:
    picture = Image.new("RGB", (1400, 500), (200, 200, 190))
    places = [(30, 40, 1.0), (450, 150, 0.8), (900, 20, 1.5)]  # x, y, scale of each head
    for x, y, scale in places:
        picture.paste(head().resize((round(HEAD[0] * scale), round(HEAD[1] * scale))), (x, y))
    picture.save(tmp_path / "group.png")
    rows = sorted(table_rows := faces.main([str(tmp_path / "group.png"), "--out", str(tmp_path / "out")]),
                  key=lambda r: r[2])
    assert len(table_rows) == 3
    for row, (x, y, scale) in zip(rows, places, strict=True):
        # the sample photo's face centre, moved and scaled as pasted
        expected = (x + 265 * HEAD[0] / 512 * scale, y + 230 * HEAD[1] / 600 * scale)
        got = (row[2] + row[4] / 2, row[3] + row[5] / 2)
        assert np.hypot(got[0] - expected[0], got[1] - expected[1]) < 25 * scale
        assert 90 * scale < row[4] < 150 * scale
    assert (tmp_path / "out" / "group.png").exists()


def test_a_video_gives_a_row_per_frame_and_an_annotated_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 6)
    rows = faces.main([str(video), "--out", str(tmp_path / "out"), "--model", faces.released("fast")[0]])
    assert [r[1] for r in rows] == list(range(6)) and {r[0] for r in rows} == {str(video)}
    xs = [r[2] for r in rows]
    # the box follows the face, in the detector's steps of 8-pixel cells
    assert abs(xs[-1] - xs[0] - 5 * 20) <= 16 and all(0 <= b - a <= 32 for a, b in itertools.pairwise(xs))
    annotated = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 6 and annotated.get(cv2.CAP_PROP_FRAME_WIDTH) == 640


def test_the_camera_runs_through_the_video_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = write_video(tmp_path / "clip.avi", 5)
    monkeypatch.setattr(faces, "open_camera", lambda index: cv2.VideoCapture(str(video)))
    rows = faces.main(["0", "--out", str(tmp_path / "out"), "--max-frames", "3", "--model", "weights/compact.q8"])
    assert [(r[0], r[1]) for r in rows] == [("camera 0", 0), ("camera 0", 1), ("camera 0", 2)]
    assert cv2.VideoCapture(str(tmp_path / "out" / "camera0.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_a_picture_without_a_face_gives_no_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (300, 200), (10, 120, 30)).save(tmp_path / "lawn.png")
    assert faces.main([str(tmp_path / "lawn.png"), "--out", str(tmp_path / "out")]) == []
    assert "lawn.png: no face found" in capsys.readouterr().err
    assert (tmp_path / "out" / "faces.csv").read_text().splitlines() == [",".join(faces.COLUMNS)]


def bad_inputs(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (the input, what the error line must say)"""
    (tmp / "fake.jpg").write_bytes(b"this is no image")
    good = tmp / "good.jpg"
    head().save(good)
    (tmp / "cut.jpg").write_bytes(good.read_bytes()[:2000])
    (tmp / "fake.mp4").write_bytes(b"\x00" * 5000)
    folder = tmp / "folder"
    folder.mkdir()
    head().save(folder / "a_good.png")
    (folder / "b_bad.png").write_bytes(b"broken")
    (tmp / "fake.pt").write_bytes(b"not a model")
    return {"missing": (str(tmp / "nope.jpg"), "nope.jpg: no such file or folder"),
            "missing model": (f"{good} --model {tmp / 'nope.pt'}", "nope.pt: model file not found"),
            "folder as model": (f"{good} --model {tmp}", "is a folder, not a model file"),
            "not a model": (f"{good} --model {tmp / 'fake.pt'}", "fake.pt: not a model file"),
            "not an image": (str(tmp / "fake.jpg"), "fake.jpg: not a readable image"),
            "truncated image": (str(tmp / "cut.jpg"), "cut.jpg: not a readable image"),
            "not a video": (str(tmp / "fake.mp4"), "fake.mp4: not a readable video"),
            "a bad file after a good one": (str(folder), "b_bad.png: not a readable image")}


@pytest.mark.parametrize("case", ["missing", "not an image", "truncated image", "not a video",
                                  "a bad file after a good one", "missing model", "folder as model", "not a model"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    source, message = bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        faces.main([*source.split(), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_camera_that_cannot_be_opened_says_so(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces, "open_camera", lambda index: cv2.VideoCapture(str(tmp_path / "no-such-device")))
    with pytest.raises(SystemExit) as exit_info:
        faces.main(["3", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "camera 3: cannot be opened" in capsys.readouterr().err


def test_the_fer_frame_follows_the_fitted_mapping() -> None:
    framing = {"dx": 0.1, "dy": -0.1, "scale": 1.2, "threshold": 0.0}
    assert faces.fer_frame((100, 100, 200, 200), framing) == (100 + 50 + 10 - 60, 150 - 10 - 60, 120)
    crops = faces.crop(Image.new("L", (100, 100), 200), [(-50, -50, 100), (0, 0, 100)])
    assert crops.shape == (2, 1, 48, 48) and crops[0, 0, 0, 0] == 0 and crops[1].min() == 200  # black past the edge


def test_overlapping_boxes_of_one_face_leave_the_best_one() -> None:
    face, inner, beside, far = (0, 0, 100, 100, 1.0), (20, 20, 60, 60, 1.5), (70, 0, 170, 100, 0.5), (300, 0, 400, 100, 0.1)
    assert faces.overlap(face, inner) == 1.0 and faces.overlap(face, beside) == 0.3 and faces.overlap(face, far) == 0
    # the box inside the face scores best and stays; the face's box, wholly around it, goes; a box sharing
    # only the limit's share stays, as does a box elsewhere
    assert faces.drop_overlaps([face, inner, beside, far]) == [inner, beside, far]
    assert faces.drop_overlaps([face, beside], limit=0.29) == [face]


def test_a_grid_of_faces_gets_one_box_each(tmp_path: Path) -> None:
    portrait = head()
    x, y, side = faces.find_faces(np.asarray(portrait), faces.released("compact"), 1, False)[0].frame
    tile = portrait.crop((x, y, x + side, y + side)).resize((144, 144))
    picture = Image.new("RGB", (3 * 144 + 4 * 48, 2 * 144 + 3 * 48), (128, 128, 128))
    cells = [(48 + c * 192, 48 + r * 192) for r in range(2) for c in range(3)]
    for cell in cells:
        picture.paste(tile, cell)
    found = faces.find_faces(np.asarray(picture), faces.released("compact"), faces.PHOTO_UPSAMPLE, False)
    centres = [(f.frame[0] + f.frame[2] / 2, f.frame[1] + f.frame[2] / 2) for f in found]
    assert [sum(x < cx < x + 144 and y < cy < y + 144 for cx, cy in centres) for x, y in cells] == [1] * len(cells)
    assert len(found) == len(cells)


def encoded(picture: Image.Image, fmt: str, **options) -> io.BytesIO:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    out.seek(0)
    return out


def turned_jpeg(picture: Image.Image, orientation: int) -> io.BytesIO:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encoded(picture, "JPEG", exif=exif)


@pytest.mark.parametrize(("source", "shape", "size"), [
    (encoded(Image.new("RGB", (800, 600)), "JPEG"), (150, 200, 3), (800, 600)),  # decoded at 1/4
    (encoded(Image.new("RGB", (900, 600)), "JPEG"), (75, 113, 3), (900, 600)),  # 1/8: 1/4 is still 225 long
    (encoded(Image.new("RGB", (300, 200)), "PNG"), (100, 150, 3), (300, 200)),  # decoded whole, then halved
    (encoded(Image.new("RGB", (160, 90)), "PNG"), (90, 160, 3), (160, 90)),  # as it is
    (turned_jpeg(Image.new("RGB", (800, 600)), 6), (200, 150, 3), (600, 800)),  # a phone held upright
])
def test_a_picture_is_decoded_within_the_budget_and_shrunk(source, shape, size) -> None:
    rgb, source_size = faces.read_image_within(source, "p", 10**6, 100_000, 200)
    assert rgb.shape == shape and source_size == size


@pytest.mark.parametrize(("source", "message"), [
    (encoded(Image.new("RGB", (800, 600)), "JPEG", progressive=True), "800x600 pixels, more than 100,000 to decode"),
    (encoded(Image.new("RGB", (800, 600)), "PNG"), "800x600 pixels, more than 100,000 to decode"),
    (encoded(Image.new("RGB", (1200, 1000)), "JPEG"), "1200x1000 pixels, more than 1,000,000"),
    (encoded(Image.new("L", (2100, 100)), "PNG"), "2100x100 pixels, one side more than 20 times the other"),
    (encoded(Image.new("L", (1, 40)), "PNG"), "1x40 pixels, one side more than 20 times the other"),
])
def test_a_picture_beyond_the_budget_is_refused_before_it_is_decoded(source, message) -> None:
    with pytest.raises(faces.InputError, match=message):
        faces.read_image_within(source, "p", 10**6, 100_000, 200)


def test_a_jpeg_is_decoded_at_the_least_reduction_that_fits() -> None:
    assert faces.jpeg_reduction((640, 480), 2560) == 1
    assert faces.jpeg_reduction((4032, 3024), 2560) == 2  # a phone photo: 2016 a side
    assert faces.jpeg_reduction((7071, 7071), 2560) == 4  # 1768: at 1/2 it would be 3536
    assert faces.jpeg_reduction((31600, 1580), 2560) == 8  # 3950: no smaller scale to decode at
