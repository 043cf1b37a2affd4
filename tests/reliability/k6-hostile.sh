#!/usr/bin/env bash
# k6-hostile.sh - hostile input from k6 scripts (issue #5, part 3).
#
# Runs:
#  - tests/reliability/k6/hostile.js on the memory and the disk backend, with
#    trackKeys on and off: non-string/empty/over-long keys, values json
#    cannot store (NaN, Infinity, functions, symbols, cycles, nested), a
#    value over 64 MiB, wrong and unknown openKv options. Every case must
#    get its typed error, and the store's content must be unchanged (list()
#    and size() equal the known entries written before the cases).
#  - tests/reliability/k6/hostile-open.js once per bad store path, prepared
#    here in a temp dir:
#      dir         a directory;
#      unreadable  an existing owner-only file opened by another user (as
#                  root: run as nobody with setpriv or runuser, k6 and the
#                  scripts copied where nobody can read them);
#      ro          a path on a read-only tmpfs (unshare -m, root only);
#      bolt        a 16 KiB BoltDB-like file (uint32 0xED0CDAED, little
#                  endian, at offset 16), which must be byte-identical after
#                  (sha256).
#    The disk stores are then checked with shmkv-dump --check ($SHMKV_DUMP,
#    or the tool in a build-*/ directory; skipped with a note if absent),
#    and must not have grown past 8 MiB (the 64 MiB value was refused).
#    The fixture is checked here after the run (still a directory / same
#    sha256 and mode / same sha256); that check is part of the run's result.
# Each k6 run uses --quiet and the scripts set thresholds
# { checks: ["rate==1.0"] }, so any failed check makes k6 exit non-zero.
#
# The counts in the last line, "k6-hostile: N passed, N failed", are k6 runs
# (each with its fixture check). A case that cannot be set up here (ro
# without root, unreadable without a way to drop privileges) is printed as
# SKIP and counted in neither. Exit status 0 only when nothing failed.
# K6=/path/to/k6 skips the build; KV_HOSTILE_KEEP=1 keeps the logs.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/reliability/k6"

source "$ROOT/tests/lib/k6env.sh"
k6env_k6 k6-hostile
# shmkv-dump --check on the disk stores afterwards, when the tool is built.
k6env_dump

