#!/usr/bin/env bash
# Multi-process demo, in two parts:
#  1. orders: one monitor, one producer and two consumer k6 processes share
#     one memory store; each order the producer adds is taken by exactly
#     one consumer process;
#  2. a pool (pool.sh): three k6 processes check test users out of one
#     store with claims, and one is SIGKILLed mid-run; every user is
#     completed exactly once, the killed process's users after their lease.
#
#   bash examples/multiprocess/run.sh        # builds k6 first if needed
#   K6=/path/to/k6 bash examples/multiprocess/run.sh
#
# ORDERS (default 3000) sets the number of orders; KV_DEMO_NAME the name
# of the memory store (default demo-<pid>); USERS and POOL_TTL_MS the
# pool's size and lease (pool.sh).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
K6=${K6:-$(bash "$ROOT/scripts/build-k6.sh" | tail -n1)}
NAME=${KV_DEMO_NAME:-demo-$$}
ORDERS=${ORDERS:-3000}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/kv-demo.XXXXXX")
trap 'rm -rf "$LOGS"; rm -f "/dev/shm/shmkv.$NAME"' EXIT

run() { # LOG SCRIPT [args...]
    local log=$1 script=$2
    shift 2
    "$K6" run --quiet --no-usage-report --address= --summary-mode=disabled --log-format raw \
        -e KV_NAME="$NAME" -e ORDERS="$ORDERS" "$@" "$HERE/$script" >"$log" 2>&1
}

echo "k6 processes sharing the memory store \"$NAME\" (/dev/shm/shmkv.$NAME):"
echo "  monitor, producer ($ORDERS orders), consumer A, consumer B"
echo

# The monitor prints its progress as it goes.
"$K6" run --quiet --no-usage-report --address= --summary-mode=disabled --log-format raw \
    -e KV_NAME="$NAME" -e ORDERS="$ORDERS" "$HERE/monitor.js" 2>&1 | sed 's/^/  [monitor] /' &
monitor=$!
run "$LOGS/producer.log" producer.js &
producer=$!
run "$LOGS/a.log" consumer.js -e CONSUMER=A &
a=$!
run "$LOGS/b.log" consumer.js -e CONSUMER=B &
b=$!

status=0
for p in "$producer" "$a" "$b"; do
    wait "$p" || status=1
done
# With pipefail, the monitor pipeline fails when k6 does.
wait "$monitor" || status=1

for f in producer a b; do
    if grep -qE 'level=error|FAILED|crossed|Uncaught' "$LOGS/$f.log"; then
        echo "--- $f:"
        cat "$LOGS/$f.log"
        status=1
    fi
done
echo
if [[ $status == 0 ]]; then
    echo "demo: OK - $ORDERS orders, each taken exactly once by one of two k6 processes"
else
    echo "demo: FAILED"
    exit $status
fi

echo
K6="$K6" bash "$HERE/pool.sh" || status=1
exit $status
