#!/usr/bin/env bash
# run.sh - libshmkv against its peers, at the C level and from k6.
#
#   bash tools/bench/peers/run.sh [--quick] [--no-docs] [--only SECTIONS]
#
# Measures (see docs/benchmarks-peers.md for what each row means):
#   C level   cbench.c: libshmkv (memory, disk) vs LMDB vs Redis through
#             hiredis (unpipelined, pipelined) vs a raw lock+probe baseline,
#             10k and 1M keys, 1 and 2 processes, get and set.
#   open      reopening a 1M-key disk store with trackKeys on: shmkv_open from
#             C, openKv from our k6, openKv from a k6 built with the xk6-kv
#             fork (on a 1M-key BoltDB in the fork's format).
#   k6 level  workload.js: get, set, 75/25 mix, randomKey (with and without a
#             prefix, trackKeys off and on), 1 and 8 VUs, on our k6 (memory
#             and disk), the fork (memory and disk, its defaults) and k6's
#             Redis module against a local redis-server; then 1, 2 and 3 k6
#             processes sharing one store (ours, Redis).
#   values    (issue 13) get, set and the 75/25 mix for each value shape of
#             workload.js (32-byte string, user record of 180 B of JSON,
#             1.1 KiB document, 20 numbers), 1 and 8 VUs, ours memory and disk, the
#             fork (memory, disk) and k6's Redis module (JSON.stringify and
#             JSON.parse in the script) taking turns, plus the codec floor
#             (JSON.parse / JSON.stringify of the value, no store), a get
#             whose fields are all read, and the construction floor (the
#             value built from its literal, no store).
#   batch     (issue 12) getMany/setMany of MANY (100) keys against single
#             get/set, keys/s, same VUs, plus the no-store floors (the
#             keys, or the record, made and one resolved promise).
#   scan      (issue 12) scan.js: scanKeys over SCAN_N keys in pages of 1,000
#             and count({prefix}), memory and disk, trackKeys off and on.
#   memkey    (issue 13) memkey.sh: bytes per key at MEM_N keys, ours
#             (trackKeys off, on) against Redis's used_memory.
# and regenerates docs/benchmarks-peers.md and docs/bench-*.png, printing
# PASS/FAIL per target.
#
# Every measurement is repeated (ROUNDS or REPS times) with the contenders
# interleaved: at the k6 level two k6 processes (ours and a peer) are started
# together and take turns second by second, so both see the same machine.
# Tables show medians and ratios measured in this run.
#
# The xk6-kv fork is not a Go module this machine can download: point
# XK6KV_SRC at a checkout of its source to include it (its rows are skipped,
# with a 'not measured' line, otherwise). Redis runs only on 127.0.0.1, is
# started and stopped here, and is bounded in time.
#
# Environment: XK6KV_SRC, XK6KV_DESC (how the report names the fork's
# source, default its git commit), ROUNDS (C level and processes), REPS (k6 pairs),
# DUR (k6 seconds per slot, at least 1), MPDUR (seconds per several-process
# run), CDUR (C seconds per row), PEERS_WORK (scratch directory for stores; default under /var/tmp),
# REDIS_PORT (default: first free port from 6399), VSHAPES (value shapes,
# default "str32 user doc nums"), VVUS (VUs for the value rows, default
# "1 8"), MANY (keys per batch, 100), SCAN_N and MEM_N (keys for scan and
# memkey: 1,000,000, or 100,000 with --quick).
#
# --only c,open,k6,mp,values,batch,scan,memkey runs those sections alone and
# prints the report without writing docs/ (each part alone; values.sh,
# batch.sh and memkey.sh remain as one-process shortcuts).
#
# Duration on a 2-core VM, builds cached: --quick about 6 minutes; the full
# run about 19 without the fork (C 2.5, open 0.1, k6 3, processes 3, values
# 7, batches 1.5, scans 0.3, bytes per key 1.5), 38 with it (its untracked
# scan alone takes 4). VSHAPES and VVUS shorten the values section.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PEERS=$ROOT/tools/bench/peers
QUICK=0
DOCS=1
ONLY=
KNOBS= # the knobs given, for the report's command line
for v in ROUNDS REPS DUR MPDUR CDUR VSHAPES VVUS MANY SCAN_N MEM_N; do
    [[ -z ${!v:-} ]] || KNOBS+="$v='${!v}' "
