#!/usr/bin/env bash
# claims.sh - the claimRandom + completeClaim cycle from k6 against taking
# a token with randomKey + deleteIfExists, on the same store contents, from
# one k6 process, memory and disk backends, at VUS_LIST VUs (default 8);
# medians of REPS (default 5) slots of DUR seconds, the operations taking
# turns slot by slot (claims.js says what each cycle does). Prints a
# markdown table; the ratios are medians of the per-repetition ratios.
#
#   bash tools/bench/peers/claims.sh [K6]
#
# The xk6-kv fork's claims (its same cycle) are not measured: its module is
# not served by the Go module proxy here, so no fork k6 can be built.
set -euo pipefail
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEERS/../../.." && pwd)
K6=${1:-$(bash "$ROOT/scripts/build-k6.sh" 2>/dev/null | tail -n1)}
REPS=${REPS:-5} DUR=${DUR:-1} NKEYS=${NKEYS:-10000} VUS_LIST=${VUS_LIST:-8}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-claims.XXXXXX")
trap 'rm -rf "$WORK"; rm -f /dev/shm/shmkv.claims-$$-*' EXIT
echo "k6: $("$K6" version | head -n1); $NKEYS keys u:%05d, trackKeys on; medians of $REPS x ${DUR}s"
echo
echo "| backend | VUs | claim+complete(keep) cycles/s | claim+complete(delete)+set cycles/s | take: randomKey+deleteIfExists+set cycles/s | keep/take time | delete/take time | floor: 2 resolved promises/s |"
echo "|---|---|---|---|---|---|---|---|"
for backend in memory disk; do
    for vus in $VUS_LIST; do
        store=claims-$$-$vus; [[ $backend = disk ]] && store=$WORK/$store.kv
        env BACKEND=$backend STORE="$store" OPS=warm,claim,claimdel,take,noop VUS=$vus DUR="$DUR" \
            REPS="$REPS" NKEYS="$NKEYS" SUMMARY="$WORK/s.json" \
            timeout 900 "$K6" run -q --no-color --address= --no-usage-report "$PEERS/claims.js" >"$WORK/log" 2>&1 ||
            { tail -5 "$WORK/log" >&2; exit 1; }
        python3 - "$WORK/s.json" "$backend" "$vus" "$DUR" <<'PY'
import json, statistics, sys
path, backend, vus, dur = sys.argv[1:]
s = json.load(open(path))
if s["errors"]:
    print(f"claims.sh: {s['errors']} cycles failed", file=sys.stderr)
    sys.exit(1)
ops = s["ops"]
med = lambda xs: statistics.median(xs)
m = {op: med(v) / float(dur) for op, v in ops.items()}
keep = med([t / k for k, t in zip(ops["claim"], ops["take"])])      # time ratio = take/claim ops
dele = med([t / d for d, t in zip(ops["claimdel"], ops["take"])])
print(f"| {backend} | {vus} | {m['claim']:,.0f} | {m['claimdel']:,.0f} | {m['take']:,.0f} "
      f"| {keep:.2f}x | {dele:.2f}x | {m['noop']:,.0f} |")
PY
    done
done
