#!/usr/bin/env bash
# CLI tests of shmkv-dump.
#   run.sh DUMP MKSTORE GROUP
# GROUP: golden json check corrupt claims nonstore live export (or "all").
# Every dump run on a file store is followed by a check that the store is
# byte-identical (sha256) to what it was before the run, except while a
# writer is deliberately changing it (group "live").
set -u

DUMP=$1
MK=$2
GROUP=${3:-all}
LOAD=${4:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GOLD=$HERE/golden
T=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-dump-test.XXXXXX")
MEMNAME="dumptest$$"
PIDS=()
PASS=0
FAIL=0

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$T"
    rm -f "/dev/shm/shmkv.$MEMNAME"
}
trap cleanup EXIT
cd "$T" || exit 1

ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }

sha() { if [ -f "$1" ]; then sha256sum "$1" | cut -d' ' -f1; else echo none; fi; }

# d FILE ARGS...: run the dump on FILE (a path, or --memory NAME given in
# ARGS with FILE the object's path); stdout in $T/out, stderr in $T/err,
# status in RC. Fails the test run if the store's bytes changed.
d() {
    local f=$1
    shift
    local before after
    before=$(sha "$f")
    "$DUMP" "$@" >"$T/out" 2>"$T/err"
    RC=$?
    after=$(sha "$f")
    if [ "$before" != "$after" ]; then
        bad "store $f modified by: shmkv-dump $*"
    fi
    if [ "$RC" -ge 128 ]; then
        bad "shmkv-dump $* died of signal $((RC - 128))"
        sed 's/^/# /' "$T/err"
    fi
}

expect_rc() { # WANT DESCRIPTION
    if [ "$RC" = "$1" ]; then ok "$2 (exit $RC)"; else
        bad "$2: exit $RC, wanted $1"
        sed 's/^/# out: /' "$T/out" | head -20
        sed 's/^/# err: /' "$T/err" | head -20
    fi
}

expect_out() { # FILE-WITH-EXPECTED DESCRIPTION [normaliser]
    local want=$1 what=$2 norm=${3:-cat}
    if $norm <"$T/out" | diff -u "$want" - >"$T/diff"; then ok "$what"; else
        bad "$what: output differs from $(basename "$want")"
        sed 's/^/# /' "$T/diff" | head -40
    fi
}

expect_grep() { # PATTERN FILE DESCRIPTION
    if grep -qE -- "$1" "$2"; then ok "$3"; else
        bad "$3: no line matches '$1' in $(basename "$2")"
        sed 's/^/# /' "$2" | head -20
    fi
}

json_ok() { # DESCRIPTION [python expression over d that must be true]
    local expr=${2:-True}
    if python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if ($expr) else 1)
" "$T/out" 2>"$T/jerr"; then ok "$1"; else
        bad "$1: JSON invalid or condition false: $expr"
        sed 's/^/# /' "$T/jerr" | tail -3
        head -c 600 "$T/out" | sed 's/^/# /'
    fi
}

# Normalisers for the golden files: sizes, times and pids vary.
norm_summary() {
    sed -E -e 's/created [0-9TZ:-]+/created <time>/' \
        -e '/^(size:|                |bytes in use:|bytes free:)/ s/[0-9]+(\.[0-9]+)?/N/g' \
        -e '/^segments:/ s/, [0-9]+ slots, [0-9]+ tombstones, load factor [0-9.]+/, N slots, N tombstones, load factor N/'
}
norm_check() { sed -E -e 's/^checked: [0-9]+ chunks, [0-9]+ blocks,/checked: N chunks, N blocks,/'; }

