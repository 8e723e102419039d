"""Live expressions in a browser: a local web page (web/) for the camera and for dropped photos; this server
finds and classifies the faces of every picture the page sends, with faces.py's own code.

  python serve.py [--host 127.0.0.1] [--port 8000] [--model PATH ... | --ensemble] [--no-tta] [--threads N]

The standard library's threading HTTP server: nothing to install beyond the project, no build step, and a
start-up of the imports and the models only. The page sends one camera frame at a time and the next as soon
as the answer is back, so the frame rate follows what the server keeps up with. Nothing is written to disk.
"""

import argparse
import ctypes
import io
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

import faces
from detector import weights_problem
from utils import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, fail

WEB = Path(__file__).resolve().parent / "web"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}  # the page's files; nothing else is served
MAX_UPLOAD = 10 * 2**20  # bytes in one request: a phone photo fits, a flood does not
MAX_PIXELS = 50_000_000  # pixels of one picture, read from its header: a 50-MP photo fits, a bomb does not
DECODE_PIXELS = 2**24  # pixels decoded whole at most (4096x4096, 64 MB at 4 bytes a pixel): a 16-MP PNG fits; a
# baseline JPEG of any size is decoded at a smaller scale
WORK_SIDE = 2 * faces.DETECT_SIDE  # pictures are shrunk by a whole factor to at most this long a side: detection
# sees at most half of it, the crops up to twice detection's detail
UPLOADS_AT_ONCE = 8  # request bodies held at once (80 MB at most); more wait for one, then get a 503
DECODES_AT_ONCE = 2  # pictures being decoded or classified, one at a time each: the next is decoded meanwhile
MODEL_THREADS = 1  # PyTorch threads for the models: each request runs on a thread of its own, where a bigger pool
# ran slower than one thread (docs/faces.md); the next picture's decoding takes the other core
QUEUE_SECONDS = 10  # how long a request waits for either of those before its 503
REQUEST_SECONDS = 30  # the whole of a request (line, headers, body) must arrive within this
BIG_BUFFER_BYTES = 8 * 2**20  # a buffer this big gets pages of its own, unmapped when freed: a camera frame's are
# all smaller and stay in the heap for the next frame (model.keep_freed_memory), a big picture's go back at once
HEAP_TRIM_BYTES = 64 * 2**20  # free memory at the top of a heap beyond this goes back to the system when freed
HEAPS = 2  # malloc's arenas for all threads: each keeps memory of its own, whichever thread freed it
M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)
TRIM_MARGIN = 100 * 2**20  # bytes resident above the idle level that are handed back after a request: a camera
# frame's buffers (tens of MB) stay for the next frame, a big picture's do not
ALLOWED_METHODS = "GET, HEAD, POST"
UPLOAD_TYPES = ("image/", "application/octet-stream")  # types a picture may be sent as: a page elsewhere cannot send
# them without a CORS preflight, which this server refuses
FOREIGN_SITES = {"cross-site", "same-site"}  # Sec-Fetch-Site values of a request that another site's page made
# the browser runs the page's scripts from this server alone, and no other site may frame it
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' blob:; img-src 'self' blob: data:; "
                               "media-src 'self' blob: mediastream:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): freed memory goes back as that C library decides
        return None


LIBC = load_libc()


