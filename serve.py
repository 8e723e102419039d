"""Live expressions in a browser: a local web page (web/) for the camera and for dropped photos; this server
finds and classifies the faces of every picture the page sends, with faces.py's own code.

  python faces.py --serve [--host 127.0.0.1] [--port 8000] [--model PATH ...]

The standard library's threading HTTP server: nothing to install beyond the project, no build step, and a
start-up of the imports and the models only. The page sends one camera frame at a time and the next as soon
as the answer is back, so the frame rate follows what the server keeps up with. Nothing is written to disk.
"""

import io
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import faces

WEB = Path(__file__).resolve().parent / "web"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}  # the page's files; nothing else is served
MAX_UPLOAD = 10 * 2**20  # bytes in one request: a phone photo fits, a flood does not
MAX_PIXELS = 50_000_000  # pixels of one picture, checked before it is decoded: a 50-MP photo fits, a bomb does not
# the browser runs the page's scripts from this server alone, and no other site may frame it
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' blob:; img-src 'self' blob: data:; "
                               "media-src 'self' blob: mediastream:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class FaceServer(ThreadingHTTPServer):
    """Several tabs at once: a thread per request, and one lock, since two classifications at once on two cores
    would only slow each other."""

    daemon_threads = True  # Ctrl-C does not wait for a tab that keeps its connection open

    def __init__(self, address: tuple[str, int], models: list, tta: bool = True):
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.models, self.tta, self.lock = models, tta, threading.Lock()

    def find(self, rgb, upsample: int) -> list[faces.Face]:
        with self.lock:
            return faces.find_faces(rgb, self.models, upsample, self.tta)


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Handler(BaseHTTPRequestHandler):
    server: FaceServer
    protocol_version = "HTTP/1.1"  # keep-alive: a camera's frames reuse one connection
    disable_nagle_algorithm = True  # headers and body go out as written: no wait on the client's delayed ACK
    timeout = 30  # seconds a client may stall mid-request before its thread gives up

    def log_message(self, format: str, *args) -> None:  # only errors are logged, not every frame
        pass

    def send(self, status: HTTPStatus, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache" if cache else "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: HTTPStatus, obj: dict) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json")

    def check_host(self) -> None:
        """A server on loopback answers only to loopback names: a page elsewhere that rebinds its own name to
        127.0.0.1 (DNS rebinding) gets no answer."""
        if not is_loopback(self.server.server_address[0]):
            return
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if not is_loopback(host):
            raise RequestError(HTTPStatus.FORBIDDEN, f"this server answers to 127.0.0.1 or localhost, not {host!r}")

    def handle_errors(self, work) -> None:
        try:
            self.check_host()
            work()
        except RequestError as e:
            self.close_connection = True  # the rest of a refused body is not read
            self.send_json(e.status, {"error": str(e)})
        except Exception:  # a bug must not take the server down or show a traceback in the page
            print(f"serve.py: {self.command} {self.path}: {traceback.format_exc().strip().splitlines()[-1]}",
                  file=sys.stderr)
            self.close_connection = True
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the server failed on this request"})

    def do_GET(self) -> None:
        self.handle_errors(self.serve_file)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.handle_errors(self.answer_faces)

    def serve_file(self) -> None:
        page = STATIC.get(urlsplit(self.path).path)
        if page is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"{urlsplit(self.path).path}: no such page")
        self.send(HTTPStatus.OK, (WEB / page[0]).read_bytes(), page[1], cache=True)

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request must give its Content-Length")
        if int(length) > MAX_UPLOAD:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the file is {int(length) / 2**20:.1f} MB; at most {MAX_UPLOAD // 2**20} MB")
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the request ended before its body did")
        return body

    def answer_faces(self) -> None:
        """POST /api/faces?kind=frame|photo&name=...: the picture in the body; the faces as JSON, with the rows
        faces.csv would hold."""
        url = urlsplit(self.path)
        if url.path != "/api/faces":
            raise RequestError(HTTPStatus.NOT_FOUND, f"{url.path}: no such address")
        query = parse_qs(url.query)
        kind = query.get("kind", ["photo"])[0]
        if kind not in ("frame", "photo"):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"kind={kind!r}: frame or photo")
        name = query.get("name", ["camera" if kind == "frame" else "photo"])[0][:200]
        body = self.read_body()
        start = time.perf_counter()
        try:
            rgb = faces.read_image(io.BytesIO(body), name, max_pixels=MAX_PIXELS)
        except faces.InputError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        found = self.server.find(rgb, faces.VIDEO_UPSAMPLE if kind == "frame" else faces.PHOTO_UPSAMPLE)
        self.send_json(HTTPStatus.OK, {
            "width": rgb.shape[1], "height": rgb.shape[0],
            "faces": [{"x": f.frame[0], "y": f.frame[1], "side": f.frame[2], "label": f.label,
                       "probs": dict(zip(faces.CLASS_NAMES, map(float, f.probs), strict=True))} for f in found],
            "columns": faces.COLUMNS, "rows": faces.rows(name, 0, found),
            "ms": round((time.perf_counter() - start) * 1000, 1)})


def serve(models: list, host: str, port: int, tta: bool = True) -> None:
    """Serve until Ctrl-C, saying where once the models are loaded and the port is open."""
    server = FaceServer((host, port), models, tta)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving the live page at http://{shown}:{server.server_address[1]}/ ; Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