done
args=("$@")
while (($#)); do
    case "$1" in
    --quick) QUICK=1 ;;
    --no-docs) DOCS=0 ;;
    --only) ONLY=${2:?--only needs a list}; shift; DOCS=0 ;;
    -h | --help) sed -n '2,58p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
set -- "${args[@]}"
want() { [[ -z $ONLY || ,$ONLY, == *,$1,* ]]; }
if ((QUICK)); then
    ROUNDS=${ROUNDS:-1}; REPS=${REPS:-1}; DUR=${DUR:-1}; MPDUR=${MPDUR:-1}; CDUR=${CDUR:-0.4}; OPEN_REPS=3
    SCAN_N=${SCAN_N:-100000}; MEM_N=${MEM_N:-100000}
else
    ROUNDS=${ROUNDS:-3}; REPS=${REPS:-3}; DUR=${DUR:-1}; MPDUR=${MPDUR:-3}; CDUR=${CDUR:-0.75}; OPEN_REPS=5
    SCAN_N=${SCAN_N:-1000000}; MEM_N=${MEM_N:-1000000}
fi
VSHAPES=${VSHAPES:-str32 user doc nums}
VVUS=${VVUS:-1 8}
MANY=${MANY:-100}
NKEYS=10000
BIG=1000000
T_START=$(date +%s)
CMDLINE="${XK6KV_SRC:+XK6KV_SRC=$XK6KV_SRC }${XK6KV_DESC:+XK6KV_DESC='$XK6KV_DESC' }${KNOBS}bash tools/bench/peers/run.sh${*:+ $*}"

