#!/usr/bin/env bash
# The main job: SmolLM2-135M-Instruct reads the first chapters of Jane
# Austen's Persuasion and answers a question about them; every generated
# token's attention runs through libfasa (FASA, N_fac 256) on the best
# available backend.  Prints tokens/s and how much of the cache attention
# read.  Extra arguments go to `fasa run` (e.g. --variant dense, --backend vulkan).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
model=$(bash tools/get-model.sh | tail -1)
bash tools/get-texts.sh >/dev/null
bash tools/build.sh
build/tools/fasa info | grep -E "^auto picks"
# about 3000 tokens of the novel: chapters I-II
head -c 12000 texts/persuasion.txt > build/prompt-persuasion.txt
build/tools/fasa run --model "$model" --prompt-file build/prompt-persuasion.txt \
  --question "Who is Sir Walter Elliot, and what does he like to read?" --max-tokens 96 \
  --n-sink 4 --n-recent 28 "$@"   # the best 25%-of-dims setting in docs/QUALITY.md
