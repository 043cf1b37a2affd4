#!/usr/bin/env bash
# ab.sh - two builds of our k6 side by side: is B slower than A?
#
#   bash tools/bench/peers/ab.sh A_K6 B_K6
#
# For each backend (memory, disk) and 1 and 8 VUs, the two binaries run
# workload.js at the same time and take turns second by second (PHASE and
# NPHASE, as run.sh pairs ours with a peer), REPS times. Prints per row the
# median ops/s of A and of B and B/A. Use it to check a change of k6
# version, of the shim or of the library for regressions: the pairing
# cancels most of the noise of a shared machine. REPS (default 3) and DUR
# (seconds per slot, default 1) as in run.sh.
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,12p' "$0"; exit 2; }
A=$1 B=$2
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPS=${REPS:-3} DUR=${DUR:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-ab.XXXXXX")
trap 'rm -rf "$WORK"; rm -f /dev/shm/shmkv.ab-$$-*' EXIT
: >"$WORK/rows"
for backend in memory disk; do
    for vus in 1 8; do
        start=$(($(date +%s%3N) + 4000))
        pids=()
        for side in 0 1; do
            bin=$A; [[ $side = 1 ]] && bin=$B
            store=ab-$$-$side-$vus; [[ $backend = disk ]] && store=$WORK/$store.kv
            env IMPL=kv BACKEND=$backend STORE="$store" TRACK=0 OPS=warm,get,set,mix,rk,rkp,noop \
                VUS=$vus DUR="$DUR" REPS="$REPS" PHASE=$side NPHASE=2 START_AT=$start \
                SUMMARY="$WORK/s$side.json" timeout 900 "$bin" run -q --no-color "$PEERS/workload.js" \
                >"$WORK/s$side.log" 2>&1 &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || { tail -5 "$WORK"/s*.log >&2; exit 1; }; done
        python3 - "$WORK/s0.json" "$WORK/s1.json" "$backend" "$vus" "$DUR" >>"$WORK/rows" <<'PY'
import json, statistics, sys
a, b, backend, vus, dur = sys.argv[1:]
A, B = json.load(open(a))["ops"], json.load(open(b))["ops"]
for op in sorted(A):
    ma = statistics.median(n for n in A[op] if n is not None) / float(dur)
    mb = statistics.median(n for n in B[op] if n is not None) / float(dur)
    print(f"| {backend} | {vus} | {op} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.2f} |")
PY
    done
done
echo "A: $("$A" version | head -n1)"
echo "B: $("$B" version | head -n1)"
echo
echo "| backend | VUs | op | A ops/s | B ops/s | B/A |"
echo "|---|---|---|---|---|---|"
cat "$WORK/rows"
