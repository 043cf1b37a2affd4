#!/usr/bin/env bash
# Pool demo: three k6 processes check test users out of one pool with
# claims, and one of them is SIGKILLed while it holds some.
#
#   1. pool-seed.js puts USERS users (user:0000, ...) in a disk store;
#   2. three pool-worker.js processes (A, B, C; 4 VUs each) claim users at
#      random (claimRandom, a lease of POOL_TTL_MS), use them, and complete
#      them (or release them, on a simulated failure);
#   3. C is killed with SIGKILL once it has completed a few users, while
#      its VUs hold others: those come back when their lease runs out, and
#      A and B complete them;
#   4. pool-check.js: every user was completed exactly once or is back in
#      the pool, and no claim is left.
#
#   K6=/path/to/k6 bash examples/multiprocess/pool.sh
#
# USERS (default 200) and POOL_TTL_MS (default 1500) can be set. The last
# line says "pool demo: OK" or "pool demo: FAILED".
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
K6=${K6:-$(bash "$ROOT/scripts/build-k6.sh" | tail -n1)}
USERS=${USERS:-200}
POOL_TTL_MS=${POOL_TTL_MS:-1500}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/kv-pool.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

k6run() { # LOG SCRIPT [args...]
    local log=$1 script=$2
    shift 2
    "$K6" run --quiet --no-usage-report --address= --summary-mode=disabled --log-format raw \
        -e KV_POOL_PATH="$LOGS/pool.kv" -e USERS="$USERS" -e POOL_TTL_MS="$POOL_TTL_MS" \
        "$@" "$HERE/$script" >"$log" 2>&1
}

fail() {
    echo "  $*"
    for f in "$LOGS"/*.log; do
        if grep -qE 'level=error|FAILED|crossed|Uncaught|Error' "$f"; then
            echo "--- $(basename "$f"):"
            tail -n 20 "$f"
        fi
    done
    echo "pool demo: FAILED"
    exit 1
}

echo "a pool of $USERS test users in one store, three k6 processes (A, B, C) check them out;"
echo "C is killed with SIGKILL mid-run (leases of ${POOL_TTL_MS} ms)"
k6run "$LOGS/seed.log" pool-seed.js || fail "seeding failed"

for w in A B C; do
    # Started directly, not through k6run(), so that $! is k6 itself.
    "$K6" run --quiet --no-usage-report --address= --summary-mode=disabled --log-format raw \
        -e KV_POOL_PATH="$LOGS/pool.kv" -e USERS="$USERS" -e POOL_TTL_MS="$POOL_TTL_MS" \
        -e WORKER="$w" -e KILLED=C --console-output="$LOGS/$w.events" \
        "$HERE/pool-worker.js" >"$LOGS/$w.log" 2>&1 &
    pids+=($!)
done
victim=${pids[2]}

# Kill C once it has completed a few users (its VUs then hold others).
for ((t = 0; t < 600; t++)); do
    n=$(grep -c 'completing ' "$LOGS/C.events" 2>/dev/null)
    [[ ${n:-0} -ge 10 ]] && break
    kill -0 "$victim" 2>/dev/null || break
    sleep 0.02
done
# (stderr off for both: no "Killed" line from the shell)
{
    kill -KILL "$victim"
    wait "$victim"
} 2>/dev/null
vst=$?
[[ $vst == 137 ]] || fail "C was not killed mid-run (it exited with $vst)"

# What C held when it died: claimed, and neither being completed nor
# released (a kill right after "completing" leaves it unknown: left out).
held=$(grep -oE '(claimed|completing|releasing) user:[0-9]+ [0-9]+' "$LOGS/C.events" |
    awk '$1 == "claimed" { h[$2 " " $3] = 1 } $1 != "claimed" { delete h[$2 " " $3] }
         END { for (k in h) { split(k, a, " "); printf "%s%s", sep, a[1]; sep = "," } }')
echo "  C killed once it had completed $n users, while holding: ${held//,/ }"

status=0
for p in "${pids[0]}" "${pids[1]}"; do
    wait "$p" || status=1
done
pids=() # all reaped: nothing for cleanup to kill
[[ $status == 0 ]] || fail "worker A or B failed"

k6run "$LOGS/check.log" pool-check.js -e KILLED=C -e HELD="$held" || fail "the check failed"
grep -E '^(users|completed|held)' "$LOGS/check.log" | sed 's/^/  /'
echo "pool demo: OK - each of $USERS users completed exactly once; the killed process's users came back after their lease"
