#!/usr/bin/env bash
# Write the Kaggle submission: bash hw2_test.sh <test.csv> <pred.csv> [predict.py flags]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: bash hw2_test.sh <test.csv> <pred.csv> [predict.py flags, e.g. --fast or --model weights/trained.pt]" >&2
  exit 2
fi
python="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
exec "$python" "$here/predict.py" "$@"
