#!/usr/bin/env bash
# values.sh - get, set and the 75/25 mix for the values users store (a
# 32-byte string, a ~150-byte user record, a ~1 KiB document, 20 numbers),
# from one k6 process, memory and disk, 1 and 8 VUs, beside the codec
# floor: the same loop awaiting JSON.parse of the stored text (for get) or
# JSON.stringify of the value (for set), no store; and the construction
# floor: the same loop awaiting the value built from its literal (what the
# engine takes to make the object in the script; a get that hands back a
# plain JS value builds one too). ours/floor above 1
# means a get costs less than parsing its text with JSON.parse. Medians of REPS
# (default 3) slots of DUR seconds. run.sh's values section measures the
# same with ours, the fork and Redis taking turns, for docs/benchmarks-peers.md.
#
#   bash tools/bench/peers/values.sh [K6]
set -euo pipefail
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEERS/../../.." && pwd)
K6=${1:-$(bash "$ROOT/scripts/build-k6.sh" 2>/dev/null | tail -n1)}
REPS=${REPS:-3} DUR=${DUR:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-values.XXXXXX")
trap 'rm -rf "$WORK"; rm -f /dev/shm/shmkv.values-$$-*' EXIT
echo "k6: $("$K6" version | head -n1); medians of $REPS x ${DUR}s"
echo
echo "| value | backend | VUs | get/s | parse floor/s | get/floor | literal floor/s | get/literal | set/s | stringify floor/s | set/floor | mix/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for shape in str32 user doc nums; do
    for backend in memory disk; do
        for vus in 1 8; do
            store=values-$$-$shape-$vus; [[ $backend = disk ]] && store=$WORK/$store.kv
            env IMPL=kv SHAPE=$shape BACKEND=$backend STORE="$store" OPS=warm,get,fparse,flit,set,fstring,mix \
                VUS=$vus DUR="$DUR" REPS="$REPS" SUMMARY="$WORK/s.json" \
                timeout 600 "$K6" run -q --no-color "$PEERS/workload.js" >"$WORK/log" 2>&1 ||
                { tail -5 "$WORK/log" >&2; exit 1; }
            python3 - "$WORK/s.json" "$shape" "$backend" "$vus" "$DUR" <<'PY'
import json, statistics, sys
path, shape, backend, vus, dur = sys.argv[1:]
ops = json.load(open(path))["ops"]
m = {op: statistics.median(n for n in v if n is not None) / float(dur) for op, v in ops.items()}
print(f"| {shape} | {backend} | {vus} | {m['get']:,.0f} | {m['fparse']:,.0f} | {m['get']/m['fparse']:.2f} "
      f"| {m['flit']:,.0f} | {m['get']/m['flit']:.2f} "
      f"| {m['set']:,.0f} | {m['fstring']:,.0f} | {m['set']/m['fstring']:.2f} | {m['mix']:,.0f} |")
PY
        done
    done
done
