"""faces.py on real faces: matplotlib's sample photo, pictures and videos made from it, and bad inputs."""

import csv
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

import faces
from dataset import CLASS_NAMES

HEAD = (256, 300)  # the sample photo scaled so that its face is about 120 pixels wide


@pytest.fixture(autouse=True)
def detector_weights() -> None:
    """Every test here runs faces.py, which needs the face detector's weights: CI fetches them first."""
    problem = faces.weights_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI runs hw2_download.sh first: {problem}")
    if problem:
        pytest.skip(problem)


def head() -> Image.Image:
    return Image.open(faces.sample_photo()).convert("RGB").resize(HEAD)


def table(out: Path) -> list[dict]:
    with open(out / "faces.csv", newline="") as f:
        return list(csv.DictReader(f))


def centre(row: dict) -> tuple[float, float]:
    return int(row["x"]) + int(row["w"]) / 2, int(row["y"]) + int(row["h"]) / 2


def write_video(path: Path, frames: int, with_face: bool = True, fourcc: str = "mp4v") -> Path:
    """A 640x480 video of the head moving right 20 pixels a frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (640, 480))
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
    (tmp / "fake.pt").write_bytes(b"not a model")
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("no pictures here")
    return {"missing": (str(tmp / "nope.jpg"), "nope.jpg: no such file or folder"),
            "folder without pictures": (str(tmp / "empty"), "empty: a folder with no pictures or videos in it"),
            "missing model": (f"{good} --model {tmp / 'nope.pt'}", "nope.pt: model file not found"),
            "folder as model": (f"{good} --model {tmp}", "is a folder, not a model file"),
            "not a model": (f"{good} --model {tmp / 'fake.pt'}", "fake.pt: not a model file"),
            "not an image": (str(tmp / "fake.jpg"), "fake.jpg: not a readable image"),
            "truncated image": (str(tmp / "cut.jpg"), "cut.jpg: not a readable image"),
            "not a video": (str(tmp / "fake.mp4"), "fake.mp4: not a readable video")}


@pytest.mark.parametrize("case", ["missing", "folder without pictures", "missing model", "folder as model",
                                  "not a model"])
def test_a_bad_argument_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       case: str) -> None:
    source, message = bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        faces.main([*source.split(), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["not an image", "truncated image", "not a video"])
def test_a_run_whose_only_file_is_bad_says_so_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 case: str) -> None:
    source, message = bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        faces.main([source, "--out", str(out), "--model", faces.released("compact")[0]])
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(err) == 2
    assert message in err[0] and err[1] == "faces.py: 1 of 1 files could not be read"
    assert not out.exists()


def cut_video(tmp: Path, frames: int = 20) -> Path:
    """An MJPEG AVI of frames frames, cut off after 11/20 of its bytes, its header still saying frames."""
    whole = write_video(tmp / "whole.avi", frames, fourcc="MJPG")
    cut = tmp / "cut.avi"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size * 11 // 20])
    return cut


def test_bad_files_among_good_ones_are_named_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bad_inputs(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    head().save(folder / "a_good.png")
    (folder / "b_bad.png").write_bytes(b"broken")
    Image.new("RGB", (40000, 1), (128, 128, 128)).save(tmp_path / "wide.png")
    monkeypatch.setattr(faces, "open_camera", lambda index: cv2.VideoCapture(str(tmp_path / "no-such-device")))
    out = tmp_path / "out"
    sources = [tmp_path / "good.jpg", tmp_path / "cut.jpg", folder, tmp_path / "wide.png", tmp_path / "fake.mp4"]
    with pytest.raises(SystemExit) as exit_info:
        faces.main([*map(str, sources), "7", "--out", str(out), "--model", faces.released("compact")[0]])
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 1
    skipped = [line for line in err if line.startswith("faces.py: skipped ")]
    assert len(skipped) == 5
    assert "cut.jpg: not a readable image" in skipped[0] and "b_bad.png: not a readable image" in skipped[1]
    assert "wide.png: 40000x1 pixels, one side more than" in skipped[2]
    assert "fake.mp4: not a readable video" in skipped[3] and "camera 7: cannot be opened" in skipped[4]
    assert err[-1] == "faces.py: 5 of 7 files could not be read"
    assert sorted(p.name for p in out.iterdir()) == ["a_good.png", "faces.csv", "good.jpg"]
    rows = table(out)
    assert {r["source"] for r in rows} == {str(tmp_path / "good.jpg"), str(folder / "a_good.png")}


def test_a_truncated_video_warns_with_the_frames_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = faces.main([str(cut_video(tmp_path)), "--out", str(tmp_path / "out"), "--model", faces.released("compact")[0]])
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    read = len({r[1] for r in rows})
    assert 0 < read < 20 and err == [f"faces.py: warning: {tmp_path / 'cut.avi'}: read {read} of its 20 frames "
                                     "(a truncated or damaged file?)"]
    assert cv2.VideoCapture(str(tmp_path / "out" / "cut.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == read


def test_opencv_and_ffmpeg_say_nothing_of_their_own(tmp_path: Path) -> None:
    """In a fresh process, as a user runs it: a camera that does not exist and a truncated video give our lines
    alone on stderr, none of OpenCV's "[ WARN:0@...]" or FFmpeg's "[mjpeg @ 0x...]"."""
    cut = cut_video(tmp_path)
    result = subprocess.run([sys.executable, str(Path(faces.__file__)), str(cut), "99", "--out", str(tmp_path / "out"),
                             "--model", faces.released("compact")[0]], capture_output=True, text=True)
    err = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(err) == 3 and "cut.avi: read" in err[0] and err[1] == "faces.py: skipped camera 99: cannot be opened"
    assert err[2] == "faces.py: 1 of 2 files could not be read"


def test_a_camera_that_cannot_be_opened_says_so(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces, "open_camera", lambda index: cv2.VideoCapture(str(tmp_path / "no-such-device")))
    with pytest.raises(SystemExit) as exit_info:
        faces.main(["3", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "camera 3: cannot be opened" in capsys.readouterr().err


def test_the_fer_frame_follows_the_fitted_mapping() -> None:
    template = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))
    framing = {"dx": 0.1, "dy": -0.1, "scale": 1.2, "landmarks": template}
    points = np.array(template) * 100 + (50, 80)  # the template in the square (50, 80, side 100)
    assert faces.box_frame((100, 100, 200, 200), framing) == pytest.approx((160, 140, 120))
    assert faces.landmark_frame(points, framing) == pytest.approx((100, 130, 100))
    # the two centres' mean, (130, 135), and their sides' geometric mean, 109.5
    assert faces.fer_frame(faces.Detection(100, 100, 200, 200, 1.0, points), framing) == (75, 80, 110)
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