def resident_bytes() -> int:
    """This process's resident memory (Linux); 0 elsewhere."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def hand_back_big_buffers() -> bool:
    """Have glibc's malloc give big buffers, and a heap's free top, back to the system as soon as they are freed,
    and keep the request threads to a few heaps; called before any thread starts. False, and nothing changed,
    under another C library."""
    return LIBC is not None and bool(LIBC.mallopt(M_MMAP_THRESHOLD, BIG_BUFFER_BYTES)
                                     and LIBC.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_BYTES)
                                     and LIBC.mallopt(M_ARENA_MAX, HEAPS))


def give_back_memory() -> None:
    """Hand what glibc's malloc holds free, in every thread's arena, back to the system."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def is_any_address(host: str) -> bool:
    """0.0.0.0, :: or empty: every interface of this machine."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def host_allowed(name: str, bound: str, machine_names: set[str]) -> bool:
    """Whether a request's Host may be answered by a server bound to bound. Loopback names always; a server bound
    elsewhere also its own address or name, and one bound to every interface any address and this machine's
    names. A DNS-rebinding page can put only a name of its own there, never an address."""
    return bool(name) and (is_loopback(name) or name == bound.lower()
                           or (is_any_address(bound) and (is_address(name) or name in machine_names)))


def network_warning(host: str) -> str | None:
    """The one-line warning for a server that other machines can reach, or None on loopback."""
    if is_loopback(host):
        return None
    return (f"serve.py: warning: listening on {host}, not loopback: the camera page and its API are reachable "
            "from the network")


def origin_of(url: str) -> tuple[str, str | None, int] | None:
    """scheme, host and port of an origin or URL (None where it is not one), for comparing two of them."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class FaceServer(ThreadingHTTPServer):
    """Several tabs at once: a thread per request; one picture decoded at a time and one classified, since two at
    once on two cores would only slow each other and hold twice the memory; a few bodies held at once."""

    daemon_threads = True  # Ctrl-C does not wait for a tab that keeps its connection open
    request_queue_size = 64  # connections the kernel holds until they are accepted: a burst is queued, not reset

    def __init__(self, address: tuple[str, int], models: list, tta: bool = True):
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.models, self.tta, self.lock, self.decoding = models, tta, threading.Lock(), threading.Lock()
        self.bound = address[0]
        hostname = socket.gethostname().lower()
        self.machine_names = {hostname, f"{hostname}.local"}
        self.uploads = threading.BoundedSemaphore(UPLOADS_AT_ONCE)
        self.decodes = threading.BoundedSemaphore(DECODES_AT_ONCE)
        self.counting, self.in_flight, self.settled = threading.Lock(), 0, resident_bytes()

    def decode(self, body: bytes, name: str) -> tuple[np.ndarray, tuple[int, int]]:
        """The picture, shrunk, and its own size; a picture that cannot be read is a 400."""
        with self.decoding:
            try:
                return faces.read_image_within(io.BytesIO(body), name, MAX_PIXELS, DECODE_PIXELS, WORK_SIDE)
            except faces.InputError as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None

    def find(self, rgb: np.ndarray, upsample: int) -> list[faces.Face]:
        with self.lock:
            return faces.find_faces(rgb, self.models, upsample, self.tta)

    @contextmanager
    def working(self) -> Iterator[None]:
        """Around a request's work; after it, memory it left beyond the idle level goes back to the system."""
        with self.counting:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.counting:
                self.in_flight -= 1
                idle = self.in_flight == 0
            self.settle_memory(idle)

    def settle_memory(self, idle: bool) -> None:
        if resident_bytes() > self.settled + TRIM_MARGIN:
            give_back_memory()
            if idle:  # what is left now is the idle level: the caches of the models and libraries
                self.settled = resident_bytes()

    def handle_error(self, request, client_address: tuple) -> None:
        """One line for a request that failed outside the handler's own answers (a client gone mid-request)."""
        error = sys.exc_info()[1]
        print(f"serve.py: {client_address[0]}:{client_address[1]}: {type(error).__name__}: {error}", file=sys.stderr)


@contextmanager
def slot(semaphore: threading.BoundedSemaphore, what: str) -> Iterator[None]:
    """One of a few places, waited for QUEUE_SECONDS at most; a 503 when none frees up."""
    if not semaphore.acquire(timeout=QUEUE_SECONDS):
        raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"the server is busy with other {what}; try again")
    try:
        yield
    finally:
        semaphore.release()


