"""serve.py and the live page: the HTTP answers, hostile requests, several tabs, and headless Chromium with a fake
camera that plays the sample photo (the browser tests skip where Chromium is absent, and fail instead on CI)."""

import http.client
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import faces
import serve
from bench import live_page
from dataset import CLASS_NAMES
from predict import load_for_inference, released


@pytest.fixture(scope="module")
def server():
    """The server in this process on a free port, with the compact model (the fastest to load)."""
    httpd = serve.FaceServer(("127.0.0.1", 0), [load_for_inference(released("compact")[0])])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def request(server, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), data


def jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_the_page_and_only_its_files_are_served(server) -> None:
    for path, kind in [("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")]:
        status, headers, body = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path in ["/serve.py", "/../serve.py", "/web/app.js", "/weights/compact.q8", "/%2e%2e/faces.py"]:
        status, _, body = request(server, "GET", path)
        assert status == 404 and "no such page" in json.loads(body)["error"]


def test_a_photo_gives_its_faces_and_their_rows(server) -> None:
    status, _, body = request(server, "POST", "/api/faces?kind=photo&name=hopper.jpg",
                              faces.sample_photo().read_bytes())
    answer = json.loads(body)
    assert status == 200 and (answer["width"], answer["height"]) == (512, 600) and len(answer["faces"]) == 1
    face = answer["faces"][0]
    assert list(face["probs"]) == list(CLASS_NAMES) and abs(sum(face["probs"].values()) - 1) < 1e-4
    assert face["label"] == max(face["probs"], key=face["probs"].get)
    assert 240 < face["x"] + face["side"] / 2 < 290 and 200 < face["y"] + face["side"] / 2 < 260  # her face
    assert answer["columns"] == faces.COLUMNS and answer["rows"][0][:7] == [
        "hopper.jpg", 0, face["x"], face["y"], face["side"], face["side"], face["label"]]


def test_a_camera_frame_is_detected_at_video_upsampling(server, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = faces.find_faces
    monkeypatch.setattr(faces, "find_faces", lambda rgb, models, upsample, tta: seen.append(upsample)
                        or real(rgb, models, upsample, tta))
    status, _, body = request(server, "POST", "/api/faces?kind=frame", jpeg(live_page.camera_frame()))
    assert status == 200 and len(json.loads(body)["faces"]) == 1 and seen == [faces.VIDEO_UPSAMPLE]


def huge_png() -> bytes:
    """A 12,000 x 6,000 picture in a few kB: a decompression bomb for a server that decodes first."""
    out = io.BytesIO()
    Image.new("1", (12_000, 6_000)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), [
    ("/api/faces?name=notes.txt", b"these are words", {}, 400, "notes.txt: not a readable image"),
    ("/api/faces?name=cut.jpg", None, {}, 400, "cut.jpg: not a readable image"),
    ("/api/faces?name=bomb.png", "huge", {}, 400, "bomb.png: 12000x6000 pixels, more than 50,000,000"),
    ("/api/faces?kind=video", b"x", {}, 400, "kind='video': frame or photo"),
    ("/api/other", b"x", {}, 404, "/api/other: no such address"),
    ("/api/faces", b"x", {"Content-Length": str(serve.MAX_UPLOAD + 1)}, 413, "at most 10 MB"),
    ("/api/faces", b"x", {"Host": "attacker.example:8000"}, 403, "not 'attacker.example'"),
])
def test_a_bad_request_gets_an_error_answer_and_the_server_goes_on(server, path, body, headers, status,
                                                                   message) -> None:
    if body is None:  # a JPEG cut short
        body = jpeg(live_page.camera_frame())[:3000]
    elif body == "huge":
        body = huge_png()
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    connection.putrequest("POST", path, skip_host="Host" in headers)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(body)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == status and message in answer["error"] and "Traceback" not in answer["error"]
    assert request(server, "GET", "/")[0] == 200  # still serving


def test_a_request_without_a_length_is_refused(server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    connection.putrequest("POST", "/api/faces")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]


def test_a_failure_inside_is_a_500_without_a_traceback(server, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(server, "find", lambda rgb, upsample: 1 / 0)
    status, _, body = request(server, "POST", "/api/faces", jpeg(live_page.camera_frame()))
    assert status == 500 and json.loads(body) == {"error": "the server failed on this request"}
    assert "ZeroDivisionError" in capsys.readouterr().err  # the server's log says what it was
    monkeypatch.undo()
    assert request(server, "POST", "/api/faces", jpeg(live_page.camera_frame()))[0] == 200


def test_several_tabs_at_once_get_the_same_answers(server) -> None:
    frame = jpeg(live_page.camera_frame())
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: request(server, "POST", "/api/faces?kind=frame", frame), range(12)))
    assert {status for status, _, _ in answers} == {200}
    assert len({json.dumps(json.loads(body)["faces"]) for _, _, body in answers}) == 1


