#!/usr/bin/env bash
# The GPU check of issue 20: one call, under 8 minutes on one H100/H200, from the project root.
#
#   bash benchmarks/gpu_check.sh            # CUDA: the real figures
#   DRY=1 bash benchmarks/gpu_check.sh      # CPU, every size shrunk: proves the plumbing
#
# Needs the system's CUDA torch and the project's pure-Python dependencies only: the project
# is used from this tree (PYTHONPATH), nothing is installed. Every part runs in its own
# process under `timeout`; a failed part prints its log's last lines and the rest go on.
# Prints one line per figure and writes $OUT/gpu_check.json (every part's figures).
#
#   population  packed M = 4 vs sequential M = 4 vs one model, one epoch, face_cnn and
#               iresnet50 at 112x112, batch 128: time ratios, peak memory, the memory plan,
#               and what packing = "auto" chooses by its speed trial (the measured ratio)
#   heads       IResNet-50 fwd+bwd images/s, bf16, ArcFace 100k classes vs Linear + CE
#   search      `lfsearch search search_softmax --device cuda --epochs 2` and face_recipe
#               --epochs 1 on a generated 112x112 identity folder, streamed: finite test metric
#   syncs       host reads per training step, sequential and packed
#   stream      streamed images/s against the number of workers
#
# Environment: DRY=1; PYTHON (default python3); OUT (default ./gpu_check_out, DRY:
# $WORK/out); WORK (scratch, default a fresh temporary folder).
set -u
PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY="${DRY:-0}"
PY="${PYTHON:-python3}"
WORK="${WORK:-$(mktemp -d /tmp/lfsearch_gpu_check.XXXXXX)}"
export PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
if [ "$DRY" = "1" ]; then
  DEV=cpu; DRYFLAG=--dry; OUT="${OUT:-$WORK/out}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  IDS=6; PER=6; SIZE=32; MODEL_ARGS="--model face_cnn"
  T_POP=150; T_HEADS=60; T_SEARCH=150; T_SYNCS=60; T_STREAM=60
else
  DEV=cuda; DRYFLAG=; OUT="${OUT:-$PWD/gpu_check_out}"
  IDS=200; PER=20; SIZE=112; MODEL_ARGS=""
  T_POP=170; T_HEADS=60; T_SEARCH=150; T_SYNCS=30; T_STREAM=60   # 470 s in all
fi
mkdir -p "$OUT" "$WORK"
FAILED=0

part() {  # part NAME LIMIT COMMAND...: run under timeout, keep its log, report a failure
  local name="$1" limit="$2"; shift 2
  local log="$WORK/$name.log"
  if timeout "$limit" "$@" >"$log" 2>&1; then
    grep -E "^\[$name\]" "$log"
  else
    local rc=$?
    FAILED=$((FAILED + 1))
    echo "[$name] FAILED (exit $rc$([ $rc = 124 ] && echo ", over ${limit}s")); last lines:"
    tail -n 8 "$log" | sed 's/^/    /'
  fi
}

search_part() {  # the two searches on a generated identity folder, streamed
  "$PY" - "$WORK" "$IDS" "$PER" "$SIZE" <<'EOF' || return 1
import sys
from pathlib import Path
import numpy as np
from PIL import Image
work, ids, per, size = Path(sys.argv[1]), *map(int, sys.argv[2:])
rng = np.random.default_rng(0)
for i in range(ids):  # each identity: a base image plus noise, so it can be learned
    base = rng.integers(0, 256, (size, size, 3))
    (work / "faces" / f"id{i:04d}").mkdir(parents=True, exist_ok=True)
    for k in range(per):
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(work / "faces" / f"id{i:04d}" / f"{k}.jpg", quality=90)
EOF
  "$PY" - "$PROJECT/search_spaces/face_recipe.toml" "$WORK/face_recipe.toml" <<'EOF' || return 1
import sys, tomllib, tomli_w
recipe = tomllib.loads(open(sys.argv[1]).read())
recipe["reward"]["validation"] = [{"benchmark": "main", "weight": 1.0}]  # no .bin files here
recipe.pop("test", None)
recipe["training"]["batch_size"] = 64
open(sys.argv[2], "w").write(tomli_w.dumps(recipe))
EOF
  local bench="folder:$WORK/faces?size=${SIZE}x${SIZE}&channels=3&stream=yes&val=0.2&test=0.2&pairs=400"
  local t0 t1
  for run in search_softmax face_recipe; do
    local space="$run" epochs=2
    [ "$run" = face_recipe ] && space="$WORK/face_recipe.toml" && epochs=1
    t0=$(date +%s)
    "$PY" -m lfsearch search "$space" --benchmark "$bench" --device "$DEV" --epochs "$epochs" \
      $MODEL_ARGS --out "$WORK/runs/$run" --force --quiet || return 1
    t1=$(date +%s)
    "$PY" - "$WORK/runs/$run" "$run" "$((t1 - t0))" "$OUT/search_$run.json" <<'EOF' || return 1
import json, math, sys
run, name, seconds, out = sys.argv[1:]
res = json.load(open(f"{run}/results.json"))
man = json.load(open(f"{run}/manifest.json"))
value = res["test"].get(res["test_metric"])
ok = value is not None and math.isfinite(value)
pk = man["packing"]
ratio = (pk.get("trial") or {}).get("ratio")
print(f"[search] {name}: {res['test_metric']} {value} ({'finite' if ok else 'NOT FINITE'}), "
      f"{seconds} s, packing {pk.get('mode')} chunk {pk.get('chunk')} ({pk.get('reason')}"
      + (f", packed/sequential {ratio:.3f}" if ratio is not None else "") + ")")
json.dump({"test_metric": res["test_metric"], "value": value, "seconds": int(seconds),
           "packing": man["packing"], "backends": man.get("backends")}, open(out, "w"))
sys.exit(0 if ok else 1)
EOF
  done
}

echo "gpu_check: device $DEV, work $WORK, out $OUT"
part population "$T_POP" "$PY" "$PROJECT/benchmarks/gpu_check.py" population --json "$OUT/population.json" $DRYFLAG
part heads "$T_HEADS" "$PY" "$PROJECT/benchmarks/gpu_check.py" heads --json "$OUT/heads.json" $DRYFLAG
export -f search_part; export PY WORK IDS PER SIZE DEV MODEL_ARGS OUT PROJECT
part search "$T_SEARCH" bash -c search_part
part syncs "$T_SYNCS" "$PY" "$PROJECT/benchmarks/gpu_check.py" syncs --json "$OUT/syncs.json" $DRYFLAG
part stream "$T_STREAM" "$PY" "$PROJECT/benchmarks/gpu_check.py" stream --json "$OUT/stream.json" $DRYFLAG

"$PY" - "$OUT" "$DEV" "$FAILED" <<'EOF'
import json, sys
from pathlib import Path
out, dev, failed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
merged = {"device": dev, "failed_parts": failed}
for f in sorted(out.glob("*.json")):
    if f.name != "gpu_check.json":
        try:
            merged[f.stem] = json.loads(f.read_text())
        except ValueError:
            merged[f.stem] = None
if dev == "cuda":
    import torch
    merged["gpu"] = torch.cuda.get_device_name(0)
(out / "gpu_check.json").write_text(json.dumps(merged, indent=1))
print(f"gpu_check: {failed} part(s) failed; figures in {out / 'gpu_check.json'}")
EOF
exit $((FAILED > 0))
