#!/usr/bin/env bash
# memkey.sh - bytes per key at N keys (default 1,000,000; keys user:%07d),
# memory backend, for a 32-byte string and the ~150-byte user record of
# workload.js (SHAPE=user, with the key's number in its id, name and email),
# with and without trackKeys: the size of the /dev/shm object (what the store
# holds, growth slack included) over N. Beside it, Redis's used_memory growth
# for the same keys and the same JSON text, and then with a sorted set of the
# keys added (ZADD keys 0 <key>): what a Redis user keeps to have what
# trackKeys gives (keys in order, pages, counts by prefix with ZRANGEBYLEX).
#
#   bash tools/bench/peers/memkey.sh [K6]
#
# Environment: N; RPORT (use the redis-server already listening on
# 127.0.0.1:RPORT, as run.sh does; default: start one here on 127.0.0.1 and
# stop it); TSV=1 (print tab-separated rows for run.sh instead of a markdown
# table); FORK_K6 (a k6 built with the xk6-kv fork: also measure that
# process's RSS growth while it fills its memory store).
set -euo pipefail
PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEERS/../../.." && pwd)
K6=${1:-$(bash "$ROOT/scripts/build-k6.sh" 2>/dev/null | tail -n1)}
N=${N:-1000000}
TSV=${TSV:-0}
FORK_K6=${FORK_K6:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-memkey.XXXXXX")
RPID=
cleanup() {
    if [[ -n $RPID ]]; then kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
    rm -f /dev/shm/shmkv.memkey-$$-*
}
trap cleanup EXIT

cat >"$WORK/fill.js" <<'JS'
import { openKv } from "k6/x/kv";
import { sleep } from "k6";
const N = parseInt(__ENV.N, 10);
const kv = openKv({ backend: "memory", name: __ENV.NAME, trackKeys: __ENV.TRACK === "1" });
export const options = { iterations: 1 };
// workload.js's SHAPES.user, numbered per key.
const user = (i) => ({ id: i, name: `name-${i}`, email: `user${i}@example.com`, tags: ["a", "b", "c"],
  active: true, score: 17.5, address: { street: "1 Main St", city: "Springfield", zip: "12345" } });
export default async function () {
  console.log("ready");
  if (__ENV.READY_WAIT === "1") sleep(1); // the RSS before filling is read meanwhile
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

if [[ -n ${RPORT:-} ]]; then
    port=$RPORT
else
    command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; } >&2
    port=6411
    redis-server --bind 127.0.0.1 --port $port --save '' --appendonly no --loglevel warning --dir "$WORK" \
        >"$WORK/redis.log" 2>&1 &
    RPID=$!
    for _ in $(seq 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
if ((!TSV)); then
    echo "| value | value bytes | trackKeys | ours B/key | Redis B/key | Redis + sorted set B/key |${FORK_K6:+ fork RSS growth B/key |}"
    echo "|---|---|---|---|---|---|${FORK_K6:+---|}"
fi

# wait_for WORD: until the k6 log says WORD or k6 is gone. Bounded (10 min:
# a loaded 2-core machine fills 1M tracked records in well under that).
wait_for() {
    for _ in $(seq 3000); do
        grep -q "$1" "$WORK/k6.log" 2>/dev/null && return 0
        kill -0 "$kp" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
rss() { awk '/^VmRSS:/{print $2 * 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

for shape in str32 user; do
    redis-cli -h 127.0.0.1 -p $port flushall >/dev/null
    base=$(redis-cli -h 127.0.0.1 -p $port info memory | awk -F: '/^used_memory:/{print $2+0}')
    python3 - "$shape" "$N" "$WORK/vbytes" >"$WORK/cmds" <<'PY'
import json, sys
shape, n, vb = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = sys.stdout
total = 0
for i in range(n):
    v = json.dumps({"id": i, "name": f"name-{i}", "email": f"user{i}@example.com", "tags": ["a", "b", "c"],
                    "active": True, "score": 17.5,
                    "address": {"street": "1 Main St", "city": "Springfield", "zip": "12345"}},
                   separators=(",", ":")) if shape == "user" else json.dumps("v" * 32)
    total += len(v.encode())
    k = f"user:{i:07d}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v.encode())}\r\n{v}\r\n")
open(vb, "w").write(f"{total / n:.0f}\n")
with open(vb + ".z", "w") as z:
    for i in range(n):
        k = f"user:{i:07d}"
        z.write(f"*4\r\n$4\r\nZADD\r\n$4\r\nkeys\r\n$1\r\n0\r\n${len(k)}\r\n{k}\r\n")
PY
    redis-cli -h 127.0.0.1 -p $port --pipe <"$WORK/cmds" >/dev/null
    used=$(redis-cli -h 127.0.0.1 -p $port info memory | awk -F: '/^used_memory:/{print $2+0}')
    redis-cli -h 127.0.0.1 -p $port --pipe <"$WORK/vbytes.z" >/dev/null
    usedz=$(redis-cli -h 127.0.0.1 -p $port info memory | awk -F: '/^used_memory:/{print $2+0}')
    redis-cli -h 127.0.0.1 -p $port flushall >/dev/null
    rb=$(( (used - base) / N ))
    rzb=$(( (usedz - base) / N ))
    vbytes=$(cat "$WORK/vbytes")
    for track in 0 1; do
        name=memkey-$$-$shape-$track
        env N="$N" NAME="$name" TRACK=$track SHAPE=$shape "$K6" run -q --no-color "$WORK/fill.js" >"$WORK/k6.log" 2>&1 &
        kp=$!
        wait_for filled || true
        if ! size=$(stat -c %s "/dev/shm/shmkv.$name" 2>/dev/null) || ! grep -q filled "$WORK/k6.log"; then
            kill "$kp" 2>/dev/null || true
            echo "memkey: $shape trackKeys=$track: no store to measure; k6 said:" >&2
            cat "$WORK/k6.log" >&2
            exit 1
        fi
        wait "$kp"
        fb=
        if [[ -n $FORK_K6 ]]; then
            env N="$N" NAME="$name-fork" TRACK=$track SHAPE=$shape READY_WAIT=1 "$FORK_K6" run -q --no-color \
                "$WORK/fill.js" >"$WORK/k6.log" 2>&1 &
            kp=$!
            if wait_for ready; then
                r0=$(rss "$kp")
                if wait_for filled; then
                    fb=$(( ($(rss "$kp") - r0) / N ))
                fi
            fi
            wait "$kp" || true
            [[ -n $fb ]] || echo "memkey: fork $shape trackKeys=$track: not measured: $(grep -m1 -i error "$WORK/k6.log" | cut -c1-200)" >&2
        fi
        if ((TSV)); then
            printf 'mem\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$track" "$N" "$(( size / N ))" "$rb" "$vbytes" "${fb:-}" "$rzb"
        else
            echo "| $shape | $vbytes | $track | $(( size / N )) | $rb | $rzb |${FORK_K6:+ ${fb:-n/m} |}"
        fi
    done
done
