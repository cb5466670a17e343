#!/usr/bin/env bash
# Install, then run the main job on the offline defaults (SmolLM2-135M, rt-critics),
# stage by stage, into runs/demo. Pass another run directory as $1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN=${1:-runs/demo}
LIMIT=${LIMIT:-2000}

python cli.py finetune    --run-dir "$RUN" --limit "$LIMIT"
python cli.py extract     --run-dir "$RUN" --resume
python cli.py train-gates --run-dir "$RUN" --kind all
python cli.py simulate    --run-dir "$RUN"
python cli.py infer       --run-dir "$RUN" --split test --output "$RUN/test-predictions.jsonl" --compare-full