def test_serve_takes_no_inputs_and_a_taken_port_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        faces.main(["--serve", "photo.jpg"])
    assert exit_info.value.code == 2 and "--serve takes no inputs" in capsys.readouterr().err
    with serve.FaceServer(("127.0.0.1", 0), []) as taken:
        with pytest.raises(SystemExit) as exit_info:
            faces.main(["--serve", "--port", str(taken.server_address[1]), "--model", released("compact")[0]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "cannot listen on 127.0.0.1:" in err


# --- in a real browser ---

def need_browser() -> None:
    problem = live_page.browser_missing()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def page_server():
    """python faces.py --serve, as a person starts it, on a free port."""
    process, address, _ = live_page.start_server("--model", released("compact")[0])
    yield address
    process.kill()
    process.wait()


def wait_for(browser, script: str, seconds: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.2).until(lambda b: b.execute_script(script))


def test_the_camera_shows_a_box_and_an_expression_live(page_server, tmp_path: Path) -> None:
    need_browser()
    camera = live_page.write_y4m(tmp_path / "camera.y4m", live_page.camera_frame())
    browser = live_page.open_browser(tmp_path / "profile", camera)
    try:
        browser.get(page_server)
        browser.execute_script("document.getElementById('start').click()")
        tag = wait_for(browser, "const t = document.querySelector('#live .box .tag'); return t && t.textContent")
        assert tag.split()[0] in CLASS_NAMES and tag.endswith("%")
        bars = browser.execute_script("return [...document.querySelectorAll('#live .bar span')].map(s => s.textContent)")
        assert bars == list(CLASS_NAMES)
        box = browser.execute_script("const r = document.querySelector('#live .box').getBoundingClientRect(); "
                                     "const v = document.getElementById('video').getBoundingClientRect(); "
                                     "return [(r.x + r.width / 2 - v.x) / v.width, (r.y + r.height / 2 - v.y) / v.height]")
        assert 0.4 < box[0] < 0.6 and 0.3 < box[1] < 0.7  # on the head, in the middle of the frame
        rate = wait_for(browser, "const r = document.getElementById('rate').textContent; return r.includes('frames/s') && r")
        assert float(rate.split()[0]) > 0
    finally:
        browser.quit()


def test_a_refused_camera_and_a_non_image_get_clear_messages(page_server, tmp_path: Path) -> None:
    need_browser()
    notes, fake = tmp_path / "notes.txt", tmp_path / "fake.png"
    notes.write_text("not a picture")
    fake.write_bytes(b"not a picture either")
    browser = live_page.open_browser(tmp_path / "profile", live_page.write_y4m(tmp_path / "c.y4m",
                                     live_page.camera_frame()), allow_camera=False)
    try:
        browser.get(page_server)
        message = "const m = document.getElementById('message'); return !m.hidden && m.textContent"
        browser.execute_script("document.getElementById('start').click()")
        assert "camera was refused" in wait_for(browser, message)
        browser.find_element("id", "files").send_keys(str(notes))
        assert wait_for(browser, message) == "notes.txt is not an image (text/plain)."
        browser.find_element("id", "files").send_keys(str(fake))  # called an image: the server looks inside
        assert "fake.png: not a readable image" in wait_for(browser, message.replace(
            "m.textContent", "m.textContent.includes('fake') && m.textContent"))
        browser.find_element("id", "files").send_keys(str(faces.sample_photo()))
        assert wait_for(browser, "return document.querySelectorAll('#results .box').length") == 1
        assert wait_for(browser, "return document.getElementById('message').hidden")
        csv = browser.execute_script("const a = document.getElementById('download'); return !a.hidden && "
                                     "fetch(a.href).then(r => r.text())")
        lines = csv.splitlines()
        assert lines[0] == ",".join(faces.COLUMNS) and len(lines) == 2 and lines[1].startswith("grace_hopper.jpg,0,")
    finally:
        browser.quit()


def test_the_y4m_camera_file_holds_the_frames_chromium_expects(tmp_path: Path) -> None:
    path = live_page.write_y4m(tmp_path / "c.y4m", Image.new("RGB", (64, 48), (255, 0, 0)), frames=3)
    data = path.read_bytes()
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 W64 H48 ") and b"C420" in header
    frame = 6 + 64 * 48 * 3 // 2  # "FRAME\n", then Y at full and Cb, Cr at half resolution
    assert len(rest) == 3 * frame and rest[:6] == b"FRAME\n"
    y = np.frombuffer(rest[6:6 + 64 * 48], np.uint8)
    assert abs(int(y.mean()) - 76) <= 1  # pure red's luma (ITU-R 601)

