#!/usr/bin/env bash
# memkey.sh - bytes per key at N keys (default 1,000,000; keys user:%07d),
# memory backend, for a 32-byte string and a ~150-byte user record, with and
# without trackKeys: the size of the /dev/shm object (what the store holds,
# growth slack included) over N. Beside it, Redis's used_memory growth for
# the same keys and the same JSON text (redis-server from Debian, started
# here on 127.0.0.1 and stopped).
#
#   bash tools/bench/peers/memkey.sh [K6]
set -euo pipefail
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEERS/../../.." && pwd)
K6=${1:-$(bash "$ROOT/scripts/build-k6.sh" 2>/dev/null | tail -n1)}
N=${N:-1000000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-memkey.XXXXXX")
RPID=
cleanup() {
    [[ -n $RPID ]] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
    rm -rf "$WORK"
    rm -f /dev/shm/shmkv.memkey-$$-*
}
trap cleanup EXIT
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; } >&2

cat >"$WORK/fill.js" <<'JS'
import { openKv } from "k6/x/kv";
import { sleep } from "k6";
const N = parseInt(__ENV.N, 10);
const kv = openKv({ backend: "memory", name: __ENV.NAME, trackKeys: __ENV.TRACK === "1" });
export const options = { iterations: 1 };
const user = (i) => ({ id: i, name: `name-${i}`, email: `user${i}@example.com`, tags: ["a", "b"],
  address: { city: "Springfield", zip: "12345" } });
export default async function () {
  for (let b = 0; b < N / 1000; b++) {
    const rec = {};
    for (let i = b * 1000; i < (b + 1) * 1000; i++)
      rec["user:" + String(i).padStart(7, "0")] = __ENV.SHAPE === "user" ? user(i) : "v".repeat(32);
    await kv.setMany(rec);
  }
  console.log("filled");
  sleep(4); // the store lives while this process does: measured meanwhile
}
JS
echo "| value | trackKeys | ours B/key | Redis B/key |"
echo "|---|---|---|---|"
port=6411
redis-server --bind 127.0.0.1 --port $port --save '' --appendonly no --loglevel warning --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
RPID=$!
for _ in $(seq 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
for shape in str32 user; do
    redis-cli -p $port flushall >/dev/null
    base=$(redis-cli -p $port info memory | awk -F: '/^used_memory:/{print $2+0}')
    python3 - "$shape" "$N" >"$WORK/cmds" <<'PY'
import json, sys
shape, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout
for i in range(n):
    v = json.dumps({"id": i, "name": f"name-{i}", "email": f"user{i}@example.com", "tags": ["a", "b"],
                    "address": {"city": "Springfield", "zip": "12345"}}, separators=(",", ":")) \
        if shape == "user" else json.dumps("v" * 32)
    k = f"user:{i:07d}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v.encode())}\r\n{v}\r\n")
PY
    redis-cli -p $port --pipe <"$WORK/cmds" >/dev/null
    used=$(redis-cli -p $port info memory | awk -F: '/^used_memory:/{print $2+0}')
    rb=$(( (used - base) / N ))
    for track in 0 1; do
        name=memkey-$$-$shape-$track
        env N="$N" NAME="$name" TRACK=$track SHAPE=$shape "$K6" run -q --no-color "$WORK/fill.js" >"$WORK/k6.log" 2>&1 &
        kp=$!
        # Bounded (10 min: a loaded 2-core machine fills 1M tracked records
        # in well under that); a fill that fails or never ends says why.
        for _ in $(seq 3000); do
            grep -q filled "$WORK/k6.log" 2>/dev/null && break
            kill -0 "$kp" 2>/dev/null || break
            sleep 0.2
        done
        if ! size=$(stat -c %s "/dev/shm/shmkv.$name" 2>/dev/null); then
            kill "$kp" 2>/dev/null
            echo "memkey: $shape trackKeys=$track: no store to measure; k6 said:" >&2
            cat "$WORK/k6.log" >&2
            exit 1
        fi
        wait "$kp"
        echo "| $shape | $track | $(( size / N )) | $rb |"
    done
done
