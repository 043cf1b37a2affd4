#!/usr/bin/env bash
# batch.sh - keys per second through getMany/setMany of MANY keys (default
# 100) against single get/set, from one k6 process, same run, memory and
# disk backends, 1 and 8 VUs; medians of REPS (default 3) slots of DUR
# seconds. Prints a markdown table with the ratios, and the floor: the same
# loop making the same keys and awaiting a resolved promise, no store (no
# batch method can beat it). run.sh's batch section measures the same with
# ours memory and disk (and the fork) taking turns, for docs/benchmarks-peers.md.
#
#   bash tools/bench/peers/batch.sh [K6]
set -euo pipefail
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEERS/../../.." && pwd)
K6=${1:-$(bash "$ROOT/scripts/build-k6.sh" 2>/dev/null | tail -n1)}
REPS=${REPS:-3} DUR=${DUR:-1} MANY=${MANY:-100}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-batch.XXXXXX")
trap 'rm -rf "$WORK"; rm -f /dev/shm/shmkv.batch-$$-*' EXIT
echo "k6: $("$K6" version | head -n1); $MANY keys per batch, medians of $REPS x ${DUR}s"
echo
echo "| backend | VUs | get keys/s | getMany keys/s | ratio | set keys/s | setMany keys/s | ratio | floor: keys made + resolved promise, keys/s | floor/get |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for backend in memory disk; do
    for vus in 1 8; do
        store=batch-$$-$vus; [[ $backend = disk ]] && store=$WORK/$store.kv
        env IMPL=kv BACKEND=$backend STORE="$store" OPS=warm,get,getm,set,setm,noopm VUS=$vus DUR="$DUR" \
            REPS="$REPS" MANY="$MANY" SUMMARY="$WORK/s.json" \
            timeout 600 "$K6" run -q --no-color "$PEERS/workload.js" >"$WORK/log" 2>&1 ||
            { tail -5 "$WORK/log" >&2; exit 1; }
        python3 - "$WORK/s.json" "$backend" "$vus" "$DUR" <<'PY'
import json, statistics, sys
path, backend, vus, dur = sys.argv[1:]
ops = json.load(open(path))["ops"]
m = {op: statistics.median(n for n in v if n is not None) / float(dur) for op, v in ops.items()}
print(f"| {backend} | {vus} | {m['get']:,.0f} | {m['getm']:,.0f} | {m['getm']/m['get']:.1f}x "
      f"| {m['set']:,.0f} | {m['setm']:,.0f} | {m['setm']/m['set']:.1f}x "
      f"| {m['noopm']:,.0f} | {m['noopm']/m['get']:.1f}x |")
PY
    done
done
