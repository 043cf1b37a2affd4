#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] - build and run the libFuzzer harnesses.
#
#   bash tests/fuzz/run.sh          about 20 s of fuzzing per harness
#                                   (SHMKV_FUZZ_SECONDS, when set)
#   bash tests/fuzz/run.sh --only fuzz_ops [SECONDS]
#                                   one harness (the meson fuzz suite runs
#                                   each harness as a test of its own)
#   bash tests/fuzz/run.sh 600      ten minutes per harness
#   bash tests/fuzz/run.sh --deep [SECONDS]
#                                   also run fuzz_open built with
#                                   -DFUZZ_OPEN_DEEP=1 (operations on stores
#                                   with garbage inside); its crashes are
#                                   findings, saved to findings/fuzz_open_deep/,
#                                   and do not count as failures
#
# For each harness in tests/fuzz/fuzz_*.c:
#   1. compile it with clang -g -O1 -fsanitize=fuzzer,address,undefined
#      together with the library sources (libshmkv/src/*.c);
#   2. replay every file in tests/fuzz/regressions/<name>/ once;
#   3. fuzz for SECONDS on a scratch copy of tests/fuzz/corpus/<name>/
#      (after a crash the fuzzer is restarted for the time left, so one
#      known bug does not end the run). Each new crash becomes a file in
#      tests/fuzz/regressions/<name>/ unless an existing regression already
#      fails the same way.
# A harness passes when it builds, every regression replays cleanly and the
# fuzzing found no crash. The last line is "fuzz: N passed, N failed"; the
# exit status is 0 only when nothing failed.
set -uo pipefail

deep=0
secs=${SHMKV_FUZZ_SECONDS:-20}
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deep) deep=1 ;;
    --only) only=${2:-}; shift ;;
    ''|*[!0-9]*) echo "usage: $0 [--deep] [--only NAME] [SECONDS]" >&2; exit 2 ;;
    *) secs=$1 ;;
  esac
  shift
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! command -v clang >/dev/null 2>&1 ||
   ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz: clang or libFuzzer missing; installing (SHMKV_NEED_CLANG=1 scripts/deps.sh)" >&2
  SHMKV_NEED_CLANG=1 bash "$root/scripts/deps.sh" >&2 || true
fi
if ! command -v clang >/dev/null 2>&1; then
  echo "fuzz: clang is not available"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-fuzz.XXXXXX")
shm_prefix="fz$$x"
cleanup() {
  rm -rf "$work"
  rm -f /dev/shm/shmkv."$shm_prefix"*
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/tmp"
export FUZZ_TMPDIR="$work/tmp" FUZZ_SHM_PREFIX="$shm_prefix"
# report leaks and UB as failures, keep going quietly otherwise
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

cflags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -D_GNU_SOURCE -I"$root/libshmkv/include" -I"$root/libshmkv/src")
libsrc=("$root"/libshmkv/src/*.c)

# A crash's signature: the harness's FAIL line or the sanitizer SUMMARY,
# without addresses, pids and build ids.
signature() {
  grep -m1 -E '^(fuzz_[a-z_]+: FAIL:|SUMMARY: )' "$1" 2>/dev/null |
    sed -E 's/0x[0-9a-f]+//g; s/\(BuildId: [0-9a-f]+\)//g; s/==[0-9]+==//g; s#[^ ]*/##g' |
    sed -E '/^fuzz_/s/-?[0-9]+/N/g' | cut -c1-200
}

passed=0
failed=0
summary=()