class DeadlineReader(io.RawIOBase):
    """The connection's bytes, with one deadline for a whole request, not a timeout for each read: a client that
    sends a byte now and then cannot hold its thread for ever."""

    def __init__(self, connection: socket.socket):
        self.connection, self.deadline = connection, time.monotonic() + REQUEST_SECONDS

    def readable(self) -> bool:
        return True

    def restart(self) -> None:
        self.deadline = time.monotonic() + REQUEST_SECONDS

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request took more than {REQUEST_SECONDS} s to arrive")
        self.connection.settimeout(left)
        return self.connection.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    server: FaceServer
    protocol_version = "HTTP/1.1"  # keep-alive: a camera's frames reuse one connection
    disable_nagle_algorithm = True  # headers and body go out as written: no wait on the client's delayed ACK
    timeout = 30  # seconds an answer may wait on a client that does not read it

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own reader, replaced by one with a deadline
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.restart()  # a kept-alive connection's next request: its wait for it counts too
        self.body_read = False
        super().handle_one_request()  # a request that does not arrive in time: the connection is closed

    def log_message(self, format: str, *args) -> None:  # only errors are logged, not every frame
        pass

    def send(self, status: HTTPStatus, body: bytes, content_type: str, cache: bool = False,
             headers: dict | None = None) -> None:
        self.connection.settimeout(self.timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache" if cache else "no-store")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: HTTPStatus, obj: dict, headers: dict | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json", headers=headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line or headers, a method without a do_ here) as the
        same one-line JSON as the others."""
        self.close_connection = True
        if code == HTTPStatus.NOT_IMPLEMENTED:
            self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command}: only {ALLOWED_METHODS}"},
                           {"Allow": ALLOWED_METHODS})
        else:
            self.send_json(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase})

    def check_host(self) -> None:
        """Only requests addressed to this server: a page elsewhere that rebinds its own name to this server's
        address (DNS rebinding) gets no answer."""
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if not host_allowed(host, self.server.bound, self.server.machine_names):
            raise RequestError(HTTPStatus.FORBIDDEN, f"this server answers to its own address or localhost, "
                                                     f"not {host!r}")

    def check_origin(self) -> None:
        """Only the page's own requests: another site's page (a form, a no-cors fetch) is refused; following a
        link to the page from elsewhere is not."""
        origin = self.headers.get("Origin")
        if origin is not None and origin_of(origin) != origin_of(f"http://{self.headers.get('Host', '')}"):
            raise RequestError(HTTPStatus.FORBIDDEN, f"requests from {origin[:100]!r} are refused: "
                                                     "only this page's own")
        site = self.headers.get("Sec-Fetch-Site")
        navigation = self.command in ("GET", "HEAD") and self.headers.get("Sec-Fetch-Mode") == "navigate"
        if site in FOREIGN_SITES and not navigation:
            raise RequestError(HTTPStatus.FORBIDDEN, f"a {site} request is refused: only this page's own")

    def handle_errors(self, work: Callable[[], None]) -> None:
        try:
            self.answer_or_refuse(work)
        except ConnectionError as e:  # the client hung up: nothing to answer, one line in the log
            self.close_connection = True
            print(f"serve.py: {self.client_address[0]}:{self.client_address[1]} hung up during {self.command} "
                  f"{self.path[:100]} ({type(e).__name__})", file=sys.stderr)

    def answer_or_refuse(self, work: Callable[[], None]) -> None:
        try:
            self.check_host()
            self.check_origin()
            work()
        except RequestError as e:
            self.close_connection = True
            self.discard_body()
            self.send_json(e.status, {"error": str(e)})
        except (ConnectionError, TimeoutError):  # the client, not a bug: handled by the callers
            raise
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

    def check_upload_type(self) -> None:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not kind.startswith(UPLOAD_TYPES):
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                               f"Content-Type {kind[:100]!r}: a picture is sent as image/jpeg, image/png, ... "
                               "or application/octet-stream")

    def body_length(self) -> int:
        """The body's length, from the one Content-Length a request must give."""
        if "Transfer-Encoding" in self.headers:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Transfer-Encoding is not accepted: send a "
                                                           "Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request must give its Content-Length")
        if len(lengths) > 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{len(lengths)} Content-Length headers; one is needed")
        if not re.fullmatch(r"[0-9]{1,15}", lengths[0].strip()):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {lengths[0][:20]!r} is not a number of bytes")
        length = int(lengths[0])
        if length > MAX_UPLOAD:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the file is {length / 2**20:.1f} MB; at most {MAX_UPLOAD // 2**20} MB")
        return length

    def read_body(self, length: int) -> bytes:
        self.body_read = True
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT,
                               f"the request took more than {REQUEST_SECONDS} s to arrive") from None
        if len(body) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the request ended before its body did")
        return body

    def discard_body(self) -> None:
        """The unread body of a refused POST, read and dropped (at most MAX_UPLOAD bytes, within the request's
        deadline): a connection closed on unread bytes is reset, and the client may lose the answer with it."""
        if self.command != "POST" or self.body_read:
            return
        try:
            left = self.body_length()
            while left > 0:
                chunk = self.rfile.read1(min(left, 2**16))
                if not chunk:
                    return
                left -= len(chunk)
        except (RequestError, OSError):  # no valid length, too long, too late or gone: closed as it is
            pass

    def query(self) -> tuple[str, str]:
        """kind and name of POST /api/faces?kind=frame|photo&name=..."""
        url = urlsplit(self.path)
        if url.path != "/api/faces":
            raise RequestError(HTTPStatus.NOT_FOUND, f"{url.path}: no such address")
        query = parse_qs(url.query)
        kind = query.get("kind", ["photo"])[0]
        if kind not in ("frame", "photo"):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"kind={kind!r}: frame or photo")
        return kind, query.get("name", ["camera" if kind == "frame" else "photo"])[0][:200]

    def answer_faces(self) -> None:
        """POST /api/faces?kind=frame|photo&name=...: the picture in the body; the faces as JSON, with the rows
        faces.csv would hold, in the picture's own pixels."""
        kind, name = self.query()
        self.check_upload_type()
        length = self.body_length()
        with self.server.working():
            answer = self.faces_of_body(kind, name, length)
        self.send_json(HTTPStatus.OK, answer)

    def faces_of_body(self, kind: str, name: str, length: int) -> dict:
        start = time.perf_counter()
        with slot(self.server.uploads, "uploads"):
            body = self.read_body(length)
            with slot(self.server.decodes, "pictures"):
                rgb, size = self.server.decode(body, name)
                del body  # not held while the picture waits for the lock
                found = self.server.find(rgb, faces.VIDEO_UPSAMPLE if kind == "frame" else faces.PHOTO_UPSAMPLE)
        found = in_source_pixels(found, max(size) / max(rgb.shape[:2]))
        return {
            "width": size[0], "height": size[1],
            "faces": [{"x": f.frame[0], "y": f.frame[1], "side": f.frame[2], "label": f.label,
                       "probs": dict(zip(faces.CLASS_NAMES, map(float, f.probs), strict=True))} for f in found],
            "columns": faces.COLUMNS, "rows": faces.rows(name, 0, found),
            "ms": round((time.perf_counter() - start) * 1000, 1)}


