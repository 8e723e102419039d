"""Small process and file utilities every script shares: one-line errors, atomic writes, the git commit, glibc's
malloc settings."""

import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NoReturn


def fail(prog: str, message: str) -> NoReturn:
    """The one-line error every script ends with on bad input: "<prog>: error: <message>", exit code 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
KEEP_FREED_BYTES = 1 << 30  # far above any batch's activations, so none of them is handed back between batches


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory that a batch's tensors free for the next batch. By default it returns
    large blocks to the kernel (munmap, heap trimming), so each batch lands on fresh pages that the kernel must fault
    in and zero, which cost the compact model most of its time (docs/compact.md). False, and nothing changed, under
    another C library (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def git_commit() -> str:
    """HEAD of the repository holding this file, '+dirty' when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def output_problem(path: str | Path, make_folders: bool = False) -> str | None:
    """Why a file cannot be written at path (one line naming it), or None. Scripts check their outputs
    before any work, so a long run never ends in a traceback; make_folders: missing folders get made."""
    path = Path(path)
    if path.is_dir():
        return f"{path}: is a folder; give a file name"
    folder = path.parent
    while make_folders and not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists: the rest will be made
    if not folder.is_dir():
        return f"{path}: {folder} is not a folder" if folder.exists() else f"{path}: folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{path}: folder {folder} is not writable"
    return None


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file,
    and a failed write leaves the old file (or none) in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