RUN="hostile-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/k6-hostile.XXXXXX")
cleanup() {
    if [[ "${KV_HOSTILE_KEEP:-0}" == 1 ]]; then
        echo "k6-hostile: logs kept in $WORK" >&2
    else
        chmod -R u+rwX "$WORK" 2>/dev/null
        rm -rf "$WORK"
    fi
    rm -f /dev/shm/shmkv."$RUN"-* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
failures=()

K6OPTS=(run --quiet --no-usage-report --address= --no-color --summary-mode=disabled)

# result NAME STATUS LOG
result() {
    local name=$1 status=$2 log=$3
    if [[ "$status" == 0 ]]; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL $name (exit $status)"
        if grep -qE 'FAILED|level=error|Error' "$log"; then
            grep -E 'FAILED|level=error|Error' "$log" | head -n 20 | sed 's/^/    /'
        else
            tail -n 20 "$log" | sed 's/^/    /'
        fi
    fi
}

# ---------------------------------------------------------------------
# Keys, values and options, on both backends.
for backend in memory disk; do
    for track in true false; do
        name="hostile/$backend/trackKeys=$track"
        id="$RUN-$backend-$track"
        log="$WORK/$id.log"
        "$K6" "${K6OPTS[@]}" -e KV_BACKEND="$backend" -e KV_TRACK="$track" \
            -e KV_PATH="$WORK/$id.kv" -e KV_NAME="$id" "$HERE/hostile.js" >"$log" 2>&1
        st=$?
        if [[ $st == 0 && $backend == disk ]]; then
            # A rejected 64 MiB value must not have grown the file.
            sz=$(stat -c %s "$WORK/$id.kv")
            if ((sz > 8 * 1024 * 1024)); then
                echo "FAILED: the store file is $sz bytes after the rejected writes" >>"$log"
                st=1
            fi
            if [[ -x "$DUMP" ]]; then
                if ! "$DUMP" --check "$WORK/$id.kv" >>"$log" 2>&1; then
                    echo "FAILED: shmkv-dump --check does not find the store sound" >>"$log"
                    st=1
                fi
            fi
        fi
        result "$name" $st "$log"
    done
done
[[ -x "$DUMP" ]] || echo "note: shmkv-dump not found (set SHMKV_DUMP): disk stores not structure-checked"

# ---------------------------------------------------------------------
# Bad store paths.

# open_case CASE PATH [prefix command...]: run hostile-open.js on PATH.
# Output to $WORK/open-CASE.log; status is k6's.
open_case() {
    local c=$1 p=$2
    shift 2
    "$@" "$K6" "${K6OPTS[@]}" -e KV_CASE="$c" -e KV_BAD_PATH="$p" -e KV_NAME="$RUN-open-$c" \
        "$HERE/hostile-open.js" >"$WORK/open-$c.log" 2>&1
}

# A directory.
mkdir "$WORK/dir"
open_case dir "$WORK/dir"
st=$?
if [[ ! -d "$WORK/dir" || -n "$(ls -A "$WORK/dir")" ]]; then
    echo "FAILED: the directory was changed" >>"$WORK/open-dir.log"
    st=1
fi
result "open/dir" $st "$WORK/open-dir.log"

# An existing file the user may not read.
unreadable="$WORK/unreadable.kv"
printf 'not yours\n' >"$unreadable"
chmod 600 "$unreadable"
sum_before=$(sha256sum <"$unreadable")
if [[ $EUID == 0 ]]; then
    drop=()
    if command -v setpriv >/dev/null 2>&1; then
        drop=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    elif command -v runuser >/dev/null 2>&1; then
        drop=(runuser -u nobody --)
    fi
    if ((${#drop[@]} == 0)); then
        echo "SKIP open/unreadable (root, and neither setpriv nor runuser found)"
    else
        # nobody must reach k6 and the scripts: copy them into the work dir
        # (same relative layout, for the import of tests/k6/lib/t.js).
        chmod 755 "$WORK"
        mkdir -p "$WORK/nb/bin" "$WORK/nb/tests/reliability/k6" "$WORK/nb/tests/k6/lib"
        cp "$K6" "$WORK/nb/bin/k6"
        cp "$HERE/hostile-open.js" "$WORK/nb/tests/reliability/k6/"
        cp "$ROOT/tests/k6/lib/t.js" "$WORK/nb/tests/k6/lib/"
        chmod -R a+rX "$WORK/nb"
        (cd "$WORK/nb" && HOME="$WORK/nb" K6="$WORK/nb/bin/k6" HERE="$WORK/nb/tests/reliability/k6" \
            open_case unreadable "$unreadable" "${drop[@]}")
        st=$?
        if [[ "$(sha256sum <"$unreadable")" != "$sum_before" || "$(stat -c %a "$unreadable")" != 600 ]]; then
            echo "FAILED: the unreadable file was changed" >>"$WORK/open-unreadable.log"
            st=1
        fi
        result "open/unreadable (as nobody)" $st "$WORK/open-unreadable.log"
    fi
else
    chmod 000 "$unreadable"
    open_case unreadable "$unreadable"
    st=$?
    chmod 600 "$unreadable"
    if [[ "$(sha256sum <"$unreadable")" != "$sum_before" ]]; then
        echo "FAILED: the unreadable file was changed" >>"$WORK/open-unreadable.log"
        st=1
    fi
    result "open/unreadable" $st "$WORK/open-unreadable.log"
fi

# A path on a read-only filesystem (a private mount namespace, so the
# mount disappears with the process).
mkdir "$WORK/ro"
if [[ $EUID == 0 ]] && unshare -m sh -c "mount -t tmpfs -o size=1m,ro tmpfs '$WORK/ro'" 2>/dev/null; then
    export K6 HERE RUN WORK
    export -f open_case
    unshare -m bash -c 'K6OPTS=(run --quiet --no-usage-report --address= --no-color --summary-mode=disabled)
        mount -t tmpfs -o size=1m,ro tmpfs "$WORK/ro" || exit 97
        touch "$WORK/ro/probe" 2>/dev/null && exit 98
        open_case ro "$WORK/ro/store.kv"' >"$WORK/ro-setup.log" 2>&1
    st=$?
    case $st in
        97) echo "FAILED: could not mount the read-only tmpfs" >>"$WORK/open-ro.log" ;;
        98) echo "FAILED: the tmpfs is writable" >>"$WORK/open-ro.log" ;;
    esac
    cat "$WORK/ro-setup.log" >>"$WORK/open-ro.log"
    if [[ -n "$(ls -A "$WORK/ro")" ]]; then
        echo "FAILED: something was created under the mount point" >>"$WORK/open-ro.log"
        st=1
    fi
    result "open/read-only-fs" $st "$WORK/open-ro.log"
else
    echo "SKIP open/read-only-fs (needs root and unshare -m)"
fi

# A process stopped while it holds the only segment lock: every call
# rejects with LockTimeoutError after lockTimeout; after SIGCONT the held
# write lands and the store works.
if [[ -x "$MKSTORE" ]]; then
    slog="$WORK/lock-stopped.log"
    "$MKSTORE" stop "$WORK/stopped.kv" >>"$slog" 2>&1 &
    holder=$!
    state=""
    for _ in $(seq 100); do
        state=$(awk '{print $3}' "/proc/$holder/stat" 2>/dev/null)
        [[ "$state" == T ]] && break
        sleep 0.05
    done
    if [[ "$state" != T ]]; then
        echo "FAILED: the holder did not stop inside its set (state '$state')" >>"$slog"
        st=1
    else
        timeout 60 "$K6" "${K6OPTS[@]}" -e KV_PATH="$WORK/stopped.kv" -e PHASE=stopped \
            "$HERE/stopped.js" >>"$slog" 2>&1
        st=$?
        grep -q 'stopped: ok' "$slog" || st=1
    fi
    kill -CONT "$holder" 2>/dev/null
    timeout 30 tail --pid="$holder" -f /dev/null
    wait "$holder" || { echo "FAILED: the holder exited with $? after SIGCONT" >>"$slog"; st=1; }
    if [[ $st == 0 ]]; then
        timeout 60 "$K6" "${K6OPTS[@]}" -e KV_PATH="$WORK/stopped.kv" -e PHASE=resumed \
            "$HERE/stopped.js" >>"$slog" 2>&1 || st=1
        grep -q 'resumed: ok' "$slog" || st=1
    fi
    result "lock/stopped-holder" $st "$slog"
elif [[ -n "$DUMP" ]]; then
    # The build is there, so the helper must be: a test that silently
    # stops running is a failure (it did once, when the helper moved).
    slog="$WORK/lock-stopped.log"
    echo "FAILED: dump-mkstore not found next to $DUMP (set SHMKV_MKSTORE)" >"$slog"
    result "lock/stopped-holder" 1 "$slog"
else
    echo "SKIP lock/stopped-holder (no build with dump-mkstore)"
fi

# A BoltDB-like file: refused, left byte-identical.
bolt="$WORK/bolt.kv"
head -c 16384 /dev/urandom >"$bolt"
printf '\xed\xda\x0c\xed' | dd of="$bolt" bs=1 seek=16 conv=notrunc status=none
sum_before=$(sha256sum <"$bolt")
open_case bolt "$bolt"
st=$?
if [[ "$(od -An -tx4 -j16 -N4 --endian=little "$bolt" | tr -d ' ')" != ed0cdaed ]]; then
    echo "FAILED: the fixture does not have the BoltDB magic" >>"$WORK/open-bolt.log"
    st=1
fi
if [[ "$(sha256sum <"$bolt")" != "$sum_before" || $(stat -c %s "$bolt") != 16384 ]]; then
    echo "FAILED: the BoltDB-like file was changed" >>"$WORK/open-bolt.log"
    st=1
fi
result "open/boltdb-file" $st "$WORK/open-bolt.log"

echo
if ((failed > 0)); then
    echo "failed: ${failures[*]}"
fi
echo "k6-hostile: $passed passed, $failed failed"
((failed == 0))
