#!/usr/bin/env bash
# The whole path on real data: Debian's Fashion-MNIST. The 60k training
# images (L2-normalised pixels, with class labels) become the candidates; the
# test images are streamed as queries, each excluding its own class, so every
# answer is a different class that looks alike: hard negatives.
# Some of them are drawn into build/demo/negatives.png (its path printed).
#
#   ./scripts/demo.sh            installs what is missing, builds, runs
#   DEMO_QUERIES=10000 ./scripts/demo.sh   more queries for the throughput run
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
queries=${DEMO_QUERIES:-5000}

# Builds what `cmake --install` installs and installs it into build/install
# (no root needed); its bin/ goes first on PATH, so the binaries are called
# by their installed names.
./scripts/build.sh hardneg-dist
prefix="$repo/build/install"
cmake --install build --prefix "$prefix" >/dev/null
export PATH="$prefix/bin:$PATH"
work="$repo/build/demo"
mkdir -p "$work"
export OMP_WAIT_POLICY=PASSIVE

echo "== 1. Candidates: Fashion-MNIST's 60,000 training images as a checkpoint"
if [[ ! -f "$work/checkpoints/fashion-mnist/manifest.json" ]]; then
  # --force: a folder without its manifest is an interrupted older run.
  hardneg make-checkpoint --fashion_mnist --split train --force \
    --out "$work/checkpoints" --name fashion-mnist --step 1 \
    --metric inner_product
fi
hardneg make-checkpoint --fashion_mnist \
  --export_queries "$work/queries.npy" --export_labels "$work/labels.npy" \
  --limit "$queries" >/dev/null

echo "== 2. Server: hardneg-server --checkpoints $work/checkpoints --grpc_port 0"
hardneg-server --checkpoints "$work/checkpoints" --grpc_port 0 \
  >"$work/server.out" 2>"$work/server.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q '^listening on' "$work/server.out" 2>/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
port=$(awk '/^listening on/ {print $3}' "$work/server.out")
[[ -n "$port" ]] || { echo "server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
hardneg info --server "127.0.0.1:$port"

echo
echo "== 3. Hard negatives for the first test images (their own class excluded)"
rm -f "$work/negatives.json" "$work/negatives.png"
hardneg mine --server "127.0.0.1:$port" \
  --queries "$work/queries.npy" --labels "$work/labels.npy" \
  --num_negatives 5 --show 4 --label_names fashion-mnist --batch_size 4 \
  --output "$work/negatives.json" 2>/dev/null | sed -n '1,40p' || true
# The same answers as a picture: the first test image of each of 6 classes,
# then its 5 hard negatives (scripts/demo_picture.py, matplotlib).
/usr/bin/python3 scripts/demo_picture.py --negatives "$work/negatives.json" \
  --out "$work/negatives.png" >/dev/null
echo "== picture: $work/negatives.png"

echo
echo "== 4. Throughput and latency over one Mine stream (16 requests in flight)"
# Batch 1 scans all 60k x 784 candidates per query (memory-bound), so it
# runs on the first 500 queries only.
hardneg make-checkpoint --fashion_mnist \
  --export_queries "$work/queries-500.npy" --export_labels "$work/labels-500.npy" \
  --limit 500 >/dev/null
for batch in 1 32 256; do
  q="$work/queries.npy"; l="$work/labels.npy"
  if [[ $batch == 1 ]]; then q="$work/queries-500.npy"; l="$work/labels-500.npy"; fi
  hardneg mine --server "127.0.0.1:$port" --queries "$q" \
    --labels "$l" --num_negatives 10 --batch_size "$batch" --max_in_flight 16 \
    --output "$work/negatives-b$batch.npy" 2>&1 >/dev/null |
    grep -E 'queries/s' | sed "s/^hardneg mine: /  /; s/; index .*//"
done

cat <<TXT

== Your own checkpoint
  The binaries are installed in $prefix/bin:
    export PATH="$prefix/bin:\$PATH"
  (or install them elsewhere: cmake --install build --prefix ~/.local).
  Write <dir>/<name>/ with embeddings-00000.npy (float32 [n, dim]),
  ids-00000.npy (int64 [n]), optional labels-00000.npy, then manifest.json
  last (see README, "Checkpoint layout"), or use
    hardneg make-checkpoint --out <dir> --name <name> --step 1 \\
        --embeddings E.npy --ids I.npy [--labels L.npy]
  then serve it:
    hardneg-server --checkpoints <dir> --grpc_port 50051
  and mine from the CLI (or python/, or the C++ hardneg::Client):
    hardneg mine --server localhost:50051 --queries Q.npy \\
        --positives P.npy --num_negatives 10 --output negatives.npy
TXT
