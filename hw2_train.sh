#!/usr/bin/env bash
# Train a model: bash hw2_train.sh <train.csv> [train.py flags]   (writes weights/trained.pt by default)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: bash hw2_train.sh <train.csv> [train.py flags, e.g. --preset cpu; see python train.py --help]" >&2
  exit 2
fi
# The project's virtual environment when there is one, else $PYTHON, else python3.
python="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
exec "$python" "$here/train.py" "$@"
