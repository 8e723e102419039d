"""serve.py and the live page: the HTTP answers, hostile requests, several tabs, and headless Chromium with a fake
camera that plays the sample photo (the browser tests skip where Chromium is absent, and fail instead on CI)."""

import http.client
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
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
    """One request on a connection of its own; a POST's body is sent as image/jpeg unless headers say otherwise."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    connection.request(method, path, body=body, headers={**({"Content-Type": "image/jpeg"} if method == "POST"
                                                               else {}), **(headers or {})})
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


def png(mode: str, size: tuple[int, int]) -> bytes:
    """A blank picture of size in a PNG of a few kB: a decompression bomb for a server that decodes first."""
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG")
    return out.getvalue()


def empty_png() -> bytes:
    """A PNG whose header says 0x10 pixels, which Pillow cannot write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


BODIES = {"cut": lambda: jpeg(live_page.camera_frame())[:3000],  # a JPEG cut short
          "huge": lambda: png("1", (12_000, 6_000)), "bomb": lambda: png("1", (7071, 7071)),
          "strip": lambda: png("L", (40_000, 1)), "empty": empty_png}


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), [
    ("/api/faces?name=notes.txt", b"these are words", {}, 400, "notes.txt: not a readable image"),
    ("/api/faces?name=cut.jpg", "cut", {}, 400, "cut.jpg: not a readable image"),
    ("/api/faces?name=huge.png", "huge", {}, 400, "huge.png: 12000x6000 pixels, more than 50,000,000"),
    ("/api/faces?name=bomb.png", "bomb", {}, 400, "bomb.png: 7071x7071 pixels, more than 16,777,216 to decode"),
    ("/api/faces?name=strip.png", "strip", {}, 400, "strip.png: 40000x1 pixels, one side more than 20 times"),
    ("/api/faces?name=empty.png", "empty", {}, 400, "empty.png: not a readable image"),
    ("/api/faces?kind=video", b"x", {}, 400, "kind='video': frame or photo"),
    ("/api/other", b"x", {}, 404, "/api/other: no such address"),
    ("/api/faces", b"x", {"Content-Length": str(serve.MAX_UPLOAD + 1)}, 413, "at most 10 MB"),
    ("/api/faces", b"x", {"Host": "attacker.example:8000"}, 403, "not 'attacker.example'"),
    ("/api/faces", b"x", {"Content-Length": "\u00b2"}, 400, "Content-Length '\u00b2' is not a number"),
    ("/api/faces", b"x", {"Content-Length": "1, 1"}, 400, "Content-Length '1, 1' is not a number"),
    ("/api/faces", b"x", {"Content-Length": "-1"}, 400, "is not a number of bytes"),
    ("/api/faces", b"x", {"Transfer-Encoding": "chunked"}, 411, "send a Content-Length"),
    ("/api/faces", b"x", {"Origin": "http://attacker.example"}, 403, "'http://attacker.example' are refused"),
    ("/api/faces", b"x", {"Origin": "null"}, 403, "'null' are refused"),
    ("/api/faces", b"x", {"Sec-Fetch-Site": "cross-site"}, 403, "a cross-site request is refused"),
    ("/api/faces", b"x", {"Sec-Fetch-Site": "same-site"}, 403, "a same-site request is refused"),
    ("/api/faces", b"x", {"Content-Type": "text/plain"}, 415, "'text/plain': a picture is sent as image/"),
    ("/api/faces", b"x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "a picture is sent as"),
    ("/api/faces", b"x", {"Content-Type": ""}, 415, "Content-Type '': a picture is sent as"),
])
def test_a_bad_request_gets_an_error_answer_and_the_server_goes_on(server, path, body, headers, status,
                                                                   message) -> None:
    body = BODIES[body]() if isinstance(body, str) else body
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    connection.putrequest("POST", path, skip_host="Host" in headers)
    for name, value in {"Content-Length": str(len(body)), "Content-Type": "image/png", **headers}.items():
        if value:
            connection.putheader(name, value.encode("latin-1"))
    connection.endheaders()
    connection.send(body)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == status and message in answer["error"] and "Traceback" not in answer["error"]
    assert request(server, "GET", "/")[0] == 200  # still serving