# run_harness NAME SOURCE EXTRA-CFLAGS SAVE-DIR COUNTS(1/0)
run_harness() {
  local name=$1 src=$2 extra=$3 save=$4 counts=$5
  local bin="$work/$name" ok=1 execs=0 newunits=0 crashes=0
  local -A known=()

  if ! clang "${cflags[@]}" $extra "$src" "${libsrc[@]}" -lpthread -o "$bin" \
       >"$work/$name.build.log" 2>&1; then
    tail -20 "$work/$name.build.log" >&2
    summary+=("$name: build FAILED")
    [ "$counts" = 1 ] && failed=$((failed + 1))
    return
  fi

  # 1. regressions
  local nreg=0 nregfail=0 f
  local regdir="$here/regressions/${name%_deep}"
  [ "$name" = fuzz_open_deep ] && regdir="$here/findings/fuzz_open_deep"
  if [ -d "$regdir" ]; then
    for f in "$regdir"/*; do
      [ -f "$f" ] || continue
      nreg=$((nreg + 1))
      if ! timeout 120 "$bin" -rss_limit_mb=2048 "$f" >"$work/replay.log" 2>&1; then
        nregfail=$((nregfail + 1))
        local sig; sig=$(signature "$work/replay.log")
        known["$sig"]=1
        echo "$name: regression ${f#"$root"/} still fails: ${sig:-exit status $?}" >&2
      fi
    done
  fi
  if [ "$counts" = 1 ] && [ "$nregfail" -gt 0 ]; then ok=0; fi

  # 2. fuzzing, restarted after crashes until the time is used
  local corpus="$work/corpus-$name" art="$work/art-$name"
  mkdir -p "$corpus" "$art"
  local cdir="$here/corpus/${name%_deep}"
  [ -d "$cdir" ] && cp "$cdir"/* "$corpus"/ 2>/dev/null
  local maxlen=4096
  [ "${name%_deep}" = fuzz_open ] && maxlen=20000
  local end=$(( $(date +%s) + secs )) runs=0
  while :; do
    local left=$(( end - $(date +%s) ))
    [ "$left" -ge 1 ] || break
    [ "$runs" -lt 25 ] || break
    runs=$((runs + 1))
    rm -f "$art"/*
    "$bin" -max_total_time="$left" -max_len="$maxlen" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$art/" "$corpus" >"$work/fuzz.log" 2>&1
    local st=$?
    local n; n=$(grep -m1 'stat::number_of_executed_units:' "$work/fuzz.log" | awk '{print $2}')
    local u; u=$(grep -m1 'stat::new_units_added:' "$work/fuzz.log" | awk '{print $2}')
    execs=$((execs + ${n:-0}))
    newunits=$((newunits + ${u:-0}))
    [ "$st" = 0 ] && break
    local a
    for a in "$art"/*; do
      [ -f "$a" ] || continue
      crashes=$((crashes + 1))
      local sig; sig=$(signature "$work/fuzz.log")
      if [ -n "${known[$sig]:-}" ]; then
        echo "$name: crash again: $sig (already in ${regdir#"$root"/})" >&2
        continue
      fi
      known["$sig"]=1
      mkdir -p "$save"
      cp "$a" "$save/"
      echo "$name: NEW crash saved as ${save#"$root"/}/$(basename "$a"): $sig" >&2
      grep -E '^(fuzz_[a-z_]+: FAIL|SUMMARY|==[0-9]+==ERROR)|^    #[0-9]+ .* in (shmkv|[a-z_]+ /)' \
        "$work/fuzz.log" | head -12 >&2
    done
    [ "$crashes" -gt 0 ] || { echo "$name: fuzzer exited with $st:" >&2; tail -5 "$work/fuzz.log" >&2; crashes=1; }
  done
  if [ "$counts" = 1 ] && [ "$crashes" -gt 0 ]; then ok=0; fi

  local line="$name: $execs executions in ${secs} s ($newunits new inputs), $crashes crash(es); regressions $((nreg - nregfail))/$nreg pass"
  [ "$counts" = 1 ] || line="$line (findings only, not counted)"
  summary+=("$line")
  if [ "$counts" = 1 ]; then
    if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  fi
}

for src in "$here"/fuzz_*.c; do
  name=$(basename "$src" .c)
  [ -z "$only" ] || [ "$name" = "$only" ] || continue
  run_harness "$name" "$src" "" "$here/regressions/$name" 1
done
if [ "$deep" = 1 ] && { [ -z "$only" ] || [ "$only" = fuzz_open ]; }; then
  run_harness fuzz_open_deep "$here/fuzz_open.c" "-DFUZZ_OPEN_DEEP=1" "$here/findings/fuzz_open_deep" 0
fi

for l in "${summary[@]}"; do echo "$l"; done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
