#!/usr/bin/env bash
# make demo: preprocess Debian's fortunes corpus (installed by tools/setup.sh) with the byte
# tokenizer, train configs/demo.yaml from scratch, show the loss falling and a generated sample.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
weft="$build/weft"
corpus_dir=/usr/share/games/fortunes

mkdir -p data
if [ ! -f data/fortunes.idx ]; then
  echo "demo: building the corpus from $corpus_dir"
  # Each fortune (separated by '%' lines) becomes one document (separated by blank lines).
  for f in "$corpus_dir"/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && cat "$f" && printf '\n%%\n'
  done | awk '/^%$/ { print ""; next } { print }' > data/fortunes.txt
  "$weft" preprocess --input data/fortunes.txt --tokenizer byte --output data/fortunes
fi

rm -rf runs/demo
echo "demo: training configs/demo.yaml (progress every 10 steps)"
"$weft" train --config configs/demo.yaml
.venv/bin/python - <<'PY'
import json
rows = [json.loads(l) for l in open("runs/demo/metrics.jsonl")]
steps = [r for r in rows if "event" not in r]
evals = [r for r in rows if r.get("event") == "eval"]
first = sum(r["loss"] for r in steps[:5]) / 5
last = sum(r["loss"] for r in steps[-5:]) / 5
print(f"demo: training loss {first:.3f} -> {last:.3f} (mean of first/last 5 steps)")
if evals:
    print("demo: validation loss " + " -> ".join(f"{e['loss']:.3f}" for e in evals))
PY
echo "demo: sample from the trained model:"
"$weft" generate --checkpoint runs/demo --prompt "The meaning of life is" --max-new-tokens 200 \
  --temperature 0.8 --top-k 40 --seed 1