def test_a_request_without_a_length_is_refused(server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    connection.putrequest("POST", "/api/faces")
    connection.putheader("Content-Type", "image/jpeg")
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
        serve.main(["photo.jpg"])
    assert exit_info.value.code == 2 and "unrecognized arguments: photo.jpg" in capsys.readouterr().err
    with serve.FaceServer(("127.0.0.1", 0), []) as taken:
        with pytest.raises(SystemExit) as exit_info:
            serve.main(["--port", str(taken.server_address[1]), "--model", released("compact")[0]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "cannot listen on 127.0.0.1:" in err


def exchange(server, data: bytes) -> http.client.HTTPResponse:
    """Bytes sent as they are, and the answer read."""
    connection = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
    connection.sendall(data)
    response = http.client.HTTPResponse(connection)
    response.begin()
    connection.close()
    return response


@pytest.mark.parametrize(("headers", "status"), [({"Content-Type": "text/plain"}, 415),
                                                ({"Origin": "http://attacker.example"}, 403)])
def test_a_refused_big_body_still_gets_its_answer(server, headers: dict, status: int) -> None:
    body = os.urandom(4 * 2**20)
    for _ in range(5):  # an answer lost to a reset is a matter of timing
        assert request(server, "POST", "/api/faces", body, headers)[0] == status


def test_two_content_lengths_are_a_400(server) -> None:
    response = exchange(server, b"POST /api/faces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                                b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx")
    assert response.status == 400 and json.loads(response.read()) == {
        "error": "2 Content-Length headers; one is needed"}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_other_methods_are_a_405_that_says_which_are_allowed(server, method: str) -> None:
    status, headers, body = request(server, method, "/api/faces", b"x", {"Content-Type": "image/jpeg"})
    assert status == 405 and headers["Allow"] == "GET, HEAD, POST" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": f"{method}: only GET, HEAD, POST"}


def test_a_malformed_request_line_or_header_is_one_line_of_json(server) -> None:
    connection = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
    connection.sendall(b"GET / HTTP/9\r\n\r\n")  # http.server answers without a status line, as HTTP/0.9
    answer = b""
    for _ in range(100):  # until the server closes the connection
        data = connection.recv(4096)
        answer += data
        if not data:
            break
    connection.close()
    assert json.loads(answer) == {"error": "Bad request version ('HTTP/9')"}
    response = exchange(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n")
    assert response.status == 431 and json.loads(response.read()) == {"error": "Line too long"}


def test_the_page_and_its_own_requests_pass_another_sites_do_not(server) -> None:
    own = f"http://127.0.0.1:{server.server_address[1]}"
    frame = jpeg(live_page.camera_frame())
    assert request(server, "POST", "/api/faces?kind=frame", frame, {"Origin": own, "Sec-Fetch-Site": "same-origin"})[0] == 200
    assert request(server, "POST", "/api/faces?kind=frame", frame, {"Content-Type": "application/octet-stream"})[0] == 200
    assert request(server, "POST", "/api/faces?kind=frame", frame, {"Content-Type": "image/png"})[0] == 200  # the bytes decide
    assert request(server, "POST", "/api/faces?kind=frame", frame, {"Origin": own.replace("127.0.0.1", "localhost")})[0] == 403
    # a link to the page from elsewhere opens it; another site's script cannot load its files
    assert request(server, "GET", "/", None, {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})[0] == 200
    assert request(server, "GET", "/app.js", None, {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})[0] == 403
    assert request(server, "GET", "/", None, {"Origin": "http://attacker.example"})[0] == 403


def test_app_js_sends_camera_frames_and_untyped_files_as_the_server_takes_them(server, tmp_path: Path) -> None:
    """The page's own findFaces, run by Node's fetch (the browser tests do the same in Chromium, on CI)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = (serve.WEB / "app.js").read_text()
    start = script.index("async function findFaces(")
    find_faces = script[start:script.index("\n}\n", start) + 3]
    (tmp_path / "frame.jpg").write_bytes(jpeg(live_page.camera_frame()))
    (tmp_path / "run.js").write_text(f"""
const fs = require("fs");
const ownFetch = fetch;
globalThis.fetch = (url, init) => ownFetch("http://127.0.0.1:{server.server_address[1]}" + url, init);
{find_faces}
(async () => {{
  const bytes = fs.readFileSync({json.dumps(str(tmp_path / "frame.jpg"))});
  const frame = await findFaces(new Blob([bytes], {{ type: "image/jpeg" }}), "frame", "camera");
  const untyped = await findFaces(new Blob([bytes]), "photo", "no-type");
  console.log(JSON.stringify([frame.faces.length, untyped.rows[0][0]]));
}})().catch((error) => console.log(`failed: ${{error.message}}`));
""")
    result = subprocess.run([node, str(tmp_path / "run.js")], capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) == [1, "no-type"], result.stdout + result.stderr


def test_a_big_photo_is_decoded_small_and_its_faces_are_in_its_own_pixels(server) -> None:
    photo = Image.open(faces.sample_photo()).convert("RGB")
    big = photo.resize((photo.width * 8, photo.height * 8), Image.Resampling.BILINEAR)  # 4096x4800: 19.7 MP
    status, _, body = request(server, "POST", "/api/faces?kind=photo&name=big.jpg", jpeg(big))
    answer = json.loads(body)
    assert status == 200 and (answer["width"], answer["height"]) == (4096, 4800)
    face = max(answer["faces"], key=lambda f: f["side"])  # hers; at 8 times the size a spot of the uniform may be one too
    assert 8 * 240 < face["x"] + face["side"] / 2 < 8 * 290 and 8 * 200 < face["y"] + face["side"] / 2 < 8 * 260
    assert [face["x"], face["y"], face["side"], face["side"]] in [row[2:6] for row in answer["rows"]]


@pytest.fixture
def blocked_server(monkeypatch: pytest.MonkeyPatch):
    """A server whose classifications wait for a signal: every decode slot can be held at will."""
    httpd = serve.FaceServer(("127.0.0.1", 0), [])
    entered, release = threading.Semaphore(0), threading.Event()

    def find(rgb, upsample):
        entered.release()
        release.wait(30)
        return []

    monkeypatch.setattr(httpd, "find", find)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, entered, release
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_more_pictures_than_decode_slots_wait_then_get_a_503(blocked_server, monkeypatch: pytest.MonkeyPatch) -> None:
    httpd, entered, release = blocked_server
    monkeypatch.setattr(serve, "QUEUE_SECONDS", 0.5)
    frame = jpeg(live_page.camera_frame())
    with ThreadPoolExecutor(serve.DECODES_AT_ONCE) as pool:
        held = [pool.submit(request, httpd, "POST", "/api/faces?kind=frame", frame)
                for _ in range(serve.DECODES_AT_ONCE)]
        assert all(entered.acquire(timeout=30) for _ in held)  # every slot is taken
        start = time.monotonic()
        status, _, body = request(httpd, "POST", "/api/faces?kind=frame", frame)
        assert status == 503 and "busy" in json.loads(body)["error"] and time.monotonic() - start < 5
        release.set()
        assert [future.result(timeout=30)[0] for future in held] == [200] * serve.DECODES_AT_ONCE
    assert request(httpd, "POST", "/api/faces?kind=frame", frame)[0] == 200


def test_memory_beyond_the_idle_level_goes_back_after_each_request(monkeypatch: pytest.MonkeyPatch) -> None:
    mb = 2**20
    resident, trims = [500 * mb], []

    def trim() -> None:  # what malloc_trim would leave: 60 MB of caches more than before
        trims.append(resident[0] // mb)
        resident[0] = 560 * mb

    monkeypatch.setattr(serve, "resident_bytes", lambda: resident[0])
    monkeypatch.setattr(serve, "give_back_memory", trim)
    with serve.FaceServer(("127.0.0.1", 0), []) as httpd:
        with httpd.working():
            with httpd.working():
                resident[0] = 900 * mb  # a big picture
            assert trims == [900] and httpd.settled == 500 * mb  # another request is still at work
        assert trims == [900]  # 560 MB: within the margin
        with httpd.working():
            resident[0] = 700 * mb
        assert trims == [900, 700] and httpd.settled == 560 * mb  # idle: the new level
        with httpd.working():
            resident[0] += serve.TRIM_MARGIN // 2  # a camera frame's buffers are kept
        assert trims == [900, 700]


def test_a_body_that_comes_too_slowly_is_a_408(server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "REQUEST_SECONDS", 1.0)
    connection = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
    connection.sendall(b"POST /api/faces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                       b"Content-Length: 100\r\n\r\n")
    start = time.monotonic()
    for _ in range(20):  # a byte every 0.2 s, each read well within any timeout of its own
        try:
            connection.sendall(b"x")
        except OSError:
            break
        time.sleep(0.2)
    response = http.client.HTTPResponse(connection)
    response.begin()
    assert response.status == 408 and "took more than 1.0 s" in json.loads(response.read())["error"]
    assert time.monotonic() - start < 5
    connection.close()


def test_headers_that_come_too_slowly_lose_the_connection(server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "REQUEST_SECONDS", 1.0)
    connection = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    start, closed = time.monotonic(), False
    for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"y" * 30:  # at most 10 s
        try:
            connection.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.2)
    if not closed:
        connection.settimeout(5)
        closed = connection.recv(100) == b""
    assert closed and time.monotonic() - start < 4
    connection.close()
    assert request(server, "GET", "/")[0] == 200


@pytest.mark.parametrize("sent", [b"POST /api/faces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                                  b"Content-Length: 5000\r\n\r\n" + b"x" * 100, b"POST /api/fa"])
def test_a_client_that_hangs_up_costs_one_log_line(server, capfd: pytest.CaptureFixture, sent: bytes) -> None:
    capfd.readouterr()
    connection = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    connection.sendall(sent)
    time.sleep(0.2)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset
    connection.close()
    err = ""
    for _ in range(50):  # at most 5 s
        err += capfd.readouterr().err
        if err:
            break
        time.sleep(0.1)
    time.sleep(0.3)
    err += capfd.readouterr().err
    assert err.count("\n") == 1 and "ConnectionResetError" in err and "Traceback" not in err
    assert request(server, "GET", "/")[0] == 200


@pytest.mark.parametrize(("host", "bound", "allowed"), [
    ("127.0.0.1", "127.0.0.1", True), ("localhost", "127.0.0.1", True), ("::1", "::1", True),
    ("attacker.example", "127.0.0.1", False), ("192.168.1.5", "127.0.0.1", False),
    ("192.168.1.5", "192.168.1.5", True), ("localhost", "192.168.1.5", True), ("10.0.0.2", "192.168.1.5", False),
    ("attacker.example", "192.168.1.5", False),
    ("192.168.1.5", "0.0.0.0", True), ("fe80::1", "::", True), ("mybox", "0.0.0.0", True),
    ("mybox.local", "0.0.0.0", True), ("attacker.example", "0.0.0.0", False), ("attacker.example", "", False),
    ("", "0.0.0.0", False), ("", "", False),
])
def test_the_host_check_follows_the_address_listened_on(host: str, bound: str, allowed: bool) -> None:
    assert serve.host_allowed(host, bound, {"mybox", "mybox.local"}) is allowed


def test_a_server_on_every_interface_answers_its_addresses_not_other_names(server,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "bound", "0.0.0.0")
    frame = jpeg(live_page.camera_frame())
    port = server.server_address[1]
    assert request(server, "POST", "/api/faces?kind=frame", frame, {"Host": f"192.0.2.7:{port}"})[0] == 200
    assert request(server, "POST", "/api/faces?kind=frame", frame, {"Host": f"evil.example:{port}"})[0] == 403


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                             ("0.0.0.0", True), ("::", True), ("192.168.1.5", True)])
def test_listening_beyond_loopback_prints_one_warning(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                      host: str, warned: bool) -> None:
    class Listening:  # the server, without opening a port
        server_address = (host, 8000)

        def __init__(self, address, models, tta):
            pass

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            pass

    monkeypatch.setattr(serve, "FaceServer", Listening)
    serve.serve([], host, 8000)
    out, err = capsys.readouterr()
    assert "serving the live page at http://" in out
    if warned:
        assert err.count("\n") == 1 and f"listening on {host}, not loopback" in err and "reachable from the network" in err
    else:
        assert err == ""


# --- in a real browser ---

def need_browser() -> None:
    problem = live_page.browser_missing()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def page_server():
    """python serve.py, as a person starts it, on a free port."""
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

