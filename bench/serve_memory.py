"""The live page's server (python serve.py) under a burst of worst-case pictures: its resident memory
idle, at the peak of the burst and a few seconds after, and every answer's status.

  python -m bench.serve_memory [--posts 20] [--settle 5]

The server runs as a subprocess on 127.0.0.1 with the released models; its memory is read from
/proc/<pid>/status (VmRSS polled every 20 ms, VmHWM the kernel's own peak). The posts go all at once, each on a
connection of its own, cycling through pictures that cost the most a body of at most 10 MB can: the 7071x7071
one-bit PNG of a few kB, JPEGs of 50 MP, a progressive JPEG, 16-MP PNG, WebP, TIFF and GIF, a 40000x1 strip.
"""

import argparse
import http.client
import io
import os
import platform
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from bench.live_page import camera_frame, start_server
from utils import git_commit

POLL_SECONDS = 0.02  # how often the server's VmRSS is read during the burst
QUIET_SECONDS = 2  # the wait after start-up before idle memory is read


def encoded(picture: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def worst_cases() -> dict[str, bytes]:
    """name -> the file: each the costliest of its kind to decode, in a small body."""
    big, full, wide = (7071, 7071), (4096, 4096), (31600, 1580)  # 50 MP; the decode budget; 50 MP at 20:1
    return {
        "png 1-bit 7071x7071": encoded(Image.new("1", big), "PNG"),
        "jpeg 7071x7071": encoded(Image.new("RGB", big, (120, 100, 90)), "JPEG"),
        "jpeg cmyk 7071x7071": encoded(Image.new("CMYK", big, (20, 40, 60, 10)), "JPEG"),
        "jpeg 31600x1580": encoded(Image.new("RGB", wide, (120, 100, 90)), "JPEG"),
        "jpeg progressive 7071x7071": encoded(Image.new("RGB", big, (120, 100, 90)), "JPEG", progressive=True),
        "jpeg progressive 4096x4096": encoded(Image.new("RGB", full, (120, 100, 90)), "JPEG", progressive=True,
                                              subsampling=0),
        "png rgba 4096x4096": encoded(Image.new("RGBA", full, (120, 100, 90, 200)), "PNG"),
        "png 16-bit 4096x4096": encoded(Image.new("I;16", full, 3000), "PNG"),
        "webp 4096x4096": encoded(Image.new("RGBA", full, (120, 100, 90, 200)), "WEBP", lossless=True),
        "tiff float 4096x4096": encoded(Image.new("F", full, 0.5), "TIFF", compression="tiff_adobe_deflate"),
        "gif 4096x4096": encoded(Image.new("P", full, 3), "GIF"),
        "png 40000x1": encoded(Image.new("L", (40_000, 1)), "PNG"),
    }


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and VmRSS's parts (RssAnon: the heap; RssFile: code and mapped files) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) // 1024 for name in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def described(reading: dict[str, int]) -> str:
    return ", ".join(f"{name} {mb} MB" for name, mb in reading.items())


def post(port: int, body: bytes, name: str) -> tuple[int | str, float]:
    """One picture on a connection of its own: the status and the seconds to it; the error where none came."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/api/faces?kind=photo&name=" + name.replace(" ", "_"), body=body,
                           headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    except OSError as e:
        return type(e).__name__, time.perf_counter() - start
    finally:
        connection.close()


def burst(port: int, pid: int, pictures: list[tuple[str, bytes]]) -> tuple[list[tuple[str, int | str, float]], int]:
    """All the posts at once; their answers, and the highest VmRSS seen meanwhile."""
    peak, done = 0, threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, memory(pid)["VmRSS"])
            time.sleep(POLL_SECONDS)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(pictures)) as pool:
            answers = list(pool.map(lambda item: (item[0], *post(port, item[1], item[0])), pictures))
    finally:
        done.set()
        watcher.join()
    return answers, peak


def camera_post(port: int) -> int:
    body = io.BytesIO()
    camera_frame().save(body, "JPEG", quality=85)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/api/faces?kind=frame", body=body.getvalue(), headers={"Content-Type": "image/jpeg"})
    status = connection.getresponse().status
    connection.close()
    return status


def cpu_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    shown = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags)
    return f"{model}, {os.cpu_count()} cores, {shown}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=20, help="posts sent at once")
    p.add_argument("--settle", type=int, default=5, help="seconds of memory readings after the burst")
    args = p.parse_args()
    print(f"# commit {git_commit()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {cpu_line()}")
    cases = worst_cases()
    pictures = [list(cases.items())[i % len(cases)] for i in range(args.posts)]
    process, address, _ = start_server()
    port = int(address.rstrip("/").rsplit(":", 1)[1])
    try:
        time.sleep(QUIET_SECONDS)
        idle = memory(process.pid)
        print(f"idle after start-up: {described(idle)}")
        print(f"one camera frame: {camera_post(port)}; {described(memory(process.pid))}")
        print(f"{args.posts} posts at once, bodies {min(len(b) for _, b in pictures) / 1e3:.0f} kB to "
              f"{max(len(b) for _, b in pictures) / 1e6:.1f} MB:")
        start = time.perf_counter()
        answers, peak = burst(port, process.pid, pictures)
        for name in cases:
            shown = ", ".join(f"{status} in {seconds:.1f} s" for n, status, seconds in answers if n == name)
            print(f"  {name:28} {shown}")
        statuses = Counter(str(status) for _, status, _ in answers)
        print(f"statuses: {dict(sorted(statuses.items()))}, all in {time.perf_counter() - start:.1f} s")
        print(f"peak during the burst: VmRSS {peak} MB (polled), VmHWM {memory(process.pid)['VmHWM']} MB")
        readings = []
        for _ in range(args.settle):
            time.sleep(1)
            readings.append(memory(process.pid))
        print("VmRSS each second after: " + ", ".join(f"{r['VmRSS']} MB" for r in readings))
        print(f"settled: {described(readings[-1])}; VmRSS {readings[-1]['VmRSS'] - idle['VmRSS']:+d} MB on idle")
        print(f"one camera frame after: {camera_post(port)}; {described(memory(process.pid))}")
    finally:
        process.kill()
        log = process.communicate()[0].splitlines()
    print(f"the server's log, {len(log)} line(s){':' if log else ''}")
    for line in log:
        print(f"  {line}")


if __name__ == "__main__":
    main()
