#!/usr/bin/env bash
# The whole pipeline on the bundled sample, on CPU, in a few minutes:
#   bash scripts/smoke.sh                 # one process
#   NPROC=2 bash scripts/smoke.sh         # torchrun with 2 gloo processes
# Any variable of scripts/smoke.env can be overridden from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python data/make_sample.py
while IFS='=' read -r key value; do
  [[ -z "$key" || "$key" == \#* ]] && continue
  [[ -z "${!key:-}" ]] && export "$key=$value"
done < scripts/smoke.env
export RUN_ID="${RUN_ID:-smoke}"
if [[ "${NPROC:-1}" == 1 ]]; then
  exec python train_gpt.py
fi
exec torchrun --standalone --nproc_per_node="$NPROC" train_gpt.py
