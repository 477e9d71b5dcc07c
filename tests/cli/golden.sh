#!/usr/bin/env bash
# Golden outputs of the `hardneg` CLI: runs a fixed set of invocations
# (help texts, info, mine in every output format, publish, make-checkpoint,
# usage and runtime errors) against a real hardneg-server on a small
# checkpoint, and writes each one's exit code, stdout, stderr and output
# files to OUT_DIR/<case>.txt, with timings, ports and ages normalised.
#
#   tests/cli/golden.sh BUILD_DIR OUT_DIR          record
#   tests/cli/golden.sh --check BUILD_DIR          compare with tests/cli/golden/
#
# --check exits 1 and shows the diff when any output changed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
check=0
if [[ "${1:-}" == "--check" ]]; then check=1; shift; fi
build=$(cd "$1" && pwd)
if [[ $check == 1 ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
else
  out=$2
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  rm -f "$out"/*.txt
fi
hardneg="$build/client/hardneg"
work=$(mktemp -d)
server_pid=
cleanup_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap 'cleanup_server; [[ $check == 1 ]] && rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=PASSIVE
unset HARDNEG_TOKEN
cd "$work"
/usr/bin/python3 "$here/make_inputs.py" || exit 1

# Timings, rates, ports and ages vary from run to run.
normalise() {
  sed -E \
    -e 's/127\.0\.0\.1:[0-9]+/127.0.0.1:PORT/g' \
    -e 's/ in [0-9.]+ s/ in T s/g' \
    -e 's/[0-9.]+ (queries|negatives)\/s/R \1\/s/g' \
    -e 's/(p50|p99) [0-9.]+ ms/\1 T ms/g' \
    -e 's/[0-9.]+ MB\/s/R MB\/s/g' \
    -e 's/^age: +[0-9.]+ s$/age:          T s/' \
    -e 's/"age_seconds": [0-9.e+-]+/"age_seconds": T/'
}

# Dumps a file that a command wrote: text as is, anything else in hex.
dump_file() {
  echo "--- file $1"
  if [[ ! -e "$1" ]]; then
    echo "(missing)"
  elif [[ "$1" == *.json || "$1" == *.txt ]]; then
    cat "$1"
  else
    od -A d -t x1 -v "$1"
  fi
}

# run NAME [--files F...] -- ARGS...: runs `hardneg ARGS...`.
run() {
  local name=$1; shift
  local files=()
  if [[ "$1" == "--files" ]]; then
    shift
    while [[ "$1" != "--" ]]; do files+=("$1"); shift; done
  fi
  shift
  rm -f "${files[@]}" 2>/dev/null
  "$hardneg" "$@" >stdout.txt 2>stderr.txt </dev/null
  local rc=$?
  {
    echo "\$ hardneg $*"
    echo "--- exit $rc"
    echo "--- stdout"
    cat stdout.txt
    echo "--- stderr"
    cat stderr.txt
    for f in "${files[@]}"; do dump_file "$f"; done
  } | normalise >"$out/$name.txt"
}

# --- no server needed --------------------------------------------------
run main_noargs --
run main_help -- --help
run main_h -- -h
run main_help_word -- help
run main_unknown -- frobnicate
for c in info mine publish make-checkpoint; do
  run "help_$c" -- "$c" --help
done
run help_mine_h -- mine -h
run help_mine_word -- mine help
run help_make_checkpoint_alias -- make_checkpoint --help

run ckpt_npy --files ckpts/run1/manifest.json ckpts/run1/ids-00000.npy \
    ckpts/run1/embeddings-00000.npy ckpts/run1/labels-00000.npy -- \
    make-checkpoint --out ckpts --name run1 --step 5 --embeddings emb.npy \
    --ids ids.npy --labels labels.npy
# An existing checkpoint is replaced only with --force (the whole folder,
# atomically: tests/checkpoint_test.cc), and refused without it.
run ckpt_replace --files ckpts/run0/manifest.json \
    -- make-checkpoint --out ckpts --name run0 --step 1 --metric=l2 \
    --embeddings emb.npy --ids ids.npy --force
run ckpt_replace_again -- make-checkpoint --out=ckpts --name=run0 --step=1 \
    --metric l2 --embeddings=emb.npy --ids=ids.npy
run ckpt_fmnist_export --files fq.npy fl.npy -- make-checkpoint \
    --fashion_mnist --export_queries fq.npy --export_labels fl.npy --limit 3
run ckpt_fmnist_export_raw --files fq2.npy -- make-checkpoint \
    --fashion_mnist --export_queries fq2.npy --limit 2 --normalize=false
run ckpt_fmnist_export_only_labels --files fl2.npy -- make-checkpoint \
    --fashion_mnist --export_labels fl2.npy --limit 4 --nonormalize
run ckpt_err_no_candidates -- make-checkpoint --out x --name y
run ckpt_err_both -- make-checkpoint --out x --name y --embeddings emb.npy \
    --ids ids.npy --fashion_mnist
run ckpt_err_half -- make-checkpoint --out x --name y --embeddings emb.npy
run ckpt_err_labels_alone -- make-checkpoint --out x --name y --fashion_mnist \
    --labels labels.npy
run ckpt_err_export_no_fmnist -- make-checkpoint --export_queries q.npy
run ckpt_err_split -- make-checkpoint --fashion_mnist --split valid --out x \
    --name y
run ckpt_err_metric -- make-checkpoint --out x --name y --embeddings emb.npy \
    --ids ids.npy --metric cosine
run ckpt_err_no_out -- make-checkpoint --name y --embeddings emb.npy \
    --ids ids.npy
run ckpt_err_no_name -- make-checkpoint --out x --embeddings emb.npy \
    --ids ids.npy
run ckpt_err_step -- make-checkpoint --out x --name y --step -3 \
    --embeddings emb.npy --ids ids.npy
run ckpt_err_unknown -- make-checkpoint --out x --name y --queries q.npy
run ckpt_err_positional -- make-checkpoint extra --out x
run ckpt_err_dashdash -- make-checkpoint -- --out x
run ckpt_err_bool -- make-checkpoint --fashion_mnist=maybe
run ckpt_err_missing_value -- make-checkpoint --out
run ckpt_err_nan -- make-checkpoint --out x --name y --embeddings emb_nan.npy \
    --ids ids4.npy
run ckpt_err_dup -- make-checkpoint --out x --name y --embeddings emb.npy \
    --ids ids_dup.npy
run ckpt_err_dup_rows -- make-checkpoint --out x --name y \
    --embeddings emb_nan.npy --ids ids_dup.npy
run ckpt_err_ids_count -- make-checkpoint --out x --name y \
    --embeddings emb.npy --ids ids4.npy
run ckpt_err_labels_count -- make-checkpoint --out x --name y \
    --embeddings emb.npy --ids ids.npy --labels qlabels.npy
run ckpt_err_empty -- make-checkpoint --out x --name y --embeddings empty.npy \
    --ids ids.npy
run ckpt_err_missing_file -- make-checkpoint --out x --name y \
    --embeddings nope.npy --ids ids.npy
run ckpt_err_not_npy -- make-checkpoint --out x --name y \
    --embeddings emb.npy --ids not_npy.npy
run ckpt_err_f64 -- make-checkpoint --out x --name y --embeddings f64.npy \
    --ids ids.npy
run ckpt_err_fmnist_dir -- make-checkpoint --fashion_mnist --dir nowhere \
    --out x --name y

for c in info mine publish; do
  run "err_${c}_no_server" -- "$c"
done
run err_info_format -- info --server 127.0.0.1:1 --format yaml
run err_info_timeout -- info --server 127.0.0.1:1 --timeout=-1
run err_info_timeout_nan -- info --server 127.0.0.1:1 --timeout nan
run err_info_token_file -- info --server 127.0.0.1:1 --token_file nope.txt
run err_mine_no_queries -- mine --server 127.0.0.1:1
run err_mine_unknown -- mine --server 127.0.0.1:1 --queries q.npy --step 3
run err_mine_bad_uint -- mine --server 127.0.0.1:1 --queries q.npy \
    --num_negatives abc
run err_mine_uint_overflow -- mine --server 127.0.0.1:1 --queries q.npy \
    --num_negatives=4294967296
run err_mine_uint_negative -- mine --server 127.0.0.1:1 --queries q.npy \
    --num_negatives=-1
run err_mine_seed_negative -- mine --server 127.0.0.1:1 --queries q.npy \
    --seed=-1
run err_mine_seed_text -- mine --server 127.0.0.1:1 --queries q.npy \
    --seed=1.5
run err_mine_zero_negatives -- mine --server 127.0.0.1:1 --queries q.npy \
    --num_negatives 0
run err_mine_zero_batch -- mine --server 127.0.0.1:1 --queries q.npy \
    --batch_size=0
run err_mine_range -- mine --server 127.0.0.1:1 --queries q.npy \
    --range_min 5 --range_max 7 --num_negatives 3
run err_mine_sampling -- mine --server 127.0.0.1:1 --queries q.npy \
    --sampling best
run err_mine_temperature_nan -- mine --server 127.0.0.1:1 --queries q.npy \
    --temperature nan
run err_mine_temperature_inf -- mine --server 127.0.0.1:1 --queries q.npy \
    --temperature=inf
run err_mine_temperature_negative -- mine --server 127.0.0.1:1 \
    --queries q.npy --temperature=-0.5
run err_mine_max_score_text -- mine --server 127.0.0.1:1 --queries q.npy \
    --max_score high
run err_mine_format -- mine --server 127.0.0.1:1 --queries q.npy \
    --format xml
run err_mine_npy_no_output -- mine --server 127.0.0.1:1 --queries q.npy \
    --format npy
run err_mine_label_names -- mine --server 127.0.0.1:1 --queries q.npy \
    --label_names nope.txt
run err_mine_bool -- mine --server 127.0.0.1:1 --queries q.npy --stream=maybe
run err_mine_negated_string -- mine --server 127.0.0.1:1 --queries q.npy \
    --nooutput
run err_mine_missing_value -- mine --server 127.0.0.1:1 --queries
run err_mine_positional -- mine --server 127.0.0.1:1 --queries q.npy extra
run err_mine_single_dash -- mine -server 127.0.0.1:1 -queries q.npy \
    -num_negatives=x
run err_mine_queries_missing -- mine --server 127.0.0.1:1 --queries nope.npy
run err_mine_queries_empty -- mine --server 127.0.0.1:1 --queries empty.npy
run err_mine_labels_count -- mine --server 127.0.0.1:1 --queries q.npy \
    --labels qlabels_short.npy
run err_mine_positives_bad -- mine --server 127.0.0.1:1 --queries q.npy \
    --positives not_npy.npy
run err_mine_query_ids_count -- mine --server 127.0.0.1:1 --queries q.npy \
    --query_ids qlabels_short.npy
run err_publish_two_dirs -- publish --server 127.0.0.1:1 a b
run err_publish_dir_and_npy -- publish --server 127.0.0.1:1 a --ids ids.npy
run err_publish_nothing -- publish --server 127.0.0.1:1
run err_publish_no_name -- publish --server 127.0.0.1:1 \
    --embeddings emb.npy --ids ids.npy
run err_publish_delete_no_base -- publish --server 127.0.0.1:1 ckpts/run1 \
    --delete_ids del_ids.npy
run err_publish_chunk -- publish --server 127.0.0.1:1 ckpts/run1 \
    --chunk_rows 0
run err_publish_metric -- publish --server 127.0.0.1:1 ckpts/run1 \
    --metric cosine
run err_publish_missing_dir -- publish --server 127.0.0.1:1 nowhere
run err_publish_ids_count -- publish --server 127.0.0.1:1 \
    --embeddings emb.npy --ids ids4.npy --name z
run err_publish_labels_count -- publish --server 127.0.0.1:1 \
    --embeddings emb.npy --ids ids.npy --labels qlabels.npy --name z

# --- against a server ---------------------------------------------------
mkdir -p served
cp -r ckpts/run1 served/
# --scan int8 explicitly: `info` prints the scan, and auto's choice depends
# on the CPU (int8 runs everywhere, emulated where VNNI is missing).
"$build/server/hardneg-server" --checkpoints served --grpc_port 0 \
  --metrics_port -1 --threads 1 --scan int8 >server.out 2>server.log &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q '^listening on' server.out 2>/dev/null && break
  sleep 0.1
done
port=$(awk '/^listening on/ {print $3}' server.out)
if [[ -z "$port" ]]; then
  echo "hardneg-server did not start:" >&2
  cat server.log >&2
  exit 1
fi
s="127.0.0.1:$port"
for _ in $(seq 1 100); do
  "$hardneg" info --server "$s" >/dev/null 2>&1 && break
  sleep 0.1
done

run info_text -- info --server "$s"
run info_json -- info --server "$s" --format json
run info_json_eq -- info --server="$s" --format=json --wait_for_ready \
    --timeout 5
run mine_default -- mine --server "$s" --queries q.npy
run mine_f16 -- mine --server "$s" --queries q16.npy --num_negatives 3
run mine_positives -- mine --server "$s" --queries q.npy --positives pos.npy \
    --num_negatives 4 --batch_size 2
run mine_positives_1d -- mine --server "$s" --queries q.npy \
    --positives pos1d.npy --num_negatives 2 --nostream
run mine_options -- mine --server "$s" --queries q.npy --positives pos.npy \
    --labels qlabels.npy --query_ids qids.npy --num_negatives 3 \
    --range_min 2 --range_max 20 --relative_margin 0.05 --sampling softmax \
    --temperature 0.1 --seed 7 --batch_size 4 --max_in_flight 1
run mine_uniform -- mine --server "$s" --queries q.npy --num_negatives 2 \
    --sampling uniform --seed 3 --stream=false --batch_size 5
run mine_scores -- mine --server "$s" --queries q.npy --num_negatives 5 \
    --max_score 1.5 --min_score=-1.25 --absolute_margin 0.1 \
    --positives pos.npy
run mine_embeddings -- mine --server "$s" --queries q.npy --num_negatives 2 \
    --return_embeddings --batch_size 3
run mine_json_file --files out.json -- mine --server "$s" --queries q.npy \
    --num_negatives 2 --output out.json
run mine_npy --files out.npy out.scores.npy out.embeddings.npy -- mine \
    --server "$s" --queries q.npy --num_negatives 3 --output out.npy \
    --positives pos.npy --max_score 0.5
run mine_npy_embeddings --files e.npy e.scores.npy e.embeddings.npy -- mine \
    --server "$s" --queries q.npy --num_negatives 2 --output e.npy \
    --return_embeddings
# --output's extension decides the format; any other is refused, and a
# --format that disagrees with it too: no file holds what its name denies.
run mine_npy_format --files o.bin o.bin.scores.npy -- mine --server "$s" \
    --queries q.npy --num_negatives 2 --output o.bin --format npy
run mine_json_format_npy_name --files j.npy -- mine --server "$s" \
    --queries q.npy --num_negatives 1 --output j.npy --format json
run mine_csv --files o.csv -- mine --server "$s" --queries q.npy \
    --positives pos.npy --num_negatives 2 --output o.csv
run mine_csv_stdout -- mine --server "$s" --queries q.npy --num_negatives 1 \
    --format csv
run mine_csv_embeddings -- mine --server "$s" --queries q.npy \
    --num_negatives 1 --output e.csv --return_embeddings
run mine_txt_refused --files out.txt -- mine --server "$s" --queries q.npy \
    --num_negatives 1 --output out.txt
run mine_show -- mine --server "$s" --queries q.npy --labels qlabels.npy \
    --num_negatives 3 --show 2
run mine_show_names -- mine --server "$s" --queries q.npy \
    --labels qlabels.npy --num_negatives 3 --show 3 --label_names names.txt \
    --positives pos.npy
run mine_show_fmnist --files s.json -- mine --server "$s" --queries q.npy \
    --num_negatives 2 --show 1 --label_names fashion-mnist --output s.json
run mine_nprobe -- mine --server "$s" --queries q.npy --num_negatives 2 \
    --nprobe 3 --min_index_sequence 1
run err_mine_min_sequence -- mine --server "$s" --queries q.npy \
    --min_index_sequence 99
run err_mine_server_limit -- mine --server "$s" --queries q.npy \
    --num_negatives 20000
run err_mine_dim -- mine --server "$s" --queries fq.npy
run publish_dir -- publish --server "$s" ckpts/run1 --name v2 --step 9 \
    --chunk_rows 7
run info_after_publish -- info --server "$s" --format json
run publish_npy -- publish --server "$s" --embeddings emb.npy --ids ids.npy \
    --labels labels.npy --name v3 --step 10 --bytes --metric inner_product
run publish_incremental -- publish --server "$s" --embeddings more.npy \
    --ids more_ids.npy --labels more_labels.npy --name v4 --step 11 \
    --base_version v3 --delete_ids del_ids.npy
run err_publish_schema -- publish --server "$s" ckpts/run0 --name v5
run err_publish_base_missing -- publish --server "$s" ckpts/run1 \
    --name v6 --base_version nope
run err_publish_same_name -- publish --server "$s" ckpts/run1 --name v4
run err_publish_unknown_flag -- publish --server "$s" ckpts/run1 --name v5 \
    --allow_schema_change=false
run info_rejected -- info --server "$s" --format json
run publish_nowait -- publish --server "$s" ckpts/run1 --name v5 --nowait
for _ in $(seq 1 100); do
  "$hardneg" info --server "$s" 2>/dev/null | grep -q 'version: *v5' && break
  sleep 0.1
done
run info_end -- info --server "$s"
run mine_end -- mine --server "$s" --queries q.npy --num_negatives 2 \
    --batch_size 4

if [[ $check == 1 ]]; then
  if diff -ru "$here/golden" "$out"; then
    echo "cli golden: $(ls "$out" | wc -l) outputs match"
  else
    echo "cli golden: outputs differ (above)" >&2
    exit 1
  fi
fi
