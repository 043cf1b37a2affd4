#!/usr/bin/env bash
# The whole test suite: the C library and tools (plain, ASan+UBSan, TSan
# builds), the Go shim (go test -race) and the k6 end-to-end scripts.
# Ends with one line "N passed, N failed"; exits non-zero if anything failed.
#
#   scripts/test.sh            everything
#   SHMKV_SKIP_SANITIZERS=1    only the plain C build (for a quick local loop)
#   SHMKV_SUITES="unit crash"  only these meson suites in each C build
#                              (unit multiproc crash reliability cli fuzz
#                              bench: see tests/meson.build)
#   SHMKV_FUZZ_SECONDS=N       fuzzing time per libFuzzer harness (20)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
SHMKV_NEED_CLANG=1 bash scripts/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

results="$root/build-results"
rm -rf "$results"
mkdir -p "$results"
logs=()

# meson_suite NAME SETUP-ARGS...: configure, build and run one flavour.
meson_suite() {
  local name=$1; shift
  local dir="build-$name"
  echo "== C suite: $name" >&2
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$results/$name-setup.log" 2>&1 \
      || { echo "$name: 0 passed, 1 failed" >"$results/$name.txt"; logs+=("$results/$name.txt");
           tail -30 "$results/$name-setup.log" >&2; return; }
  fi
  if ! meson compile -C "$dir" >"$results/$name-build.log" 2>&1; then
    tail -40 "$results/$name-build.log" >&2
    echo "$name build: 0 passed, 1 failed" >"$results/$name.txt"; logs+=("$results/$name.txt"); return
  fi
  local suites=() s
  for s in ${SHMKV_SUITES:-}; do suites+=(--suite "$s"); done
  meson test -C "$dir" --print-errorlogs --num-processes 2 "${suites[@]}" \
    --timeout-multiplier "${TIMEOUT_MULT:-1}" >"$results/$name-test.log" 2>&1
  tail -15 "$results/$name-test.log" >&2
  cp "$dir/meson-logs/testlog.json" "$results/$name.json"
  logs+=("$results/$name.json")
}

# The plain build also runs the fuzz suite (a short run of each libFuzzer
# harness and its regressions; `bash tests/fuzz/run.sh 600` is the long run).
export SHMKV_FUZZ_SECONDS=${SHMKV_FUZZ_SECONDS:-20}
meson_suite plain --buildtype=debugoptimized
# The fuzz suite exists only where clang has libFuzzer (deps.sh installs
# it above): a build configured without it must not pass for a fuzzed one.
if [ -z "${SHMKV_SUITES:-}" ] || [[ " $SHMKV_SUITES " == *" fuzz "* ]]; then
  # The list is read whole first: `meson ... | grep -q` under pipefail
  # fails whenever grep quits at the first match before meson has written
  # the rest (SIGPIPE), which took a fuzzed build for one without fuzzing.
  fuzz_list=$(meson test -C build-plain --list --no-rebuild 2>/dev/null || true)
  if ! grep -q ':fuzz / ' <<<"$fuzz_list"; then
    echo "fuzz: the plain build has no fuzz suite (clang with -fsanitize=fuzzer missing at setup)" >&2
    echo "fuzz: 0 passed, 1 failed" >"$results/fuzz.txt"
    logs+=("$results/fuzz.txt")
  fi
fi
if [ "${SHMKV_SKIP_SANITIZERS:-0}" != 1 ]; then
  TIMEOUT_MULT=4 \
    meson_suite asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
  TIMEOUT_MULT=6 \
    meson_suite tsan --buildtype=debug -Db_sanitize=thread -Db_lundef=false
fi

# Go shim and k6 end to end. Every Go build here uses the tag shmkv_werror,
# so that a warning in the C that cgo compiles fails the run, as in meson.
# (Go's build cache sees edits to the C sources by itself: libshmkv/sources.go.)
export KV_TAGS=shmkv_werror
echo "== go test -race" >&2
CGO_ENABLED=1 go test -race -count=1 -v -tags "$KV_TAGS" ./... >"$results/go.log" 2>&1
p=$(grep -c '^\s*--- PASS' "$results/go.log"); f=$(grep -c '^\s*--- FAIL' "$results/go.log")
grep -q '^FAIL' "$results/go.log" && [ "$f" = 0 ] && f=1
echo "go: $p passed, $f failed" | tee "$results/go.txt" >&2
logs+=("$results/go.txt")
# The TypeScript declarations: every .ts example type-checks against them.
echo "== TypeScript" >&2
bash tests/ts/run.sh >"$results/ts.log" 2>&1
tail -2 "$results/ts.log" >&2
grep -E '^ts: [0-9]+ passed, [0-9]+ failed' "$results/ts.log" | tail -1 >"$results/ts.txt"
logs+=("$results/ts.txt")

# The module as users get it: packed as a proxy serves it, built into k6 with
# no replace directive; and an edit to the C rebuilds the extension.
echo "== Go module" >&2
bash tests/module/run.sh >"$results/module.log" 2>&1
tail -3 "$results/module.log" >&2
grep -E '^module: [0-9]+ passed, [0-9]+ failed' "$results/module.log" | tail -1 >"$results/module.txt"
logs+=("$results/module.txt")
if [ -x tests/k6/run.sh ] || [ -f tests/k6/run.sh ]; then
  echo "== k6 end to end" >&2
  bash tests/k6/run.sh >"$results/k6.log" 2>&1
  tail -5 "$results/k6.log" >&2
  grep -E '^k6-e2e: [0-9]+ passed, [0-9]+ failed' "$results/k6.log" | tail -1 >"$results/k6.txt"
  logs+=("$results/k6.txt")
fi

# Reliability with k6 processes: SIGKILLed writers lose nothing (bounded
# run; `bash tests/reliability/k6-crashloop.sh 600` for a long one), and
# hostile script input gets typed errors and changes nothing.
for t in k6-crashloop k6-hostile; do
  [ -f "tests/reliability/$t.sh" ] || continue
  echo "== $t" >&2
  if [ "$t" = k6-crashloop ]; then arg=${SHMKV_K6_CRASHLOOP_SECONDS:-20}; else arg=""; fi
  bash "tests/reliability/$t.sh" $arg >"$results/$t.log" 2>&1
  tail -3 "$results/$t.log" >&2
  grep -E "^$t: [0-9]+ passed, [0-9]+ failed" "$results/$t.log" | tail -1 >"$results/$t.txt"
  logs+=("$results/$t.txt")
done

# Claims across k6 processes: consumers SIGKILLed while they hold leases;
# every token completed exactly once (bounded; the argument is the seconds
# of killing).
if [ -f tests/k6/claims-crash.sh ]; then
  echo "== k6-claims-crash" >&2
  bash tests/k6/claims-crash.sh ${SHMKV_K6_CLAIMS_SECONDS:-10} >"$results/k6-claims-crash.log" 2>&1
  tail -3 "$results/k6-claims-crash.log" >&2
  grep -E '^k6-claims-crash: [0-9]+ passed, [0-9]+ failed' "$results/k6-claims-crash.log" | tail -1 >"$results/k6-claims-crash.txt"
  logs+=("$results/k6-claims-crash.txt")
fi

echo "== summary" >&2
python3 scripts/summarize.py "${logs[@]}"