wait_ready() { # FIFO-FILE
    local i
    for i in $(seq 1 100); do
        grep -q ready "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---- golden ------------------------------------------------------------------
group_golden() {
    "$MK" golden g.kv || { bad "build golden store"; return; }
    d g.kv g.kv
    expect_rc 0 "summary"
    expect_out "$GOLD/summary.txt" "summary matches golden" norm_summary
    d g.kv --keys g.kv
    expect_rc 0 "--keys"
    expect_out "$GOLD/keys.txt" "--keys matches golden"
    d g.kv --keys --prefix user: --limit 5 g.kv
    expect_out "$GOLD/keys-prefix-limit.txt" "--keys --prefix user: --limit 5"
    d g.kv --keys --prefix user:02 g.kv
    expect_out "$GOLD/keys-prefix.txt" "--keys --prefix user:02"
    d g.kv --keys --limit 0 g.kv
    expect_out "$GOLD/keys.txt" "--limit 0 means no limit"
    d g.kv --keys --limit 1 g.kv
    if [ "$(cat "$T/out")" = '\x01bin\xff' ]; then ok "--limit 1 gives the smallest key"; else bad "--limit 1: $(cat "$T/out")"; fi
    d g.kv --keys --prefix nomatch g.kv
    if [ "$RC" = 0 ] && [ ! -s "$T/out" ]; then ok "--prefix with no match prints nothing"; else bad "--prefix nomatch"; fi
    d g.kv --keys --hex --prefix 0162 g.kv
    if [ "$(cat "$T/out")" = '\x01bin\xff' ]; then ok "--hex --prefix finds a binary key"; else bad "--hex --prefix: $(cat "$T/out")"; fi
    d g.kv --list g.kv
    expect_rc 0 "--list"
    expect_out "$GOLD/list.txt" "--list matches golden"
    d g.kv --list --prefix user:00 --limit 2 g.kv
    expect_out "$GOLD/list-prefix.txt" "--list --prefix user:00 --limit 2"
    local k
    for k in config greeting multi blob bad-json empty counter; do
        d g.kv --get "$k" g.kv
        expect_rc 0 "--get $k"
        expect_out "$GOLD/get-$k.txt" "--get $k matches golden"
    done
    d g.kv --get 0162696eff --hex g.kv
    expect_out "$GOLD/get-bin.txt" "--get --hex of a binary key"
    d g.kv --get user:013 g.kv
    expect_rc 1 "--get of a deleted key"
    expect_grep "key not found: user:013" "$T/err" "--get says the key is not found"
    d g.kv --check g.kv
    expect_rc 0 "--check on the golden store"
    expect_out "$GOLD/check.txt" "--check matches golden" norm_check
    d g.kv --stats g.kv
    expect_rc 0 "--stats"
    expect_grep '^size classes' "$T/out" "--stats lists size classes"
    expect_grep '^  fragmentation: ' "$T/out" "--stats gives fragmentation"
    expect_grep '^ +3 +9 +0 +16 ' "$T/out" "--stats per-segment row"

    # --help names every option; usage errors exit 2.
    d g.kv --help
    expect_rc 0 "--help"
    local opt
    for opt in --memory --keys --list --get --check --stats --prefix --limit --hex --json --retries --help --version; do
        grep -q -- "$opt" "$T/out" || bad "--help does not mention $opt"
    done
    ok "--help mentions every option"
    expect_grep "Exit status" "$T/out" "--help documents exit statuses"
    d g.kv --version
    expect_rc 0 "--version"
    d g.kv --keys --check g.kv
    expect_rc 2 "two modes"
    d g.kv
    expect_rc 2 "no store named"
    d g.kv --check --prefix x g.kv
    expect_rc 2 "--prefix without --keys/--list"
    d g.kv --keys --limit ten g.kv
    expect_rc 2 "--limit not a number"
    d g.kv --bogus g.kv
    expect_rc 2 "unknown option"
    d g.kv --get g.kv
    expect_rc 2 "--get without a store"
    d g.kv g.kv --memory x
    expect_rc 2 "both PATH and --memory"

    # A memory store, held open by a child process.
    local shm="/dev/shm/shmkv.$MEMNAME"
    rm -f "$shm"
    mkfifo hold.in
    "$MK" golden "$MEMNAME" memory <hold.in >hold.out &
    PIDS+=($!)
    exec 7>hold.in
    if wait_ready hold.out; then
        d "$shm" --memory "$MEMNAME"
        expect_rc 0 "memory store summary"
        expect_grep '^format: +version 4, memory backend' "$T/out" "memory store: backend shown"
        expect_grep '^shutdown: +open' "$T/out" "memory store: open while held"
        expect_grep "pid [0-9]+ alive" "$T/out" "memory store: attached pid alive"
        d "$shm" --keys --memory "$MEMNAME"
        expect_out "$GOLD/keys.txt" "memory store --keys matches golden"
        d "$shm" --check --memory "$MEMNAME"
        expect_rc 0 "memory store --check"
        d "$shm" --get config --memory "$MEMNAME" --json
        json_ok "memory store --get --json" 'd["found"] and d["value"]["name"] == "demo"'
    else
        bad "memory store holder did not start"
    fi
    exec 7>&-
    wait
    PIDS=()
    if [ -e "$shm" ]; then bad "memory store left behind"; fi
    d none --memory "$MEMNAME"
    expect_rc 2 "memory store gone after its last process closed"
    expect_grep "no memory store" "$T/err" "missing memory store message"
    d none --memory ../etc
    expect_rc 2 "invalid memory store name"
}

# ---- json ---------------------------------------------------------------------
group_json() {
    "$MK" golden g.kv || { bad "build golden store"; return; }
    d g.kv --json g.kv
    json_ok "summary --json" 'd["format_version"] == 4 and d["claims"] == {"live": 0, "expired": 0, "unreadable": 0, "last_token": 0} and d["backend"] == "disk" and d["keys"] == 28 and d["segments"] == 4 and d["track_keys"] is True and d["state"] == "clean" and d["clean"] is True and d["attached"] == [] and d["size"]["reserved"] == 64 << 20 and d["bytes_in_use"] > 0'
    d g.kv --keys --json g.kv
    json_ok "--keys --json" 'd["count"] == 28 and d["more"] is False and d["keys"][1] == "bad-json" and d["keys"][0] == {"key": "\ufffdbin\ufffd", "key_hex": "0162696eff"}'
    "$DUMP" --keys g.kv | tail -n +2 >keys.txt
    d g.kv --keys --json g.kv
    json_ok "--keys --json agrees with --keys" 'd["keys"][1:] == open("'"$T"'/keys.txt").read().split("\n")[:-1]'
    d g.kv --keys --json --prefix user: --limit 4 g.kv
    json_ok "--keys --json --prefix --limit" 'd["count"] == 4 and d["more"] is True and d["limit"] == 4 and d["prefix"] == "user:" and d["keys"] == ["user:001", "user:002", "user:003", "user:004"]'
    d g.kv --list --json g.kv
    json_ok "--list --json" '{e["key"]: e for e in d["entries"]}["config"]["value"]["tags"] == ["a", "b"]'
    json_ok "--list --json: kinds" 'all(e["kind"] in ("json", "string", "bytes") for e in d["entries"]) and len(d["entries"]) == 28'
    json_ok "--list --json: string" '{e["key"]: e for e in d["entries"]}["multi"]["value"] == "line one\nline two"'
    json_ok "--list --json: bytes as hex" '{e["key"]: e for e in d["entries"]}["blob"]["value_hex"] == bytes(i * 13 for i in range(20)).hex()'
    json_ok "--list --json: invalid JSON marked" '{e["key"]: e for e in d["entries"]}["bad-json"]["json_invalid"] is True and {e["key"]: e for e in d["entries"]}["bad-json"]["value"] == "{not json"'
    json_ok "--list --json: empty value" '{e["key"]: e for e in d["entries"]}["empty"]["value_hex"] == "" and {e["key"]: e for e in d["entries"]}["empty"]["size"] == 0'
    d g.kv --get greeting --json g.kv
    json_ok "--get --json" 'd["found"] is True and d["kind"] == "string" and d["value"] == "hello, world" and d["size"] == 12'
    d g.kv --get nope --json g.kv
    expect_rc 1 "--get --json of a missing key"
    json_ok "--get --json missing" 'd["found"] is False and d["key"] == "nope"'
    d g.kv --check --json g.kv
    expect_rc 0 "--check --json"
    json_ok "--check --json" 'd["sound"] is True and d["problems"] == [] and d["problem_count"] == 0 and d["checked"]["keys"] == 28 and d["checked"]["index_keys"] == 28 and d["live"] is False'
    d g.kv --stats --json g.kv
    json_ok "--stats --json" 'len(d["segments"]) == 4 and sum(s["keys"] for s in d["segments"]) == 28 and d["totals"]["used_bytes"] == sum(c["used_bytes"] for c in d["classes"]) and 0 <= d["fragmentation"] <= 1'
    cp g.kv bad.kv && "$MK" corrupt bad.kv entry-key
    d bad.kv --check --json bad.kv
    expect_rc 1 "--check --json on a damaged store"
    json_ok "--check --json lists problems" 'd["sound"] is False and d["problem_count"] == len(d["problems"]) > 0'
    : >empty.kv
    d empty.kv --json empty.kv
    expect_rc 2 "--json on an empty file"
    json_ok "--json error document" '"empty" in d["error"] and d["exit"] == 2'
}

# ---- check -------------------------------------------------------------------
group_check() {
    local t
    for t in 0 1; do
        "$MK" many m$t.kv 20000 "$t" 16 || bad "build many store"
        d m$t.kv --check m$t.kv
        expect_rc 0 "--check: 20000 keys, track_keys=$t"
        expect_grep '^result: sound$' "$T/out" "--check says sound (track_keys=$t)"
        "$MK" churn c$t.kv "$t" || bad "build churn store"
        d c$t.kv --check c$t.kv
        expect_rc 0 "--check after every kind of write, clear and rebuild (track_keys=$t)"
        d c$t.kv --keys c$t.kv
        if [ "$(wc -l <"$T/out")" = 1502 ] && LC_ALL=C sort -c "$T/out" 2>/dev/null; then
            ok "--keys after churn: 1502 keys, sorted"
        else
            bad "--keys after churn: $(wc -l <"$T/out") keys or not sorted"
        fi
    done
    d m1.kv --keys m1.kv
    if [ "$(wc -l <"$T/out")" = 17142 ] && LC_ALL=C sort -c "$T/out"; then ok "--keys on 17142 keys, sorted"; else bad "--keys m1.kv"; fi
    d m1.kv --keys --prefix k:0001 --limit 3 m1.kv
    if [ "$(tr '\n' ' ' <"$T/out")" = "k:00010000 k:00010001 k:00010002 " ]; then ok "--prefix/--limit on a large store"; else bad "--prefix on m1: $(tr '\n' ' ' <"$T/out")"; fi
    d m1.kv --get k:00000007 m1.kv
    expect_rc 1 "--get of a deleted key (large store)"
    d m1.kv --get k:00000008 m1.kv
    expect_out <(printf '{\n  "i": 8,\n  "pad": "........"\n}\n') "--get of a JSON value (large store)"

    # A writer killed at random points: the store stays sound; what the dead
    # process left half done is repaired by the next process that opens it.
    "$MK" many k.kv 2000 1 8 || bad "build kill store"
    local i
    for i in 1 2 3 4 5; do
        "$MK" writer k.kv 30 >/dev/null &
        local p=$!
        sleep "0.$((RANDOM % 5 + 2))"
        kill -9 "$p"
        wait "$p" 2>/dev/null
        d k.kv --check k.kv
        expect_rc 0 "--check after a writer was killed (run $i)"
    done
    d k.kv k.kv
    expect_grep '^shutdown: +unclean' "$T/out" "summary: unclean shutdown"
    expect_grep 'pid [0-9]+ dead' "$T/out" "summary: dead process listed"
    "$MK" hold k.kv </dev/null >/dev/null || bad "reopen after kill"
    d k.kv --check k.kv
    expect_rc 0 "--check after the next open repaired it"
    if grep -q '^warning' "$T/out"; then bad "warnings remain after repair"; sed 's/^/# /' "$T/out"; else ok "no warnings after repair"; fi
    d k.kv k.kv
    expect_grep '^shutdown: +clean' "$T/out" "summary: clean after a normal close"
}

# ---- corrupt -----------------------------------------------------------------
# damage KIND BASE EXIT PATTERN
damage() {
    local kind=$1 base=$2 want=$3 pat=$4
    cp "$base" "bad-$kind.kv"
    if ! "$MK" corrupt "bad-$kind.kv" "$kind"; then
        bad "could not damage a copy ($kind)"
        return
    fi
    d "bad-$kind.kv" --check "bad-$kind.kv"
    expect_rc "$want" "--check finds damage: $kind"
    if [ "$want" = 1 ]; then
        expect_grep "$pat" "$T/out" "--check names the damage: $kind"
        expect_grep '^result: [0-9]+ problems? found$' "$T/out" "--check result line: $kind"
    else
        expect_grep "$pat" "$T/err" "the message names the damage: $kind"
    fi
    d "bad-$kind.kv" --check --json "bad-$kind.kv"
    json_ok "--check --json on damage: $kind" "d.get('sound') is False or 'error' in d"
    # The other modes must not crash on it either.
    local mode
    for mode in "" --keys --list --stats "--get user:007" "--get k:00000100" --json "--list --json"; do
        # shellcheck disable=SC2086
        d "bad-$kind.kv" $mode "bad-$kind.kv"
        case $RC in 0 | 1 | 2) ;; *) bad "shmkv-dump $mode on damage $kind: exit $RC" ;; esac
    done
    ok "other modes survive damage: $kind"
}

