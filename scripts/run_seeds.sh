#!/usr/bin/env bash
# The record's three seeds, one training run after another (8 GPUs each by default):
#   bash scripts/run_seeds.sh                          # seeds 1337 42 7, RUN_ID record_seed<SEED>
#   SEEDS="42 7" RUN_PREFIX=try2 NPROC=8 bash scripts/run_seeds.sh
#   CONFIG=configs/beyond.env bash scripts/run_seeds.sh   # a configuration file: RUN_ID beyond_seed<SEED>
# Each run writes logs/<RUN_ID>.txt; its final_model.int6.ptz is copied to logs/<RUN_ID>.int6.ptz
# before the next seed overwrites it, which marks the seed finished. Stops at the first failing run.
# Run again to retry: finished seeds are kept and skipped, a failed seed's log is moved to
# logs/<RUN_ID>.failed-<time>.txt and the seed runs again. Any other hyperparameter is passed
# through from the environment (the same for every seed). CONFIG names a file of VAR=VALUE lines
# (configs/): each variable not already set in the environment is taken from it, and RUN_PREFIX
# defaults to the file's name. Ends by printing the command that summarises the logs
# (scripts/summarize_logs.py).
# The seeds run the packed submission (scripts/pack.py), logs/<RUN_PREFIX>.train_gpt.py, written
# once per RUN_PREFIX, so that their logs count the code bytes that are submitted: that file is
# the record folder's train_gpt.py. PACK=0 runs train_gpt.py as it is. A retry refuses to go on
# when train_gpt.py has changed since a seed of the same RUN_PREFIX finished.
set -euo pipefail
if [[ -n "${CONFIG:-}" ]]; then
  if [[ ! -f "$CONFIG" ]]; then
    echo "error: CONFIG=$CONFIG is not a file" >&2; exit 1
  fi
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    if ! [[ "$line" =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]]; then
      echo "error: $CONFIG: not VAR=VALUE: $line" >&2; exit 1
    fi
    name="${BASH_REMATCH[1]}"
    [[ -n "${!name+x}" ]] || export "$name=${BASH_REMATCH[2]}"
  done < "$CONFIG"
  config_name="$(basename "$CONFIG")"
  RUN_PREFIX="${RUN_PREFIX:-${config_name%.env}}"
fi
cd "$(dirname "$0")/.."
SEEDS="${SEEDS-1337 42 7}"  # set but empty is an error, not the default
NPROC="${NPROC:-8}"
RUN_PREFIX="${RUN_PREFIX:-record}"
read -r -a seeds <<< "$SEEDS"
if (( ${#seeds[@]} == 0 )); then
  echo "error: SEEDS is empty" >&2; exit 1
fi
if [[ -n "${EVAL_ARTIFACT:-}" ]]; then
  echo "error: EVAL_ARTIFACT is set ($EVAL_ARTIFACT): run_seeds.sh trains; unset it" >&2; exit 1
fi
declare -A seen=()
for seed in "${seeds[@]}"; do
  if ! [[ "$seed" =~ ^[0-9]+$ ]]; then
    echo "error: SEEDS must be non-negative integers, got '$seed'" >&2; exit 1
  fi
  if [[ -n "${seen[$seed]:-}" ]]; then
    echo "error: seed $seed appears twice in SEEDS" >&2; exit 1
  fi
  seen[$seed]=1
done
PACK="${PACK:-1}"
mkdir -p logs
if [[ "$PACK" == 1 ]]; then
  script="logs/${RUN_PREFIX}.train_gpt.py"
  python scripts/pack.py --out "${script}.new" > /dev/null
  if [[ -f "$script" ]] && ! cmp -s "$script" "${script}.new" && compgen -G "logs/${RUN_PREFIX}_seed*.int6.ptz" > /dev/null; then
    rm -f "${script}.new"
    echo "error: train_gpt.py has changed since seeds of ${RUN_PREFIX} finished from ${script}: use another RUN_PREFIX" >&2; exit 1
  fi
  mv "${script}.new" "$script"
  echo "=== packed train_gpt.py into ${script} ($(wc -c < "$script") bytes), which every seed runs"
elif [[ "$PACK" == 0 ]]; then
  script=train_gpt.py
else
  echo "error: PACK must be 0 or 1, got '$PACK'" >&2; exit 1
fi
logs=()
for seed in "${seeds[@]}"; do
  run_id="${RUN_PREFIX}_seed${seed}"
  logs+=("logs/${run_id}.txt")
  if [[ -f "logs/${run_id}.int6.ptz" && -f "logs/${run_id}.txt" ]]; then
    echo "=== seed ${seed}: finished before (logs/${run_id}.txt, logs/${run_id}.int6.ptz), skipped"
    continue
  fi
  if [[ -e "logs/${run_id}.txt" ]]; then
    failed="logs/${run_id}.failed-$(date +%Y%m%d-%H%M%S).txt"
    mv "logs/${run_id}.txt" "$failed"
    echo "=== seed ${seed}: an earlier run did not finish; its log moved to ${failed}"
  fi
  echo "=== seed ${seed}: RUN_ID=${run_id}, ${NPROC} processes"
  SEED="$seed" RUN_ID="$run_id" torchrun --standalone --nproc_per_node="$NPROC" "$script"
  if [[ ! -f "logs/${run_id}.txt" || ! -f final_model.int6.ptz ]]; then
    echo "error: run ${run_id} left no logs/${run_id}.txt or final_model.int6.ptz" >&2; exit 1
  fi
  cp final_model.int6.ptz "logs/${run_id}.int6.ptz"
  echo "=== seed ${seed} done: logs/${run_id}.txt, logs/${run_id}.int6.ptz"
done
echo
echo "All ${#seeds[@]} seeds done; they ran ${script}, the train_gpt.py to submit."
echo "Summarise them, test against the record and write submission.json:"
vocab="${VOCAB_SIZE:-1024}"
if [[ "$vocab" == 1024 ]]; then  # the 1.1178 record's val_loss, nats per token of its 1024-piece tokenizer
  record="--record-val-loss 1.88731 --record-vocab 1024"
else  # val_loss is per token: the record to beat must be of the same tokenizer
  record="--record-val-loss RECORD_VAL_LOSS --record-vocab ${vocab}"
fi
echo "  python scripts/summarize_logs.py ${logs[*]} ${record} \\"
echo "      --submission submission.json --author 'NAME' --github-id 'ID' --name 'RUN NAME' --blurb 'TEXT'"