def in_source_pixels(found: list[faces.Face], scale: float) -> list[faces.Face]:
    """Faces found in a shrunk picture, their squares in the source's pixels."""
    if scale == 1:
        return found
    return [faces.Face((round(x * scale), round(y * scale), round(side * scale)), face.probs)
            for face in found for x, y, side in [face.frame]]


def serve(models: list, host: str, port: int, tta: bool = True) -> None:
    """Serve until Ctrl-C, saying where once the models are loaded and the port is open."""
    server = FaceServer((host, port), models, tta)
    warning = network_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving the live page at http://{shown}:{server.server_address[1]}/ ; Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serve the live page: the expressions of the faces in the browser's "
                                "camera and in photos dropped on it; writes nothing.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; another than loopback lets other "
                   "machines send pictures (a warning says so)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0: any free one")
    faces.add_model_options(p, threads=MODEL_THREADS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = weights_problem()
    if problem:
        fail("serve.py", problem)
    hand_back_big_buffers()  # before the models' threads start
    models = faces.chosen_models(args)
    faces.face_detector()  # loaded before the first request, not during it
    try:
        serve(models, args.host, args.port, tta=not args.no_tta)
    except OSError as e:  # the port is taken, or the address is not this machine's
        fail("serve.py", f"cannot listen on {args.host}:{args.port} ({e.strerror or e})")


if __name__ == "__main__":
    main()