group_corrupt() {
    "$MK" golden g.kv || { bad "build golden store"; return; }
    "$MK" many m.kv 3000 1 4 || { bad "build many store"; return; }
    damage magic g.kv 2 'not a shmkv store'
    damage version g.kv 1 'problem: header: format version 7'
    damage nseg g.kv 1 'problem: header: segment count 3'
    damage top g.kv 1 'region end \(top\) [0-9]+ lies beyond'
    damage entry-key g.kv 1 'hashes to segment|does not match key'
    damage entry-len g.kv 1 'out of range'
    damage slot-off g.kv 1 'is not the start of a block'
    damage slot-tag g.kv 1 'tag 0x[0-9a-f]+ does not match key'
    damage slot-doom g.kv 1 'marked for a delete batch the segment does not hold'
    damage slot-wild g.kv 1 'entry offset 0x123456789ab0 is not the start of a block'
    damage slot-dup g.kv 1 'is also referenced by a table slot'
    damage slot-empty g.kv 1 'counts [0-9]+ keys, its table holds'
    damage slot-move g.kv 1 'is unreachable: an empty slot lies between its home bucket'
    damage count g.kv 1 'counts [0-9]+ keys, its table holds'
    damage table g.kv 1 'table offset 0x[0-9a-f]+ is not a block'
    damage chunk-magic g.kv 1 'bad magic'
    damage chunk-used g.kv 1 'used [0-9]+ outside'
    damage chunk-owner g.kv 1 'owner 77777 is neither'
    damage block-size g.kv 1 'size 65520 / class [0-9]+ invalid'
    damage used-bytes g.kv 1 'allocator counts [0-9]+ bytes in use'
    damage freelist-loop g.kv 1 'free list of class [0-9]+ loops'
    damage freelist-live g.kv 1 'on the free list of class [0-9]+ but marked in use'
    damage index-count m.kv 1 'counts [0-9]+ keys, its subtree holds|index: counts'
    damage index-node m.kv 1 'index: tree node'
    damage index-cycle m.kv 1 'is also referenced by the index tree'
    damage index-blob m.kv 1 'does not match key|missing from the index'
    damage karr m.kv 1 'says position'
    damage index-n m.kv 1 'index: counts [0-9]+ keys'
    # Claims (format 3): the index's claimed counts, claim ends and pads,
    # and a lease flag on an entry without one.
    damage index-pad m.kv 1 'says its earliest claim end is 12345, its subtree.s is 0'
    damage index-held m.kv 1 'counts 1 claimed keys, its subtree holds 0'
    damage leaf-held m.kv 1 'count 0x100000001 with claim end 0'
    damage leaf-child m.kv 1 'index: counts a claim on key "k:[0-9]+", whose entry has no lease'
    damage lease-flag g.kv 1 'lease at 0x[0-9a-f]+ .*(runs past|was never issued)'
    "$MK" claims c.kv 1 || { bad "build claims store"; return; }
    damage lease-owner c.kv 1 'key "job:01": lease at 0x[0-9a-f]+: owner of 300 bytes \(at most 256\)'
    damage lease-past c.kv 1 'key "job:01": lease at 0x[0-9a-f]+: its owner of 256 bytes runs past its [0-9]+-byte block'
    damage lease-token c.kv 1 'key "job:01": lease at 0x[0-9a-f]+: token 1008 was never issued \(the last one is 1007\)'
    damage lease-token0 c.kv 1 'key "job:01": lease at 0x[0-9a-f]+: token 0 was never issued'
    damage lease-drop c.kv 1 'index: counts a claim on key "job:01", whose entry has no lease'
    damage lease-expiry c.kv 1 'index: counts a claim on key "job:01" ending at [0-9]+, its lease ends at [0-9]+'
    damage lease-high c.kv 1 'key "job:01": lease at 0x[0-9a-f]+: ends at [0-9]+, after the latest end ever granted \([0-9]+\)'
    damage lease-uncounted c.kv 1 'index: key "job:01" has a live claim \(token 1001\) that the index does not count'
    # Listing a damaged store reports what it skipped and exits 1.
    cp g.kv skip.kv && "$MK" corrupt skip.kv entry-len
    d skip.kv --keys skip.kv
    expect_rc 1 "--keys skips a damaged entry"
    expect_grep 'skipped' "$T/err" "--keys says what it skipped"
    if [ "$(wc -l <"$T/out")" = 27 ]; then ok "--keys lists the 27 readable keys"; else bad "--keys on damage: $(wc -l <"$T/out") keys"; fi
}

