#!/usr/bin/env bash
# The whole pipeline on the bundled sample, on CPU, in a few minutes:
#   bash scripts/smoke.sh                                  # one process
#   NPROC=2 bash scripts/smoke.sh                          # torchrun with 2 gloo processes
#   CONFIG=configs/sp8192.env bash scripts/smoke.sh        # a configuration, at the smoke size
# The sizes of scripts/smoke.env apply on top of CONFIG's settings; the environment wins over both.
# The sample is built for the run's vocabulary: data/sample (1024 pieces) or data/sample_sp<V>.
set -euo pipefail
cd "$(dirname "$0")/.."
read_settings() {  # exports each VAR=VALUE of a file that the environment (or an earlier file) has not set
  while IFS='=' read -r key value; do
    [[ -z "$key" || "$key" == \#* ]] && continue
    [[ -z "${!key+x}" ]] && export "$key=$value"
  done < "$1"
  return 0
}
data_path="${DATA_PATH-}" tokenizer_path="${TOKENIZER_PATH-}"  # the environment's, if it names the data
read_settings scripts/smoke.env
if [[ -n "${CONFIG:-}" ]]; then
  [[ -f "$CONFIG" ]] || { echo "error: CONFIG=$CONFIG is not a file" >&2; exit 1; }
  read_settings "$CONFIG"
fi
vocab="${VOCAB_SIZE:-1024}"
sample="data/sample"
[[ "$vocab" == 1024 ]] || sample="data/sample_sp${vocab}"
python data/make_sample.py --vocab "$vocab"
export DATA_PATH="${data_path:-$sample}" TOKENIZER_PATH="${tokenizer_path:-$sample/sample_${vocab}_bpe.model}"
export RUN_ID="${RUN_ID:-smoke}"
unset SEEDS CONFIG
if [[ "${NPROC:-1}" == 1 ]]; then
  exec python train_gpt.py
fi
exec torchrun --standalone --nproc_per_node="$NPROC" train_gpt.py
