#!/usr/bin/env bash
# files.sh - rows per second of the file methods from k6 (importCSV,
# importJSONL, validateCSV, exportJSONL, exportCSV) and of backup/restore,
# on ROWS rows (default 1M) of a user record (id, name, email, age: about
# 90 bytes of JSON each), memory backend, medians of REPS (default 3) runs.
# The xk6-kv fork is not measured: its sources are not served here.
#
#   bash tools/bench/peers/files.sh [K6]
set -euo pipefail
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEERS/../../.." && pwd)
K6=${1:-$(bash "$ROOT/scripts/build-k6.sh" 2>/dev/null | tail -n1)}
ROWS=${ROWS:-1000000} REPS=${REPS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-files.XXXXXX")
trap 'rm -rf "$WORK"; rm -f /dev/shm/shmkv.files-$$*' EXIT
python3 - "$WORK" "$ROWS" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
with open(f"{work}/rows.csv", "w") as c, open(f"{work}/rows.jsonl", "w") as j:
    c.write("id,name,email,age\n")
    for i in range(n):
        rec = {"id": f"user:{i:07d}", "name": f"name-{i}", "email": f"user{i}@example.com", "age": 20 + i % 50}
        c.write(f"{rec['id']},{rec['name']},{rec['email']},{rec['age']}\n")
        j.write(json.dumps({"key": rec["id"], "value": rec}, separators=(",", ":")) + "\n")
PY
echo "k6: $("$K6" version | head -n1); $ROWS rows, medians of $REPS runs"
echo "CSV $(du -h "$WORK/rows.csv" | cut -f1), JSONL $(du -h "$WORK/rows.jsonl" | cut -f1)"
echo
echo "| method | rows | seconds | rows/s |"
echo "|---|---|---|---|"
for op in importCSV importJSONL validateCSV exportJSONL exportCSV backup restore; do
    times=()
    for _ in $(seq "$REPS"); do
        out=$(cd "$WORK" && OP=$op DIR="$WORK" STORE="files-$$" timeout 900 "$K6" run -q --no-color \
            "$PEERS/files.js" 2>&1) || { echo "$out" | tail -5 >&2; exit 1; }
        line=$(echo "$out" | grep -o 'files: [A-Za-z]* [0-9]* [0-9.]*' | tail -n1)
        rows=$(echo "$line" | awk '{print $3}')
        times+=("$(echo "$line" | awk '{print $4}')")
    done
    python3 - "$op" "$rows" "${times[@]}" <<'PY'
import statistics, sys
op, rows, *ts = sys.argv[1:]
t = statistics.median(float(x) for x in ts)
print(f"| {op} | {int(rows):,} | {t:.2f} | {int(rows) / t:,.0f} |")
PY
done