# ---- claims: how leases are shown and checked ---------------------------------
group_claims() {
    "$MK" claims c.kv 1 || { bad "build claims store"; return; }
    d c.kv c.kv
    expect_rc 0 "summary of a store with claims"
    expect_grep '^claims: +3 live, 1 expired, last token 1007$' "$T/out" "summary counts live and expired claims"
    d c.kv --json c.kv
    json_ok "summary --json: claims" 'd["claims"] == {"live": 3, "expired": 1, "unreadable": 0, "last_token": 1007}'
    d c.kv --keys c.kv
    expect_rc 0 "--keys with claims"
    expect_grep $'^job:01\t\\(claim token 1001, owner "vu-3", (599|600)\\.[0-9]{3} s left\\)$' "$T/out" "--keys: a live claim with its owner and time left"
    expect_grep $'^job:02\t\\(claim token 1002, [0-9]+\\.[0-9]{3} s left\\)$' "$T/out" "--keys: a claim without owner"
    expect_grep $'^job:03\t\\(claim token 1003, owner "vu-\\\\xff", expired [0-9]+ s ago\\)$' "$T/out" "--keys: a lease that ran out"
    expect_grep $'^job:07\t\\(claim token 1007, owner "vu-7", (599|600)\\.[0-9]{3} s left\\)$' "$T/out" "--keys: a renewed claim keeps its token"
    if grep -qE '^job:(04|06|08)$' "$T/out" && ! grep -q '^job:05' "$T/out" && [ "$(wc -l <"$T/out")" = 11 ]; then
        ok "--keys: released and completed keys carry no claim, a completed-and-deleted one is gone"
    else
        bad "--keys on claims: $(tr '\n' '|' <"$T/out")"
    fi
    d c.kv --list --prefix job:01 c.kv
    expect_grep '^job:01 \(string, 6 bytes; claim token 1001, owner "vu-3", [0-9.]+ s left\)$' "$T/out" "--list: the claim after kind and size"
    expect_grep '^  todo 1$' "$T/out" "--list: the value of a claimed key"
    d c.kv --keys --json c.kv
    json_ok "--keys --json: claimed keys as objects" '[k for k in d["keys"] if isinstance(k, dict)][0]["claim"]["token"] == 1001 and "job:04" in d["keys"] and len([k for k in d["keys"] if isinstance(k, dict)]) == 4'
    d c.kv --list --json c.kv
    json_ok "--list --json: claim members" '{e["key"]: e for e in d["entries"]}["job:01"]["claim"]["owner"] == "vu-3" and {e["key"]: e for e in d["entries"]}["job:01"]["claim"]["live"] is True and 590000 < {e["key"]: e for e in d["entries"]}["job:01"]["claim"]["ms_left"] <= 600000 and {e["key"]: e for e in d["entries"]}["job:03"]["claim"]["live"] is False and {e["key"]: e for e in d["entries"]}["job:03"]["claim"]["ms_left"] < 0 and {e["key"]: e for e in d["entries"]}["job:03"]["claim"]["owner_hex"] == "76752dff" and {e["key"]: e for e in d["entries"]}["job:02"]["claim"]["owner"] is None and "claim" not in {e["key"]: e for e in d["entries"]}["job:04"]'
    d c.kv --check c.kv
    expect_rc 0 "--check of a store with claims"
    expect_grep '^checked: .*, 4 claims \(3 live\)$' "$T/out" "--check counts the claims"
    d c.kv --check --json c.kv
    json_ok "--check --json: claims" 'd["sound"] and d["checked"]["claims"] == 4 and d["checked"]["claims_live"] == 3'
    d c.kv --export jsonl c.kv
    expect_rc 0 "--export of a store with claims"
    if [ "$(wc -l <"$T/out")" = 11 ] && ! grep -q claim "$T/out" && grep -q '"job:01"' "$T/out"; then
        ok "--export: claimed keys exported as any other, no claims"
    else
        bad "--export with claims: $(head -3 "$T/out")"
    fi
    "$MK" claims u.kv 0 || { bad "build untracked claims store"; return; }
    d u.kv --check u.kv
    expect_rc 0 "--check of an untracked store with claims"
    d u.kv u.kv
    expect_grep '^claims: +3 live, 1 expired, last token 1007$' "$T/out" "summary of an untracked store with claims"
    # A store last used on another boot: every lease has ended.
    cp c.kv boot.kv && "$MK" corrupt boot.kv boot
    d boot.kv boot.kv
    expect_grep '^claims: +0 live, 4 expired, last token 1007$' "$T/out" "another boot: no live claim"
    d boot.kv --keys --prefix job:01 boot.kv
    expect_grep $'^job:01\t\\(claim token 1001, owner "vu-3", ended \\(a lease of an earlier boot\\)\\)$' "$T/out" "another boot: the lease shown as ended"
    d boot.kv --list --json --prefix job:01 boot.kv
    json_ok "another boot: JSON" 'd["entries"][0]["claim"]["live"] is False and d["entries"][0]["claim"]["ms_left"] is None and d["entries"][0]["claim"]["earlier_boot"] is True'
    d boot.kv --check boot.kv
    expect_rc 0 "another boot: the index may count leases that ended"
}