log() { printf '[peers %4ds] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }

# ------------------------------------------------------------------ deps
need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
command -v python3 >/dev/null || need_pkgs+=(python3)
[[ -f /usr/include/lmdb.h ]] || need_pkgs+=(liblmdb-dev)
[[ -f /usr/include/hiredis/hiredis.h ]] || need_pkgs+=(libhiredis-dev)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/libshmkv/peers
mkdir -p "$CACHE"
WORK=$(mktemp -d "${PEERS_WORK:-/var/tmp}/shmkv-peers.XXXXXX")
RES=$WORK/results.tsv   # section \t key... \t value
: >"$RES"
NOTES=$WORK/notes.txt   # free-form lines for the report
: >"$NOTES"
REDIS_PID=
cleanup() {
    if [[ -n "$REDIS_PID" ]]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
    rm -f /dev/shm/shmkv.peers*-$$-*
}
trap cleanup EXIT
note() { echo "$*" >>"$NOTES"; log "$*"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ------------------------------------------------------------------ builds
CC=${CC:-cc}
cb_hash=$(cat "$PEERS/cbench.c" "$ROOT"/libshmkv/include/*.h "$ROOT"/libshmkv/src/*.[ch] | sha256sum | cut -c1-16)
CBENCH=$CACHE/cbench-$cb_hash
if [[ ! -x $CBENCH ]]; then
    log "building cbench"
    $CC -O2 -std=c11 -D_GNU_SOURCE -I"$ROOT/libshmkv/include" -I"$ROOT/libshmkv/src" \
        "$ROOT"/libshmkv/src/*.c "$PEERS/cbench.c" -o "$CBENCH.tmp" -llmdb -lhiredis -lpthread -lrt
    mv "$CBENCH.tmp" "$CBENCH"
fi

bf_hash=$(cat "$PEERS"/boltfill/*.go "$PEERS"/boltfill/go.mod "$PEERS"/boltfill/go.sum | sha256sum | cut -c1-16)
BOLTFILL=$CACHE/boltfill-$bf_hash
if [[ ! -x $BOLTFILL ]]; then
    log "building boltfill"
    (cd "$PEERS/boltfill" && go build -o "$BOLTFILL" .)
fi

K6=
if out=$(bash "$ROOT/scripts/build-k6.sh" 2>"$WORK/build-k6.log"); then
    K6=$(tail -n1 <<<"$out")
    [[ -x $K6 ]] || K6=
fi
[[ -n $K6 ]] || note "not measured: our k6 (scripts/build-k6.sh failed: $(tail -n1 "$WORK/build-k6.log"))"

# k6 v2 has no Redis module (k6/experimental/redis was removed, and the
# xk6-redis extension the module proxy serves is for k6 v1): the Redis rows
# run on a plain k6 v1, the last k6 with one built in.
K6_V1=v1.8.1
K6REDIS=$CACHE/k6-plain-$K6_V1-$(go env GOVERSION)
if [[ ! -x $K6REDIS ]]; then
    log "building a plain k6 $K6_V1 for the Redis rows"
    B=$WORK/k6redis-build
    mkdir -p "$B"
    cat >"$B/main.go" <<EOF
package main

import k6cmd "go.k6.io/k6/cmd"

func main() { k6cmd.Execute() }
EOF
    printf 'module shmkvpeers/k6redis\n\ngo 1.25\n\nrequire go.k6.io/k6 %s\n' "$K6_V1" >"$B/go.mod"
    if ! (cd "$B" && GOFLAGS=-mod=mod go mod tidy >&2 && CGO_ENABLED=0 go build -o "$K6REDIS.tmp" . >&2 &&
          mv "$K6REDIS.tmp" "$K6REDIS"); then
        K6REDIS=
        note "not measured: Redis rows (a plain k6 $K6_V1 did not build)"
    fi
fi

K6FORK=
if [[ -n ${XK6KV_SRC:-} && -f ${XK6KV_SRC}/go.mod ]]; then
    XK6KV_SRC=$(cd "$XK6KV_SRC" && pwd)
    fork_mod=$(awk '$1=="module"{print $2; exit}' "$XK6KV_SRC/go.mod")
    fk_hash=$( (cd "$XK6KV_SRC" && find . -type f \( -name '*.go' -o -name go.mod \) ! -name '*_test.go' -print0 |
        LC_ALL=C sort -z | xargs -0 cat; echo "$fork_mod cgo=$(go env CGO_ENABLED)"; go env GOVERSION) | sha256sum | cut -c1-16)
    K6FORK=$CACHE/k6-xk6kv-$fk_hash
    if [[ ! -x $K6FORK ]]; then
        log "building k6 with the xk6-kv fork from $XK6KV_SRC"
        B=$WORK/k6fork-build
        mkdir -p "$B"
        cat >"$B/main.go" <<EOF
package main

import (
	k6cmd "go.k6.io/k6/v2/cmd"

	_ "$fork_mod"
)

func main() { k6cmd.Execute() }
EOF
        cat >"$B/go.mod" <<EOF
module shmkvpeers/k6xkv

go 1.25

require (
	go.k6.io/k6/v2 ${K6_VERSION:-v2.2.0}
	$fork_mod v0.0.0
)

replace $fork_mod => $XK6KV_SRC
EOF
        if (cd "$B" && GOFLAGS=-mod=mod go mod tidy >&2 && go build -o "$K6FORK.tmp" . >&2); then
            mv "$K6FORK.tmp" "$K6FORK"
        else
            K6FORK=
            note "not measured: xk6-kv fork (its k6 did not build from XK6KV_SRC=$XK6KV_SRC)"
        fi
    fi
else
    note "not measured: xk6-kv fork rows and columns (XK6KV_SRC not set: the fork's module is not served by this machine's module proxy; point XK6KV_SRC at a checkout of its source)"
fi

# ------------------------------------------------------------------ redis
start_redis() {
    local port
    for port in ${REDIS_PORT:-6399 6400 6401 6402 6403 6404 6405}; do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then continue; fi
        timeout 3600 redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --protected-mode yes --loglevel warning --dir "$WORK" >"$WORK/redis.log" 2>&1 &
        REDIS_PID=$!
        for _ in $(seq 50); do
            redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && { RPORT=$port; return 0; }
            sleep 0.1
        done
        kill "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
    done
    return 1
}
RPORT=
if start_redis; then
    log "redis-server on 127.0.0.1:$RPORT"
else
    note "not measured: Redis rows (redis-server did not start on 127.0.0.1)"
fi

echo -e "machine\tnproc\t$(nproc)" >>"$RES"
echo -e "machine\tcpu\t$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" >>"$RES"
echo -e "machine\tkernel\t$(uname -r)" >>"$RES"
echo -e "machine\tmem\t$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)" >>"$RES"
echo -e "machine\tstorefs\t$(df -T "$WORK" | awk 'NR==2{print $2}')" >>"$RES"
echo -e "machine\tredis\t$(redis-server --version | awk '{print $3}')" >>"$RES"
echo -e "machine\tlmdb\t$(awk '/define MDB_VERSION_(MAJOR|MINOR|PATCH)/{v=v (v?".":"") $3} END{print v}' /usr/include/lmdb.h)" >>"$RES"
[[ -n $K6 ]] && echo -e "machine\tk6\t$("$K6" version 2>/dev/null | head -n1)" >>"$RES"
[[ -n $K6REDIS ]] && echo -e "machine\tk6-redis\t$("$K6REDIS" version 2>/dev/null | head -n1)" >>"$RES"
echo -e "run\tcommand\t$CMDLINE" >>"$RES"
echo -e "run\tdate\t$(date -u '+%Y-%m-%d %H:%M UTC')" >>"$RES"
echo -e "run\trounds\t$ROUNDS" >>"$RES"
echo -e "run\treps\t$REPS" >>"$RES"
echo -e "run\tmpdur\t$MPDUR" >>"$RES"
echo -e "run\tdur\t$DUR" >>"$RES"
echo -e "run\tcdur\t$CDUR" >>"$RES"
echo -e "run\tnkeys\t$NKEYS" >>"$RES"
echo -e "run\tquick\t$QUICK" >>"$RES"
echo -e "run\tmany\t$MANY" >>"$RES"
echo -e "run\tonly\t$ONLY" >>"$RES"
echo -e "run\tcommit\t$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$RES"
if [[ -n $K6FORK ]]; then
    fork_desc=${XK6KV_DESC:-}
    [[ -n $fork_desc ]] || fork_desc=$(cd "$XK6KV_SRC" && git rev-parse --short HEAD 2>/dev/null || true)
    echo -e "run\tfork\t$fork_mod ${fork_desc:-(source at XK6KV_SRC)}" >>"$RES"
fi

# ------------------------------------------------------------------ C level
if want c; then
log "C level: $ROUNDS round(s), ${CDUR}s per measurement"
CBACKENDS=(raw shmkv-mem shmkv-disk lmdb)
[[ -n $RPORT ]] && CBACKENDS+=(redis redis-pipe)
for r in $(seq "$ROUNDS"); do
    for n in $NKEYS $BIG; do
        for b in "${CBACKENDS[@]}"; do
            "$CBENCH" run -b "$b" -n "$n" -t "$CDUR" -d "$WORK" -P "${RPORT:-0}" -B 32 |
                awk -v r="$r" '$1=="RESULT"{printf "c\t%s\t%s\t%s\t%s\t%s\t%s\n", $2, $3, $4, $5, r, $6}' >>"$RES"
        done
    done
    log "C level round $r done"
done
fi

# ------------------------------------------------------------------ open time
if want open; then
log "open time: 1M keys, trackKeys on"
"$CBENCH" open -n "$BIG" -d "$WORK" -r "$OPEN_REPS" -k | awk '$1=="OPEN_US"{printf "open\tc\t%s\n", $2}' >>"$RES"
openkv_ms() { # binary store -> prints the first init context's openKv time
    STORE=$2 "$1" run -q --summary-mode=disabled "$PEERS/open.js" 2>&1 | grep -o 'OPENKV_MS [0-9]*' | head -n1 | awk '{print $2}'
}
if [[ -n $K6 ]]; then
    for _ in $(seq "$OPEN_REPS"); do
        v=$(openkv_ms "$K6" "$WORK/open.shmkv" || true)
        [[ -n $v ]] && echo -e "open\tours-k6\t$v" >>"$RES"
    done
fi
rm -f "$WORK/open.shmkv"
if [[ -n $K6FORK ]]; then
    "$BOLTFILL" -path "$WORK/open.bolt" -n "$BIG"
    for _ in $(seq "$OPEN_REPS"); do
        v=$(openkv_ms "$K6FORK" "$WORK/open.bolt" || true)
        [[ -n $v ]] && echo -e "open\tfork-k6\t$v" >>"$RES"
    done
    rm -f "$WORK/open.bolt"
fi
fi

# ------------------------------------------------------------------ k6 level
# k6pair PAIR VUS TRACK OPS A B: two k6 processes started together that take
# turns second by second (workload.js PHASE/NPHASE), each side given as
# "impl|binary|VAR=value VAR=value..." (more than two sides take turns the
# same way); SOLO (ops measured by the first side alone, one slot each), SHAPE
# and MANY are passed on when set around the call. Results appended as
#   k6p <pair> <impl> <op> <track> <vus> <rep> <ops/s>
k6pair() {
    local pair=$1 vus=$2 track=$3 ops=$4
    shift 4
    local start=$(($(date +%s%3N) + 4500)) side pids=() impls=() i=0 ok=1
    for side in "$@"; do
        local impl=${side%%|*} rest=${side#*|}
        local bin=${rest%%|*} envs=${rest#*|}
        impls+=("$impl")
        # shellcheck disable=SC2086
        env SOLO="${SOLO:-}" SHAPE="${SHAPE:-str32}" MANY="$MANY" $envs \
            TRACK="$track" OPS="$ops" VUS="$vus" DUR="$DUR" REPS="$REPS" NKEYS="$NKEYS" \
            PHASE="$i" NPHASE="$#" START_AT="$start" SUMMARY="$WORK/pair-$i.json" \
            timeout 900 "$bin" run -q --no-color "$PEERS/workload.js" >"$WORK/pair-$i.log" 2>&1 &
        pids+=($!)
        i=$((i + 1))
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || ok=0; done
    if ((!ok)); then
        note "k6 run failed: $pair vus=$vus track=$track ops=$ops: $(grep -h -m1 -i 'error' "$WORK"/pair-*.log | cut -c1-300)"
        return 0
    fi
    for i in "${!impls[@]}"; do
        python3 - "$WORK/pair-$i.json" "$pair" "${impls[$i]}" "$track" "$vus" "$DUR" >>"$RES" <<'PY'
import json, sys
path, pair, impl, track, vus, dur = sys.argv[1:]
d = json.load(open(path))
for op, reps in sorted(d["ops"].items()):
    for rep, n in enumerate(reps):
        if n is not None:
            print(f"k6p\t{pair}\t{impl}\t{op}\t{track}\t{vus}\t{rep}\t{n / float(dur):.0f}")
if d.get("errors"):
    print(f"k6err\t{impl}\t{track}\t{vus}\t{pair}\t{d['errors']}")
PY
    done
    rm -f "$WORK"/pair-*.json
}

if [[ -n $K6FORK ]]; then
    "$BOLTFILL" -path "$WORK/fork-0.bolt" -n "$NKEYS"
    cp "$WORK/fork-0.bolt" "$WORK/fork-1.bolt"
fi
[[ -n $RPORT ]] && redis-cli -h 127.0.0.1 -p "$RPORT" flushall >/dev/null
RURL="redis://127.0.0.1:$RPORT"
if want k6; then
log "k6 level: paired processes taking turns, $REPS repetition(s), ${DUR}s per slot"
for vus in 1 8; do
    for t in 0 1; do
        ops=warm,get,set,mix,rk,rkp; ((t)) && ops=warm,rk,rkp
        if [[ -n $K6 && -n $K6FORK ]]; then
            k6pair mem "$vus" "$t" "$ops$( ((t)) || echo ,noop)" \
                "ours-mem|$K6|IMPL=kv BACKEND=memory STORE=peers-$$-$vus-$t" \
                "fork-mem|$K6FORK|IMPL=kv BACKEND=memory"
            rm -f "$WORK/ours-$t.kv"
            k6pair disk "$vus" "$t" "$ops" \
                "ours-disk|$K6|IMPL=kv BACKEND=disk STORE=$WORK/ours-$t.kv" \
                "fork-disk|$K6FORK|IMPL=kv BACKEND=disk STORE=$WORK/fork-$t.bolt"
        fi
    done
    if [[ -n $K6 && -n $K6REDIS && -n $RPORT ]]; then
        # noop: the floor, measured here too (by ours alone) when the fork's
        # pairs, which measure it beside the fork, are not run.
        SOLO=noop k6pair redis-mem "$vus" 0 warm,get,set,mix,rk,noop \
            "ours-mem|$K6|IMPL=kv BACKEND=memory STORE=peers-r-$$-$vus" "redis|$K6REDIS|IMPL=redis REDIS=$RURL"
        rm -f "$WORK/ours-r.kv"
        k6pair redis-disk "$vus" 0 warm,get,set,mix,rk \
            "ours-disk|$K6|IMPL=kv BACKEND=disk STORE=$WORK/ours-r.kv" "redis|$K6REDIS|IMPL=redis REDIS=$RURL"
    fi
    log "k6 level, $vus VU(s) done"
done
fi

# ------------------------------------------------------------------ processes
# P k6 processes, 8 VUs in total (execution segments), one store, mix.
multiproc() { # impl bin round P env...
    local impl=$1 bin=$2 round=$3 np=$4
    shift 4
    local seq="0,1" segs=("0:1")
    ((np == 2)) && { seq="0,1/2,1"; segs=("0:1/2" "1/2:1"); }
    ((np == 3)) && { seq="0,1/3,2/3,1"; segs=("0:1/3" "1/3:2/3" "2/3:1"); }
    local start=$(($(date +%s%3N) + 2500 + 500 * np)) pids=() i
    for i in "${!segs[@]}"; do
        env "$@" START_AT="$start" TRACK=0 OPS=mix VUS=8 DUR="$MPDUR" NKEYS="$NKEYS" SUMMARY="$WORK/mp-$i.json" \
            timeout 300 "$bin" run -q --no-color --execution-segment "${segs[$i]}" \
            --execution-segment-sequence "$seq" "$PEERS/workload.js" >"$WORK/mp-$i.log" 2>&1 &
        pids+=($!)
    done
    local ok=1
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || ok=0; done
    if ((!ok)); then
        note "multi-process run failed: $impl P=$np: $(grep -h -m1 -i error "$WORK"/mp-*.log | cut -c1-300)"
        return 0
    fi
    python3 - "$impl" "$np" "$round" "$MPDUR" "$WORK"/mp-{0..2}.json >>"$RES" 2>/dev/null <<'EOF' || true
import json, os, sys
impl, np_, rnd, dur = sys.argv[1:5]
files = [f for f in sys.argv[5:5 + int(np_)]]
tot = sum(sum(n or 0 for n in json.load(open(f))["ops"].get("mix", [])) for f in files)
print(f"mp\t{impl}\t{np_}\t{rnd}\t{tot / float(dur):.0f}")
EOF
    rm -f "$WORK"/mp-*.json
}
if want mp; then
log "several k6 processes on one store"
for r in $(seq "$ROUNDS"); do
    for np in 1 2 3; do
        if [[ -n $K6 ]]; then
            multiproc ours-mem "$K6" "$r" "$np" IMPL=kv BACKEND=memory STORE="peers-mp-$$-$r-$np"
            rm -f "$WORK/mp.kv"
            multiproc ours-disk "$K6" "$r" "$np" IMPL=kv BACKEND=disk STORE="$WORK/mp.kv"
        fi
        if [[ -n $RPORT && -n $K6REDIS ]]; then
            multiproc redis "$K6REDIS" "$r" "$np" IMPL=redis REDIS="redis://127.0.0.1:$RPORT"
        fi
    done
    log "multi-process round $r done"
done
fi
if want mp && [[ -n $K6FORK ]]; then
    # The fork keeps its memory store inside one process, and its disk store
    # is a BoltDB file that one process holds under an exclusive flock while
    # it is open. Show what a second process does.
    log "xk6-kv fork: a second process on the same disk store"
    fenv=(TRACK=0 OPS=get VUS=1 NKEYS="$NKEYS" IMPL=kv BACKEND=disk STORE="$WORK/fork-0.bolt")
    env "${fenv[@]}" DUR=8 SUMMARY="$WORK/x1.json" timeout 60 "$K6FORK" run -q "$PEERS/workload.js" >/dev/null 2>&1 &
    first=$!
    sleep 2
    rc=0
    env "${fenv[@]}" DUR=1 SUMMARY="$WORK/x2.json" timeout 4 "$K6FORK" run -q "$PEERS/workload.js" >/dev/null 2>&1 || rc=$?
    if ((rc == 124)); then
        echo -e "forkshare\tdisk\ta second k6 process could not open the fork's disk store while a first one had it open (BoltDB's exclusive flock; bolt.Open waits without a timeout) and was killed after 4 s" >>"$RES"
    else
        echo -e "forkshare\tdisk\ta second k6 process on the fork's disk store exited with status $rc within 4 s" >>"$RES"
    fi
    wait "$first" || true
fi

# ------------------------------------------------------------------ values (issue 13)
# Per shape and VU count, ours (memory, disk), the fork (memory, disk) and
# Redis (k6 v1, JSON.stringify/JSON.parse in the script) take turns slot by
# slot; the codec floor (fparse, fstring) and the construction floor (flit)
# are measured by ours-mem alone, each in the slot after the operation it is
# the floor of: this machine's speed drifts by a quarter within seconds, and
# a floor measured ten slots away from its operation made the per-repetition
# ratios swing from 0.6x to 1.3x.
if want values && [[ -n $K6 ]]; then
    log "values: shapes $VSHAPES, VUs $VVUS, $REPS repetition(s)"
    for shape in $VSHAPES; do
        for vus in $VVUS; do
            sides=("ours-mem|$K6|IMPL=kv BACKEND=memory STORE=peers-v-$$-$shape-$vus"
                "ours-disk|$K6|IMPL=kv BACKEND=disk STORE=$WORK/v-$shape-$vus.kv")
            if [[ -n $K6FORK ]]; then
                sides+=("fork-mem|$K6FORK|IMPL=kv BACKEND=memory"
                    "fork-disk|$K6FORK|IMPL=kv BACKEND=disk STORE=$WORK/fv-$shape-$vus.bolt")
            fi
            if [[ -n $K6REDIS && -n $RPORT ]]; then
                redis-cli -h 127.0.0.1 -p "$RPORT" flushall >/dev/null
                sides+=("redis|$K6REDIS|IMPL=redis REDIS=$RURL")
            fi
            SHAPE=$shape SOLO=fparse,fstring,flit k6pair "values-$shape" "$vus" 0 warm,get,fparse,flit,getr,set,fstring,mix "${sides[@]}"
            rm -f "$WORK/v-$shape-$vus.kv" "$WORK/fv-$shape-$vus.bolt"
        done
        log "values: $shape done"
    done
    [[ -n $RPORT ]] && redis-cli -h 127.0.0.1 -p "$RPORT" flushall >/dev/null
fi

# ------------------------------------------------------------------ batches (issue 12)
# getMany/setMany of MANY keys against get/set, keys/s, ours memory and disk
# (and the fork's) taking turns; noopm and noopr (the same keys, or the same
# record, made and one resolved promise, no store) by ours-mem alone, each
# beside the batch it is the floor of.
if want batch && [[ -n $K6 ]]; then
    log "batches: $MANY keys, $REPS repetition(s)"
    for vus in 1 8; do
        sides=("ours-mem|$K6|IMPL=kv BACKEND=memory STORE=peers-b-$$-$vus"
            "ours-disk|$K6|IMPL=kv BACKEND=disk STORE=$WORK/b-$vus.kv")
        if [[ -n $K6FORK ]]; then
            sides+=("fork-mem|$K6FORK|IMPL=kv BACKEND=memory"
                "fork-disk|$K6FORK|IMPL=kv BACKEND=disk STORE=$WORK/fb-$vus.bolt")
        fi
        SOLO=noopm,noopr k6pair batch "$vus" 0 warm,get,getm,noopm,set,setm,noopr "${sides[@]}"
        rm -f "$WORK/b-$vus.kv" "$WORK/fb-$vus.bolt"
    done
fi

# ------------------------------------------------------------------ scans (issue 12)
# scan.js: seed SCAN_N keys with setMany, scanKeys in pages of 1,000, then
# count({prefix}) of 10,000 of them; one k6 process at a time.
scan_one() { # impl binary backend track
    local impl=$1 bin=$2 backend=$3 track=$4 store
    store=peers-s-$$-$impl-$track
    [[ $backend == disk ]] && store=$WORK/s-$impl-$track.kv
    rm -f "$WORK/scan.json"
    if env BACKEND="$backend" TRACK="$track" N="$SCAN_N" PAGE=1000 STORE="$store" SUMMARY="$WORK/scan.json" \
        timeout 900 "$bin" run -q --no-color "$PEERS/scan.js" >"$WORK/scan.log" 2>&1 && [[ -s $WORK/scan.json ]]; then
        echo -e "scan\t$impl\t$backend\t$track\t$(cat "$WORK/scan.json")" >>"$RES"
    else
        note "scan run failed: $impl $backend trackKeys=$track: $(grep -m1 -i error "$WORK/scan.log" | cut -c1-300)"
    fi
    rm -f "$WORK/s-$impl-$track.kv"
}
if want scan && [[ -n $K6 ]]; then
    log "scans: $SCAN_N keys"
    echo -e "run\tscan_n\t$SCAN_N" >>"$RES"
    for backend in memory disk; do
        for track in 0 1; do
            scan_one ours "$K6" "$backend" "$track"
            [[ -n $K6FORK ]] && scan_one fork "$K6FORK" "$backend" "$track"
        done
    done
fi

# ------------------------------------------------------------------ bytes per key (issue 13)
if want memkey && [[ -n $K6 ]]; then
    if [[ -n $RPORT ]]; then
        log "bytes per key: $MEM_N keys"
        echo -e "run\tmem_n\t$MEM_N" >>"$RES"
        if ! N=$MEM_N RPORT=$RPORT TSV=1 FORK_K6=$K6FORK TMPDIR=$WORK bash "$PEERS/memkey.sh" "$K6" >>"$RES" 2>"$WORK/memkey.log"; then
            note "memkey.sh failed: $(tail -n3 "$WORK/memkey.log" | tr '\n' ' ' | cut -c1-300)"
        fi
        while read -r l; do note "$l"; done < <(grep -h '^memkey: fork' "$WORK/memkey.log" || true)
        redis-cli -h 127.0.0.1 -p "$RPORT" flushall >/dev/null
    else
        note "not measured: bytes per key (no redis-server to compare with)"
    fi
fi

cp "$RES" "$CACHE/last-results.tsv"
log "raw results kept in $CACHE/last-results.tsv"

# ------------------------------------------------------------------ report
if ((DOCS)); then
    python3 "$PEERS/report.py" "$RES" "$NOTES" "$ROOT/docs" "$WORK"
else
    python3 "$PEERS/report.py" "$RES" "$NOTES" "" "$WORK"
fi
log "done in $(($(date +%s) - T_START)) s"
