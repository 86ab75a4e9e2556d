#!/bin/bash
# CRE + BSGA (configs/reid/synthcc_cpu_cre_bsga.yaml) trained on a lent GPU machine on several SynthCC v2 people
# sets at once (README: "GPU figures"). Each set is its own "world": its own people and its own 4 cameras.
#
#   bash benchmarks/gpu_train_synthcc.sh       # from the repository root; $OUT gets the model and its history
#
# Knobs (environment): SETS="11 12 13 14 15 16" (people-set seeds, generated here in parallel), NTRAIN=80
# (training people per set), EPOCHS=15, MIL=11 (epoch of the x0.1 LR step), DEV=cuda, WORKERS=6 (data-loader
# processes), TRAIN_S=230 (time limit; on expiry the last finished epoch is saved as model_partial).
# Where the machine lacks the project's dependencies, put their wheels in .whl/ (installed with --no-deps).
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_train}; mkdir -p "$OUT"
T0=$(date +%s); step() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
SETS=${SETS:-"11 12 13 14 15 16"}; NTRAIN=${NTRAIN:-80}; EPOCHS=${EPOCHS:-15}; MIL=${MIL:-11}; DEV=${DEV:-cuda}
TRAIN_S=${TRAIN_S:-230}; WORKERS=${WORKERS:-6}; WORK=${WORK:-/tmp/gpu_train_work}
if [ -z "$NO_WHEELS" ] && compgen -G ".whl/*.whl" >/dev/null; then  # NO_WHEELS=1: this Python's packages only
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
mkdir -p "$WORK"
step generate
for s in $SETS; do
  python3 -m synth people --preset bench --seed "$s" --out "$WORK/p$s" --set n_train="$NTRAIN" --set n_test=20 --force \
    > "$WORK.gen$s.log" 2>&1 &
done
wait
tail -qn1 "$WORK".gen*.log
first=${SETS%% *}; extra=""
for s in ${SETS#* }; do extra="$extra{dataset: synthcc, root: $WORK/p$s}, "; done
step train
timeout "$TRAIN_S" python3 -m reid train configs/reid/synthcc_cpu_cre_bsga.yaml --root "$WORK/p$first" --output-dir "$WORK/run" \
  --seed 2 --device "$DEV" --no-progress --set "data.extra_train=[${extra%, }]" --set optim.epochs="$EPOCHS" \
  --set "optim.milestones=[$MIL]" --set eval.every=100 --set data.num_workers="$WORKERS" 2>&1 | tail -25
echo "train rc ${PIPESTATUS[0]}"
if [ -f "$WORK/run/model_last.safetensors" ]; then cp "$WORK/run/model_last.safetensors" "$OUT/"; else
  python3 -c "
from reid.checkpoint import save_checkpoint
from reid.models import load_checkpoint
m, spec = load_checkpoint('$WORK/run/last.safetensors', 'cpu')
save_checkpoint('$OUT/model_partial.safetensors', m, spec, inference_only=True)" && echo "partial model saved"
fi
cp "$WORK/run/history.jsonl" "$OUT/" 2>/dev/null
step done