# ---- nonstore ------------------------------------------------------------------
nonstore() { # FILE DESCRIPTION PATTERN
    local f=$1 what=$2 pat=$3 mode
    for mode in "" --keys --list --check --stats "--get x" --json "--check --json"; do
        # shellcheck disable=SC2086
        d "$f" $mode "$f"
        if [ "$RC" != 2 ]; then bad "$what ($mode): exit $RC, wanted 2"; return; fi
        if ! grep -qE -- "$pat" "$T/err"; then bad "$what ($mode): message: $(cat "$T/err")"; return; fi
    done
    ok "$what: clear message, exit 2, unchanged, in every mode"
}

group_nonstore() {
    head -c 65536 /dev/urandom >random.bin
    nonstore random.bin "random bytes" 'not a shmkv store'
    python3 -c '
import struct, sys
page = bytearray(4096)
struct.pack_into("<QQII", page, 0, 0, 0, 0xED0CDAED, 2)
open(sys.argv[1], "wb").write(bytes(page) * 4)' bolt.db
    nonstore bolt.db "BoltDB file" 'not a shmkv store.*BoltDB'
    : >empty.kv
    nonstore empty.kv "empty file" 'empty file'
    mkdir adir
    nonstore adir "directory" 'is a directory'
    nonstore missing.kv "missing file" 'cannot open'
    printf 'hello world\n' >text.txt
    nonstore text.txt "text file" 'not a shmkv store'
    mkfifo fifo
    nonstore fifo "named pipe" 'not a regular file'
    nonstore /dev/null "character device" 'not a regular file'
    # A file with the signature but cut short: not usable, but a store.
    printf 'SHMKVdb\0garbage' >short.kv
    d short.kv short.kv
    expect_rc 2 "short file with the signature"
    expect_grep 'shorter than the 4096-byte header' "$T/err" "short file: message"
    d short.kv --check short.kv
    expect_rc 1 "--check on a short file with the signature"
    # A symbolic link to a store is followed (reading is harmless).
    "$MK" golden g.kv && ln -s g.kv link.kv
    d g.kv --check link.kv
    expect_rc 0 "--check through a symbolic link"
}

