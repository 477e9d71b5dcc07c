#!/usr/bin/env bash
# The checks beyond the tests (README, "Static checks"); each step prints its
# time, and any finding fails the run:
#
#   thread-safety  ./build-static: the whole tree with clang 14 and
#                  -Wthread-safety -Werror (HARDNEG_THREAD_SAFETY=ON), so that
#                  the ABSL_GUARDED_BY / ABSL_*_LOCKS_* annotations are
#                  checked, not just written.
#   tidy           clang-tidy-14 with the repository's .clang-tidy over every
#                  .cc of src/, server/, client/ and router/ (and, through
#                  HeaderFilterRegex, our headers; never generated code),
#                  with build-static's compile_commands.json. Runs after
#                  thread-safety, which generates the proto headers.
#   python         mypy (Debian's) over the Python package python/hardneg,
#                  with python/pyproject.toml's settings: every function
#                  typed, the generated stubs' .pyi included. Runs on a copy
#                  under build-static/python, so the tree stays clean.
#   debug          ./build-debug: the whole tree, g++, Debug (-Werror).
#   release        ./build-release: the whole tree, g++, Release (-Werror).
#                  With build.sh's RelWithDebInfo, all three build types
#                  compile warning-free.
#
#   scripts/static-checks.sh                     all five
#   scripts/static-checks.sh tidy debug          some (tidy builds what it
#                                                needs first)
#
# HARDNEG_TIDY_CHECKS changes .clang-tidy's checks for one run, as a
# -checks list (e.g. -*,readability-function-size: only the 80-line
# function limit). HARDNEG_TIDY_FILES (a regex on the path) narrows the
# files checked.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
./scripts/install-deps.sh  # clang-14 and clang-tidy-14
njobs=${HARDNEG_JOBS:-$(nproc)}
start=$(date +%s)
steps=("$@")
((${#steps[@]})) || steps=(thread-safety tidy python debug release)

elapsed() { echo "static-checks.sh: $1 took $(($(date +%s) - $2)) s" >&2; }

# configure <dir> <cmake args...>, then build everything in it.
build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  ninja -C "$dir" -j "$njobs"
}

# No optimisation and no debug info (build type None): the analysis is the
# point, and this compiles fastest. The compile commands are for clang-tidy.
build_static() {
  CC=clang-14 CXX=clang++-14 build "$repo/build-static" \
    -DCMAKE_BUILD_TYPE=None -DHARDNEG_THREAD_SAFETY=ON \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
}

run_tidy() {
  local db="$repo/build-static" files extra=()
  # Configured afresh and the proto headers regenerated every time (cheap
  # when current), so new files and changed protos are seen as they are.
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$db" -G Ninja \
    -DCMAKE_BUILD_TYPE=None -DHARDNEG_THREAD_SAFETY=ON \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
  ninja -C "$db" -j "$njobs" hardneg_proto
  mapfile -t files < <(ls src/*/*.cc server/*.cc client/*.cc router/*.cc proto/*.cc |
                         grep -E -- "${HARDNEG_TIDY_FILES:-.}")
  if [[ -n "${HARDNEG_TIDY_CHECKS:-}" ]]; then
    extra=("--checks=$HARDNEG_TIDY_CHECKS")
  fi
  # One file per clang-tidy, $njobs at a time; xargs fails if any does.
  # "N warnings generated" counts what the filters dropped: not shown.
  printf '%s\n' "${files[@]}" |
    xargs -P "$njobs" -n 1 clang-tidy-14 -p "$db" --quiet "${extra[@]}" \
      2> >(grep -v -E '^[0-9]+ warnings? generated\.$' >&2)
}

run_mypy() {
  local copy="$repo/build-static/python"
  rm -rf "$copy"
  mkdir -p "$copy"
  cp -r python/hardneg "$copy/"
  find "$copy" -name '*_pb2*' -delete
  python/generate.sh "$copy" >/dev/null
  (cd "$copy" && mypy --config-file "$repo/python/pyproject.toml" hardneg)
}

for step in "${steps[@]}"; do
  t0=$(date +%s)
  case "$step" in
    thread-safety) build_static ;;
    tidy) run_tidy ;;
    python) run_mypy ;;
    debug) build "$repo/build-debug" -DCMAKE_BUILD_TYPE=Debug ;;
    release) build "$repo/build-release" -DCMAKE_BUILD_TYPE=Release ;;
    *) echo "static-checks.sh: unknown '$step': expected thread-safety," \
            "tidy, python, debug or release" >&2
       exit 2 ;;
  esac
  elapsed "$step" "$t0"
done
elapsed "${steps[*]}" "$start"
