#!/usr/bin/env bash
# The GPU suite, one command for one H100: bash bench/gpu_suite.sh OUTDIR [TRAIN_CSV] [core|extras|all]
#
#   core    a smoke run, the fast preset alone, SEEDS full-preset seeds side by side, their ensemble's
#           held-out JSON, and the full models as fp16 checkpoints (the seeds feed the release)
#   extras  the full-length ablations side by side: no augmentation, no normalisation, no label smoothing,
#           mixup, CutMix, the MLP preset
#   all     both, one after the other
#
# OUTDIR gets at most 8 files: logs.tar.gz (every console log and history JSON, the ensemble JSON, wall
# times and the summary) and, from core, fast.pt and full_s<seed>.pt with fp16 weights (under 16 MB
# each). It is packed on exit, whatever happened, so a stage cut short still brings back what it
# finished; every stage is cut to fit BUDGET seconds in all (default 500: 9 minutes less unpacking the data
# and packing the results).
#
# SMOKE=1 runs the same stages on a CPU with tiny sizes (700 rows, a narrow net, 2 epochs).
# TRAIN_CSV defaults to ../shared/fer2013/train.csv.gz; on the GPU machine it comes from the data pack:
#   python3 gpu_data/unpack.py gpu_data/train.pack /tmp/train.csv && bash bench/gpu_suite.sh $OUT /tmp/train.csv
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: bash bench/gpu_suite.sh OUTDIR [TRAIN_CSV] [core|extras|all]"
[ $# -ge 1 ] && [ $# -le 3 ] || { echo "$usage" >&2; exit 2; }
out="$1"
csv="${2:-$here/../shared/fer2013/train.csv.gz}"
stages="${3:-core}"
case "$stages" in core|extras|all) ;; *) echo "$usage" >&2; exit 2 ;; esac
[ -f "$csv" ] || { echo "gpu_suite.sh: $csv: no such file" >&2; exit 2; }
seeds="${SEEDS:-3}"  # full-preset seeds trained side by side: the ensemble's members
[[ "$seeds" =~ ^[1-6]$ ]] || { echo "gpu_suite.sh: SEEDS=$seeds: 1 to 6 (8 files come back: logs, fast, seeds)" >&2; exit 2; }
mkdir -p "$out" 2>/dev/null && [ -w "$out" ] || { echo "gpu_suite.sh: $out: not a writable folder" >&2; exit 2; }
python="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
flags="${FLAGS:-}"  # appended to every training run but the smoke run, e.g. FLAGS="--epochs 60" to fit a budget
deadline=$((SECONDS + ${BUDGET:-500}))
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # logs line by line, no progress bars in them

work="$(mktemp -d)"
logs="$work/logs"
mkdir -p "$logs"
pack() {  # every log into one archive; the checkpoints beside it with fp16 weights
  set +e
  for ckpt in "$work"/fast/model.pt "$work"/full_s*/model.pt; do
    if [ -f "$ckpt" ]; then
      PYTHONPATH="$here" "$python" -m tools.half "$ckpt" "$out/$(basename "$(dirname "$ckpt")").pt" >> "$logs/half.log" 2>&1
    fi
  done
  tar -czf "$out/logs.tar.gz" -C "$work" logs
  rm -rf "$work"
}
trap pack EXIT

# SMOKE=1: tiny data, network and schedule, every stage the same.
tiny=()  # extra flags for every run after the smoke run
if [ "${SMOKE:-0}" = 1 ]; then
  { zcat -f "$csv" || true; } | head -n 701 > "$work/train.csv"  # the header and 700 faces (zcat stops early)
  csv="$work/train.csv"
  tiny=(--channels 8,16 --hidden 16 --epochs 2 --batch-size 64 --patience 99)
fi
tiny+=($flags)

say() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$logs/suite.log"; }
left() {  # seconds the next stage may take, keeping $1 for the stages after it (at least 10)
  local s=$((deadline - SECONDS - $1))
  echo $((s > 10 ? s : 10))
}
train() {  # train LIMIT NAME [train.py flags]: one run into $work/NAME, stopped after LIMIT seconds
  local limit="$1" name="$2" start rc=0
  shift 2
  mkdir -p "$work/$name"
  start="$EPOCHREALTIME"
  timeout "$limit" "$python" "$here/train.py" "$csv" --out "$work/$name/model.pt" "$@" > "$logs/$name.log" 2>&1 \
    || rc=$?
  echo -e "$name\t$start\t$EPOCHREALTIME\t$rc" >> "$logs/walls.tsv"  # process wall time, start-up included
  return $rc
}
side_by_side() {  # side_by_side LIMIT "NAME FLAGS..." ...: all at once on the one device; fails if one does
  local limit="$1" pids=() status=0 spec
  shift
  for spec in "$@"; do
    # shellcheck disable=SC2086  # NAME and its flags are meant to split into words
    train "$limit" $spec &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  return $status
}

say "device: $("$python" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch", torch.__version__)')"
{ nvidia-smi || true; "$python" -V; nproc; } > "$logs/env.txt" 2>&1

# Stage 0, smoke: seconds of every code path the stages use; any error stops the suite here. It asks for
# deterministic kernels too: any op without one warns in logs/smoke.log.
say "smoke"
train 120 smoke --preset fast --channels 8,16 --hidden 16 --epochs 1 --batch-size 64 --mixup 0.2 --cutmix 1.0 \
  --deterministic
PYTHONPATH="$here" "$python" -m bench.heldout "$csv" --model "$work/smoke/model.pt" --device auto > "$logs/smoke_heldout.log" 2>&1
rm -rf "$work/smoke"

if [ "$stages" != extras ]; then
  # Stage 1: the fast preset alone on the device.
  say "fast"
  side_by_side "$(left 300)" "fast --preset fast ${tiny[*]}" || say "fast: failed or cut short"
  # Stage 2: the full preset, one process per seed, side by side: their steady epoch seconds against the
  # fast run's (same network and batch, alone) say whether sharing the GPU raises throughput.
  say "full x $seeds seeds, side by side"
  specs=()
  for ((s = 0; s < seeds; s++)); do specs+=("full_s$s --preset full --seed $s ${tiny[*]}"); done
  side_by_side "$(left 40)" "${specs[@]}" || say "full: a seed failed or was cut short"
  # Stage 3: the ensemble of the seeds' best epochs, on the held-out split they share.
  members=()
  for ((s = 0; s < seeds; s++)); do
    if [ -f "$work/full_s$s/model.pt" ]; then members+=(--model "$work/full_s$s/model.pt"); fi
  done
  say "ensemble of $((${#members[@]} / 2))"
  [ ${#members[@]} -eq 0 ] || PYTHONPATH="$here" "$python" -m bench.heldout "$csv" "${members[@]}" --device auto \
    --json "$logs/ensemble.json" > "$logs/ensemble.log" 2>&1 || say "ensemble: failed"
fi

if [ "$stages" != core ]; then
  # Stage 4: the ablations, each one change to the full preset at seed 0, side by side.
  say "ablations, side by side"
  side_by_side "$(left 20)" "no_augment --preset full --no-augment ${tiny[*]}" \
    "no_normalize --preset full --no-normalize ${tiny[*]}" \
    "no_label_smoothing --preset full --label-smoothing 0 ${tiny[*]}" \
    "mixup --preset full --mixup 0.2 ${tiny[*]}" "cutmix --preset full --cutmix 1.0 ${tiny[*]}" \
    "mlp --preset mlp ${tiny[*]}" || say "ablations: some failed or were cut short"
fi

# Every history next to its log, then the summary table (also logs/summary.json).
for history in "$work"/*/model.json; do
  if [ -f "$history" ]; then cp "$history" "$logs/$(basename "$(dirname "$history")").json"; fi
done
PYTHONPATH="$here" "$python" -m bench.gpu_summary "$logs" | tee "$logs/summary.txt"
say "done"
