"""The live page (python serve.py) timed and seen: start-up, per-frame latency, and the frame rate a
real browser shows with a fake camera that plays the sample photo; a screenshot for the README.

  python -m bench.live_page [--frames 60] [--screenshot docs/live_page.jpg]

Start-up is the wall time from starting the process to its address line (median of 3). Latency is one
640x480 JPEG camera frame sent and answered over one kept-alive connection, as the page does (median).
The browser is Debian's headless Chromium driven by Selenium through chromedriver; tests/test_serve.py
uses the same helpers.
"""

import argparse
import http.client
import io
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import faces

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver
# headless and off the network: no first-run, sync, component updates or QUIC (machines/python.md)
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
                  "--window-size=1100,1400"]
ADDRESS_LINE = re.compile(r"serving the live page at (http://\S+/)")


def camera_frame(width: int = 640, height: int = 480) -> Image.Image:
    """The sample photo's head, about 200 pixels wide, on a plain background: what a webcam sees."""
    photo = Image.open(faces.sample_photo()).convert("RGB")
    head = photo.resize((round(photo.width * 0.75), round(photo.height * 0.75)))
    frame = Image.new("RGB", (width, height), (90, 110, 130))
    frame.paste(head, ((width - head.width) // 2, (height - head.height) // 2 + 40))
    return frame


def write_y4m(path: Path, frame: Image.Image, frames: int = 10, fps: int = 10) -> Path:
    """A raw YUV 4:2:0 video of one picture, the format of Chromium's --use-file-for-fake-video-capture."""
    y, cb, cr = frame.convert("YCbCr").split()
    half = (frame.width // 2, frame.height // 2)
    planes = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{frame.width} H{frame.height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + planes)
    return path


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    return None


def open_browser(profile: Path, camera: Path | None = None, allow_camera: bool = True):
    """Headless Chromium under chromedriver; camera: a .y4m file the fake camera plays; allow_camera=False
    answers the page's camera request with a refusal, as a person clicking Block would."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    if camera is not None:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-video-capture={camera}")
    options.add_argument("--use-fake-ui-for-media-stream" if allow_camera else "--deny-permission-prompts")
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def start_server(*flags: str, timeout: float = 60) -> tuple[subprocess.Popen, str, float]:
    """serve.py on a free port: the process, its address and the seconds until it said it."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--port", "0", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = start + timeout
    while time.perf_counter() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        found = ADDRESS_LINE.search(line)
        if found:
            return process, found.group(1), time.perf_counter() - start
    process.kill()
    raise RuntimeError(f"serve.py did not start: {process.stdout.read()}")


def frame_latency(address: str, jpeg: bytes, frames: int) -> list[float]:
    """Milliseconds per camera frame, sent one after another over one connection as the page sends them."""
    host, port = address.split("//")[1].rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    times = []
    for _ in range(frames + 1):  # the first one warms up
        start = time.perf_counter()
        connection.request("POST", "/api/faces?kind=frame", body=jpeg, headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append((time.perf_counter() - start) * 1000)
    connection.close()
    return times[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60, help="camera frames timed over HTTP")
    p.add_argument("--screenshot", help="save the page, camera running and the sample photo dropped, here")
    p.add_argument("--seconds", type=float, default=10, help="how long the browser's camera runs before reading "
                   "its frame rate")
    args = p.parse_args()
    frame = io.BytesIO()
    camera_frame().save(frame, "JPEG", quality=85)
    starts = []
    for _ in range(3):
        process, address, seconds = start_server()
        starts.append(seconds)
        process.kill()
        process.wait()
    print(f"start-up to the address line: median {statistics.median(starts):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in starts)})")
    process, address, _ = start_server()
    try:
        ms = frame_latency(address, frame.getvalue(), args.frames)
        print(f"640x480 camera frame, one face, sent and answered: median {statistics.median(ms):.1f} ms "
              f"(p90 {np.percentile(ms, 90):.1f}) = {1000 / statistics.median(ms):.1f} frames/s, n={len(ms)}")
        problem = browser_missing()
        if problem:
            print(f"no browser: {problem}")
            return
        profile = Path(tempfile.mkdtemp(prefix="live-page-"))
        browser = open_browser(profile, write_y4m(profile / "camera.y4m", camera_frame()))
        try:
            from selenium.webdriver.common.by import By

            browser.get(address)
            browser.find_element(By.ID, "start").click()
            time.sleep(args.seconds)
            print(f"Chromium, fake camera, after {args.seconds:.0f} s: {browser.find_element(By.ID, 'rate').text}")
            if args.screenshot:
                browser.find_element(By.ID, "files").send_keys(str(faces.sample_photo()))
                time.sleep(3)
                png = io.BytesIO(browser.get_screenshot_as_png())
                Image.open(png).convert("RGB").save(args.screenshot, quality=80)  # a JPEG name: a tenth the size
                print(f"screenshot: {args.screenshot}")
        finally:
            browser.quit()
            shutil.rmtree(profile, ignore_errors=True)
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
