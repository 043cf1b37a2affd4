#!/usr/bin/env bash
# k6-crashloop.sh [SECONDS] - k6 processes SIGKILLed while they write one store.
#
# Three k6 processes (tests/reliability/k6/crash-writer.js, 4 VUs each) write
# one disk store with trackKeys on. Every 0.2 to 1 s (random) one of them is
# killed with SIGKILL and a new incarnation takes its slot. Each process
# logs "I <op> <key>" before and "A <op> <key>" after every awaited write
# (console.log, sent to a file per process with --console-output). When the
# time is up (default 30 s) every writer is killed, the acknowledgements are
# collected from the logs, and:
#   - crash-verify.js checks that every acknowledged set is there with its
#     value, that counters lie between acknowledged and intended increments,
#     that list() and size() agree and randomKey() draws existing keys;
#   - shmkv-dump --check finds the store sound ($SHMKV_DUMP, or the tool in
#     a build-*/ directory of this clone);
#   - no writer ended on its own (only our SIGKILLs end them).
# The last line is "k6-crashloop: N passed, N failed"; exit status 0 only
# when nothing failed. K6=/path/to/k6 skips building k6.
# KV_CRASHLOOP_SELFTEST=1 tests the verifier instead: a made-up
# acknowledgement (of a set and of an increment) is added to the logs, and
# the verifier step passes only if it reports them as lost.
set -uo pipefail

secs=${1:-30}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/reliability/k6"

passed=0
failed=0
result() { # result OK|FAIL what
  if [[ "$1" == OK ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  echo "k6-crashloop: $1: $2"
}

source "$ROOT/tests/lib/k6env.sh"
k6env_k6 k6-crashloop
k6env_dump

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-k6crash.XXXXXX")
STORE="$WORK/store.kv"
declare -a PID INC
cleanup() {
  for p in "${PID[@]:-}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

k6flags=(run --quiet --summary-mode=disabled --address "" -e "KV_PATH=$STORE")

if ! "$K6" "${k6flags[@]}" "$HERE/crash-init.js" >"$WORK/init.log" 2>&1; then
  cat "$WORK/init.log"
  echo "k6-crashloop: 0 passed, 1 failed"
  exit 1
fi

ninc=0
start_writer() { # slot
  ninc=$((ninc + 1))
  INC[$1]=$ninc
  "$K6" "${k6flags[@]}" -e "KV_PROC=$1" -e "KV_INC=$ninc" -e "KV_DURATION=$((secs + 120))s" \
    --console-output="$WORK/log.$1.$ninc" "$HERE/crash-writer.js" >"$WORK/out.$1.$ninc" 2>&1 &
  PID[$1]=$!
}

selfdied=0
for s in 1 2 3; do start_writer "$s"; done
kills=0
end=$((SECONDS + secs))
while ((SECONDS < end)); do
  sleep "0.$((2 + RANDOM % 8))$((RANDOM % 10))"
  s=$((1 + RANDOM % 3))
  if ! kill -0 "${PID[$s]}" 2>/dev/null; then
    wait "${PID[$s]}"; st=$?
    echo "k6-crashloop: writer $s.${INC[$s]} ended by itself (status $st):" >&2
    tail -5 "$WORK/out.$s.${INC[$s]}" >&2
    selfdied=$((selfdied + 1))
  else
    kill -9 "${PID[$s]}"
    wait "${PID[$s]}" 2>/dev/null
    kills=$((kills + 1))
  fi
  start_writer "$s"
done
{
  for s in 1 2 3; do kill -9 "${PID[$s]}"; done
  for s in 1 2 3; do wait "${PID[$s]}"; PID[$s]=""; done
} 2>/dev/null
kills=$((kills + 3))

if ((selfdied == 0)); then
  result OK "all $ninc writer incarnations ended by SIGKILL"
else
  result FAIL "$selfdied writer(s) ended by themselves"
fi

# Expectations from the logs: acknowledged sets (key -> value) and, per
# counter, acknowledged and intended increments.
# A SIGKILL can cut a writer's last line short (a write that straddles a
# page stops between its pages), and cat would join what is left of it to
# the next log's first line: only whole lines are read, file by file.
python3 -c 'import sys
for p in sys.argv[1:]:
    t = open(p, errors="replace").read()
    sys.stdout.write(t[:t.rfind("\n") + 1])' "$WORK"/log.* 2>/dev/null | grep -oE 'msg="[IA] (set|incr) [^"]*"' |
  sed -E 's/^msg="//; s/"$//' >"$WORK/acks"
selftest=${KV_CRASHLOOP_SELFTEST:-0}
if [[ "$selftest" == 1 ]]; then
  printf 'A set w:1:999999:1.1\nA incr c:1\n' >>"$WORK/acks"
  # the extra increment is acknowledged but was never intended or made
  for i in $(seq 1 100000); do echo "A incr c:1"; done >>"$WORK/acks"
fi
python3 - "$WORK/acks" "$WORK/expect.json" <<'EOF'
import json, sys
keys, counters = {}, {}
for line in open(sys.argv[1]):
    kind, op, key = line.split()
    if op == "set" and kind == "A":
        keys[key] = key.split(":")[3]
    elif op == "incr":
        a = counters.setdefault(key, [0, 0])
        a[0 if kind == "A" else 1] += 1
json.dump({"keys": keys, "counters": counters}, open(sys.argv[2], "w"))
print(f"k6-crashloop: {len(keys)} acknowledged sets, "
      f"{sum(a[0] for a in counters.values())} acknowledged increments", file=sys.stderr)
EOF
acked=$(grep -c '^A ' "$WORK/acks")

"$K6" "${k6flags[@]}" -e "KV_EXPECT=$WORK/expect.json" --console-output="$WORK/verify.log" \
  "$HERE/crash-verify.js" >"$WORK/verify.out" 2>&1
vst=$?
if [[ "$selftest" == 1 ]]; then
  if ((vst != 0)) && grep -q 'FAILED: every acknowledged set' "$WORK/verify.log" &&
     grep -q 'FAILED: counters' "$WORK/verify.log"; then
    result OK "self-test: the verifier caught the made-up acknowledgements"
  else
    result FAIL "self-test: the verifier missed the made-up acknowledgements"
  fi
elif ((vst == 0)); then
  result OK "verifier: nothing acknowledged was lost"
else
  result FAIL "verifier (k6 exit $vst)"
  tail -5 "$WORK/verify.out"
fi
grep -oE 'msg="[^"]*"' "$WORK/verify.log" 2>/dev/null | sed -E 's/^msg="/  /; s/"$//'

if [[ -n "$DUMP" && -x "$DUMP" ]]; then
  if "$DUMP" --check "$STORE" >"$WORK/dump.out" 2>&1; then
    result OK "shmkv-dump --check"
  else
    result FAIL "shmkv-dump --check"
    head -20 "$WORK/dump.out"
  fi
else
  echo "k6-crashloop: shmkv-dump not found (set SHMKV_DUMP): structure check not run"
fi

echo "k6-crashloop: survived $kills kills of k6 processes, $acked acknowledged ops"
echo "k6-crashloop: $passed passed, $failed failed"
((failed == 0))