# ---- live ------------------------------------------------------------------------
group_live() {
    "$MK" many l.kv 500 1 8 || { bad "build live store"; return; }
    local sum_before
    sum_before=$(sha l.kv)
    rm -f l.kv.stop
    "$MK" writer l.kv 120 >w1.out &
    PIDS+=($!)
    "$MK" writer l.kv 120 >w2.out &
    PIDS+=($!)
    wait_ready w1.out && wait_ready w2.out || bad "writers did not start"
    local n=0 fails=0 end=$((SECONDS + 5))
    while [ $SECONDS -lt $end ]; do
        n=$((n + 1))
        "$DUMP" --check l.kv >"$T/out" 2>"$T/err"
        RC=$?
        [ "$RC" = 0 ] || { fails=$((fails + 1)); bad "live --check exit $RC"; sed 's/^/# /' "$T/out" | head; }
        "$DUMP" --keys l.kv >"$T/out" 2>"$T/err"
        RC=$?
        { [ "$RC" = 0 ] && LC_ALL=C sort -c -u "$T/out"; } || { fails=$((fails + 1)); bad "live --keys exit $RC or unsorted"; head -3 "$T/err"; }
        "$DUMP" --list --json --prefix w: l.kv >"$T/out" 2>"$T/err"
        RC=$?
        [ "$RC" = 0 ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/out" || { fails=$((fails + 1)); bad "live --list --json exit $RC"; }
        "$DUMP" --get k:00000003 l.kv >"$T/out" 2>"$T/err"
        RC=$?
        { [ "$RC" = 0 ] && grep -q '"i": 3' "$T/out"; } || { fails=$((fails + 1)); bad "live --get exit $RC"; }
        "$DUMP" --stats l.kv >/dev/null 2>"$T/err" || { fails=$((fails + 1)); bad "live --stats"; }
        "$DUMP" l.kv >"$T/out" 2>"$T/err"
        grep -q '^shutdown: *open' "$T/out" || { fails=$((fails + 1)); bad "live summary does not say open"; }
    done
    [ "$fails" = 0 ] && ok "$n rounds of --check/--keys/--list/--get/--stats/summary while 2 processes write"
    if [ "$(sha l.kv)" != "$sum_before" ]; then ok "the writers did change the store meanwhile"; else bad "the writers changed nothing"; fi
    touch l.kv.stop
    wait
    PIDS=()
    d l.kv --check --json l.kv
    json_ok "--check after the writers closed" 'd["sound"] and not d["live"]'
    d l.kv l.kv
    expect_grep '^shutdown: +clean' "$T/out" "clean after the writers closed"
}

# ---- export: --export jsonl|csv, byte for byte what k6 writes -------------------
group_export() {
    "$MK" export e.kv || { bad "build export store"; return; }
    d e.kv --export jsonl e.kv
    expect_rc 0 "--export jsonl"
    expect_out "$GOLD/export.jsonl" "--export jsonl is what exportJSONL() writes"
    d e.kv --export csv --prefix user: --columns name,age,note,missing e.kv
    expect_rc 0 "--export csv"
    expect_out "$GOLD/export.csv" "--export csv is what exportCSV() writes"
    d e.kv --export jsonl --prefix user: --limit 2 e.kv
    if [ "$RC" = 0 ] && [ "$(wc -l <"$T/out")" = 2 ] && head -1 "$T/out" | grep -q '"user:1"'; then
        ok "--export with --prefix and --limit"; else bad "--export --prefix --limit: $(cat "$T/out")"; fi
    # An entry that cannot be written: nothing is.
    "$MK" golden g.kv || { bad "build golden store"; return; }
    d g.kv --export jsonl g.kv
    expect_rc 1 "--export of a store with a non-UTF-8 key"
    if [ ! -s "$T/out" ] && grep -q 'not valid UTF-8' "$T/err"; then ok "nothing written, the key named"; else bad "partial export: $(head -c 200 "$T/out")"; fi
    d g.kv --export jsonl --prefix bad-json g.kv
    expect_rc 1 "--export of an invalid JSON value"
    d g.kv --export csv --columns name --prefix user: g.kv
    expect_rc 1 "--export csv of text values"
    for args in "--export xml" "--export csv" "--export jsonl --columns a" "--export csv --columns key" \
        "--export csv --columns a,a" "--export csv --columns a,,b" "--export jsonl --json" "--export jsonl --keys"; do
        d e.kv $args e.kv
        expect_rc 2 "usage: $args"
    done
    # A backup is a store: shmkv-dump reads it as one.
    "$MK" backup e.kv b.kv 0 >/dev/null || { bad "backup"; return; }
    d b.kv --check b.kv
    expect_rc 0 "--check of a backup"
    d b.kv --export jsonl b.kv
    expect_out "$GOLD/export.jsonl" "a backup exports the same entries"
    d b.kv b.kv
    expect_grep '^shutdown: +clean' "$T/out" "a consistent backup reads as cleanly closed"
    "$MK" backup e.kv b2.kv 1 >/dev/null || { bad "best-effort backup"; return; }
    d b2.kv --check b2.kv
    expect_rc 0 "--check of a best-effort backup"
    cp e.kv c.kv
    d c.kv --check c.kv
    expect_rc 0 "--check of a closed store's copy"

    # shmkv-load: what --export wrote loads back the same.
    [ -n "$LOAD" ] || { bad "no shmkv-load given"; return; }
    "$LOAD" r.kv "$GOLD/export.jsonl" 2>"$T/err"
    RC=$?
    expect_rc 0 "shmkv-load of an export"
    d r.kv --export jsonl r.kv
    expect_out "$GOLD/export.jsonl" "loaded back, it exports the same"
    "$LOAD" --string --batch 2 r2.kv "$GOLD/export.jsonl" 2>"$T/err" && ok "--string --batch 2" || bad "--string --batch 2"
    d r2.kv --get text r2.kv
    if [ "$(cat "$T/out")" = 'say "hi", \ <tag> & done' ]; then ok "--string stores a string as its text"; else bad "--string: $(cat "$T/out")"; fi
    # A bad line: its number, and nothing written (no store made, an
    # existing one unchanged).
    local before
    before=$(sha e.kv)
    n=0
    for content in '{"key":"a","value":1}\n{"key":"b","value":}\n' '{"key":"a","value":1}\n\n{"key":"b","value":2}\n' \
        '{"key":"a","value":1}\n{"value":2}\n' '{"key":"a","value":1}\n{"key":7,"value":2}\n' \
        '{"key":"a","value":1}\n{"key":"","value":2}\n' '{"key":"a","value":1}\n{"key":"b"}\n' \
        '{"key":"a","value":1}\n[1,2]\n' '{"key":"a","value":1}\n{"key":"\xff","value":1}\n'; do
        n=$((n + 1))
        printf "$content" >bad$n.jsonl
        "$LOAD" new$n.kv bad$n.jsonl 2>"$T/err"
        RC=$?
        if [ "$RC" = 1 ] && [ ! -e new$n.kv ] && grep -q "bad$n.jsonl:2: .*nothing was written" "$T/err"; then
            ok "shmkv-load refuses bad file $n at line 2: $(cut -d: -f4- "$T/err" | head -c 60)"
        else
            bad "shmkv-load bad file $n: exit $RC, $(cat "$T/err")"
        fi
        "$LOAD" e.kv bad$n.jsonl 2>/dev/null
        [ "$(sha e.kv)" = "$before" ] || bad "shmkv-load changed a store for bad file $n"
    done
    "$LOAD" new.kv missing.jsonl 2>"$T/err"
    RC=$?
    expect_rc 2 "shmkv-load of a missing file"
}

case $GROUP in
golden | json | check | corrupt | claims | nonstore | live | export) "group_$GROUP" ;;
all) for g in golden json check corrupt claims nonstore live export; do "group_$g"; done ;;
*) echo "unknown group $GROUP" >&2; exit 2 ;;
esac

echo "# $GROUP: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
