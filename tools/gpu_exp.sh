#!/bin/bash
# Issue 26 on one GPU: the cuda recipe (paper recipe, fp32, on cuda) for xx / xy / hybrid x seeds 0, 1,
# each trained on XQuAD-R, evaluated on MLQA-R (per-query values) and on the downstream suite; then
# zero-shot e5-small on cuda. One process chain per sampler (seed 0, then seed 1), run side by side;
# the zero-shot chain starts when the first of them ends. Every result is packed into $OUT/results.tar
# as it lands, so a stop part-way leaves what finished.
#   PAYLOAD: dir with q4.part2, tokenizer.json.xz, data.tar.xz, code.tar; STORE: dir with q4.part1
#   Knobs for a local dry run: RECIPE (cuda), DEVICE (cuda), EXTRA (e.g. "--max-steps 2"), TASKS,
#   SEEDS ("0 1"), SAMPLERS ("hybrid xx xy"), ZS_SETS (zero-shot datasets: "mlqa-r <tasks>"; "" for none).
set -o pipefail
export PYTHONUNBUFFERED=1
T0=$(date +%s)
PAYLOAD=${PAYLOAD:?} STORE=${STORE:?} OUT=${OUT:?}
W=${W:-$STORE/w}
RECIPE=${RECIPE:-cuda} DEVICE=${DEVICE:-cuda} EXTRA=${EXTRA:-} TASKS=${TASKS:-xnli,tydiqa,sib-200,tatoeba}
SEEDS=${SEEDS:-0 1} SAMPLERS=${SAMPLERS:-hybrid xx xy} ZS_SETS=${ZS_SETS-mlqa-r ${TASKS//,/ }}
PY=${PY:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} MKL_NUM_THREADS=${OMP_NUM_THREADS:-4}
export MINIHBT_MIRROR=$W/mirror MINIHBT_CACHE=$W/cache
C=$W/code
export PYTHONPATH=$C  # experiments/*.py import the package from the unpacked checkout
mkdir -p "$W" "$MINIHBT_MIRROR" "$MINIHBT_CACHE/e5-small" "$C"
mkdir -p "$W"/pack/{logs,zero-shot-cuda,results,selection,downstream}
TIMES=$W/pack/timings.tsv
el() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(el) s] $*"; }

pack() {  # everything finished so far -> $OUT/results.tar (atomic rename inside $OUT)
    until mkdir "$W/pack.lock" 2>/dev/null; do sleep 0.2; done
    (
        cd "$W/pack" || exit
        for f in "$C"/docs/results/*__*-"$RECIPE"-s*.json; do [ -f "$f" ] && cp -p "$f" results/ 2>/dev/null; done
        for f in "$C"/docs/results/selection/*-"$RECIPE"-s*.json; do [ -f "$f" ] && cp -p "$f" selection/; done
        for f in "$C"/docs/downstream/*__*-"$RECIPE"-s*.json; do [ -f "$f" ] && cp -p "$f" downstream/; done
        for d in "$C"/runs/reproduce/*-"$RECIPE"-s*; do [ -f "$d/log.jsonl" ] && cp -p "$d/log.jsonl" "logs/$(basename "$d").log.jsonl"; done
        tar -cf "$OUT/.results.tar.tmp" . && mv "$OUT/.results.tar.tmp" "$OUT/results.tar"
    )
    rmdir "$W/pack.lock"
}

timed() {  # timed LABEL LOGFILE cmd...: run, log its output, record the wall seconds and exit status
    local label=$1 log=$2; shift 2
    local t=$(date +%s%N)
    "$@" >>"$log" 2>&1
    local rc=$? ms=$(( ($(date +%s%N) - t) / 1000000 ))
    printf '%s\t%d.%03d\t%s\t%s\n' "$label" $((ms / 1000)) $((ms % 1000)) "$rc" "$(el)" >>"$TIMES"
    say "$label: rc $rc, $(tail -1 "$TIMES" | cut -f2) s"
    return $rc
}

chain() {  # one sampler: for each seed, train + MLQA-R (experiments/reproduce.py), then the downstream suite
    local s=$1 seed name log
    for seed in $SEEDS; do
        name=xquad-r-$s-$RECIPE-s$seed
        log=$W/pack/logs/$name.out
        (cd "$C" && timed "$name train+mlqa-r" "$log" $PY experiments/reproduce.py --recipe "$RECIPE" --seeds "$seed" --samplers "$s" $EXTRA)
        pack
        (cd "$C" && timed "$name downstream" "$log" $PY experiments/reproduce_downstream.py --models "$name" --tasks "$TASKS" --device "$DEVICE")
        pack
    done
}

zero_shot() {  # e5-small as released, on the GPU: named zero-shot-cuda, apart from the committed CPU zero-shot
    local log=$W/pack/logs/zero-shot-cuda.out z=$W/pack/zero-shot-cuda d
    for d in $ZS_SETS; do
        (cd "$C" && timed "zero-shot-cuda $d" "$log" $PY eval.py --dataset "$d" --model e5-small --device "$DEVICE" \
            --quiet --out "$z/${d}__zero-shot-cuda.json")
        pack
    done
}

setup() {
    say "setup"
    nvidia-smi || true
    $PY - <<'EOF'
import sys, torch, numpy, tokenizers, safetensors
try:
    import transformers; tv = transformers.__version__
except Exception:
    tv = None
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "numpy", numpy.__version__, "tokenizers", tokenizers.__version__,
      "safetensors", safetensors.__version__, "transformers", tv,
      "allow_tf32", torch.backends.cuda.matmul.allow_tf32, "matmul_precision", torch.get_float32_matmul_precision())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
EOF
    cat "$STORE/q4.part1" "$PAYLOAD/q4.part2" >"$MINIHBT_CACHE/e5-small/e5-small-q4.bin" || return 1
    $PY - "$PAYLOAD" "$W" <<'EOF' || return 1
import lzma, shutil, sys, tarfile
payload, w = sys.argv[1:3]
with lzma.open(f"{payload}/tokenizer.json.xz") as s, open(f"{w}/cache/e5-small/tokenizer.json", "wb") as d:
    shutil.copyfileobj(s, d)
with tarfile.open(f"{payload}/data.tar.xz") as t:
    t.extractall(f"{w}/mirror", filter="data")
with tarfile.open(f"{payload}/code.tar") as t:
    t.extractall(f"{w}/code", filter="data")
EOF
    mkdir -p "$C/runs"
    (cd "$C" && $PY - <<'EOF') || return 1
import time
t = time.time()
from minihbt import artifacts
from minihbt.convert import model_dir
for name in ("xquad-r", "mlqa-r", "xnli", "tydiqa-goldp", "sib-200", "tatoeba"):
    artifacts.fetch(name)  # from the mirror into the cache, every sha256 checked
print("data verified", round(time.time() - t, 1), "s")
print("model", model_dir("e5-small"), round(time.time() - t, 1), "s")
EOF
    say "setup done"
}

printf 'task\twall_s\trc\tended_at_s\n' >"$TIMES"
timed "setup" "$W/pack/logs/setup.out" setup || { cat "$W/pack/logs/setup.out"; pack; exit 1; }
cat "$W/pack/logs/setup.out" | tail -25
cp "$W/pack/logs/setup.out" "$W/pack/env.txt"
command -v nvidia-smi >/dev/null && (nvidia-smi dmon -s um -d 5 >"$W/pack/dmon.txt" 2>&1 &)
pack

pids=()
for s in $SAMPLERS; do chain "$s" & pids+=($!); done
wait -n "${pids[@]}"
[ -n "$ZS_SETS" ] && { zero_shot & pids+=($!); }
wait "${pids[@]}"
say "all done"
cat "$TIMES"
pack
