#!/usr/bin/env bash
# run.sh - the k6 end-to-end tests of k6/x/kv.
#
# Builds (or reuses) the k6 binary with scripts/build-k6.sh, then runs:
#  - every tests/k6/*.js script on the memory and the disk backend, with
#    trackKeys on and off (the script gets KV_BACKEND, KV_PATH, KV_NAME and
#    KV_TRACK in its environment);
#  - tests/k6/summary/metrics.js (import, export, validate, stats, metrics)
#    on both backends, checking k6's --summary-export output;
#  - the multi-process scenarios (tests/k6/multi/): three processes running
#    execution segments of one test, three processes on one counter, one
#    producer and two consumer processes, writer processes with a reader
#    process on a memory store, and a writer SIGKILLed mid-write next to one
#    that runs to the end;
#  - every example in examples/, including examples/multiprocess/run.sh.
# A script fails when k6 exits non-zero: each one sets
# thresholds { checks: ["rate==1.0"] }, so any failed check fails it.
#
# The last line printed is "k6-e2e: N passed, N failed"; the exit status is
# 0 only when nothing failed. Store files and /dev/shm objects created here
# are removed on exit. Set K6=/path/to/k6 to skip the build, and
# KV_E2E_ONLY=<regex> to run only the cases whose name matches, and
# KV_E2E_KEEP=1 to keep the logs.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/k6"

source "$ROOT/tests/lib/k6env.sh"
k6env_k6 k6-e2e

RUN="e2e-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/k6-e2e.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [[ "${KV_E2E_KEEP:-0}" == 1 ]]; then
        echo "k6-e2e: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    rm -f /dev/shm/shmkv."$RUN"-* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
failures=()

selected() {
    [[ -z "${KV_E2E_ONLY:-}" ]] || [[ "$1" =~ $KV_E2E_ONLY ]]
}

# k6run LOG SCRIPT [k6 args...]: one k6 process, output to LOG.
k6run() {
    local log=$1 script=$2
    shift 2
    "$K6" run --quiet --no-usage-report --address= --no-color --summary-mode=disabled \
        "$@" "$script" >"$log" 2>&1
}

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
        grep -E 'FAILED|level=error|level=warning|Error|error' "$log" | head -n 20 | sed 's/^/    /'
        if ! grep -qE 'FAILED|level=error|Error|error' "$log"; then
            tail -n 20 "$log" | sed 's/^/    /'
        fi
    fi
}

# ---------------------------------------------------------------------
# Single-process scripts, on each backend, with trackKeys on and off.

CONFIGS=("memory true" "memory false" "disk true" "disk false")
for script in "$HERE"/*.js; do
    base=$(basename "$script" .js)
    for cfg in "${CONFIGS[@]}"; do
        read -r backend track <<<"$cfg"
        name="$base/$backend/trackKeys=$track"
        selected "$name" || continue
        id="$RUN-$base-$backend-$track"
        log="$WORK/$id.log"
        k6run "$log" "$script" \
            -e KV_BACKEND="$backend" -e KV_TRACK="$track" \
            -e KV_PATH="$WORK/$id.kv" -e KV_NAME="$id"
        result "$name" $? "$log"
    done
done

# trackKeys left out: a joiner takes whatever the store has.
name="basic/memory/trackKeys=unset"
if selected "$name"; then
    id="$RUN-basic-unset"
    k6run "$WORK/$id.log" "$HERE/basic.js" -e KV_BACKEND=memory -e KV_NAME="$id"
    result "$name" $? "$WORK/$id.log"
fi

# Import/export/validate/stats with metrics on: the operation metrics and
# the state gauges must be in k6's --summary-export output.
for backend in memory disk; do
    name="summary/metrics/$backend"
    selected "$name" || continue
    id="$RUN-summary-$backend"
    mkdir -p "$WORK/$id.out"
    "$K6" run --quiet --no-usage-report --address= --no-color \
        --summary-export="$WORK/$id.json" \
        -e KV_BACKEND="$backend" -e KV_PATH="$WORK/$id.kv" -e KV_NAME="$id" \
        -e KV_DIR="$HERE/summary" -e KV_OUT="$WORK/$id.out" \
        "$HERE/summary/metrics.js" >"$WORK/$id.log" 2>&1
    st=$?
    if [[ $st == 0 ]]; then
        python3 - "$WORK/$id.json" "$backend" >>"$WORK/$id.log" 2>&1 <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))["metrics"]
want = ["xk6_kv_operations_total", "xk6_kv_operation_duration", "xk6_kv_operation_failed",
        "xk6_kv_errors_total", "xk6_kv_keys",
        "xk6_kv_index_keys", "xk6_kv_index_consistent", "xk6_kv_claims_live",
        "xk6_kv_used_bytes", "xk6_kv_processes", "xk6_kv_async_in_flight",
        "xk6_kv_operations_total{op:import_csv}", "xk6_kv_errors_total{error_type:SnapshotReadError}"]
if sys.argv[2] == "disk":
    want.append("xk6_kv_disk_size_bytes")
missing = [m for m in want if m not in metrics]
if missing:
    print("FAILED: not in the summary export:", ", ".join(missing))
    sys.exit(1)
if metrics["xk6_kv_keys"].get("value") != 4:
    print("FAILED: xk6_kv_keys is", metrics["xk6_kv_keys"])
    sys.exit(1)
if not metrics["xk6_kv_operations_total"].get("count", 0) >= 10:
    print("FAILED: xk6_kv_operations_total is", metrics["xk6_kv_operations_total"])
    sys.exit(1)
PY
        st=$?
    fi
    result "$name" $st "$WORK/$id.log"
done

# ---------------------------------------------------------------------
# Multi-process scenarios.

# wait_all PID... : wait for every pid; status is the first non-zero one.
wait_all() {
    local st=0 s
    for p in "$@"; do
        wait "$p"
        s=$?
        [[ $st == 0 ]] && st=$s
    done
    PIDS=()
    return $st
}

for track in true false; do
    # Three processes, one execution segment each, write one disk store.
    name="multi/segments/disk/trackKeys=$track"
    if selected "$name"; then
        id="$RUN-seg-$track"
        env=(-e KV_BACKEND=disk -e KV_TRACK="$track" -e KV_PATH="$WORK/$id.kv" -e KV_N=600)
        seq="0,1/3,2/3,1"
        pids=()
        i=0
        for seg in 0:1/3 1/3:2/3 2/3:1; do
            i=$((i + 1))
            k6run "$WORK/$id.w$i.log" "$HERE/multi/segment-writer.js" "${env[@]}" -e KV_SEGMENT="$seg" \
                --execution-segment "$seg" --execution-segment-sequence "$seq" &
            pids+=($!)
        done
        PIDS=("${pids[@]}")
        wait_all "${pids[@]}"
        st=$?
        cat "$WORK/$id".w*.log >"$WORK/$id.log"
        if [[ $st == 0 ]]; then
            k6run "$WORK/$id.v.log" "$HERE/multi/segment-verify.js" "${env[@]}"
            st=$?
            cat "$WORK/$id.v.log" >>"$WORK/$id.log"
        fi
        result "$name" $st "$WORK/$id.log"
    fi

    # Three processes increment one counter.
    name="multi/counter/disk/trackKeys=$track"
    if selected "$name"; then
        id="$RUN-ctr-$track"
        env=(-e KV_BACKEND=disk -e KV_TRACK="$track" -e KV_PATH="$WORK/$id.kv" -e KV_N=1000 -e KV_PROCS=3)
        pids=()
        for p in 1 2 3; do
            k6run "$WORK/$id.c$p.log" "$HERE/multi/counter.js" "${env[@]}" -e KV_PROC=$p &
            pids+=($!)
        done
        PIDS=("${pids[@]}")
        wait_all "${pids[@]}"
        st=$?
        cat "$WORK/$id".c*.log >"$WORK/$id.log"
        if [[ $st == 0 ]]; then
            k6run "$WORK/$id.v.log" "$HERE/multi/counter-verify.js" "${env[@]}"
            st=$?
            cat "$WORK/$id.v.log" >>"$WORK/$id.log"
        fi
        result "$name" $st "$WORK/$id.log"
    fi

    # Two processes write a ten-key group in batches while a third reads it:
    # never part of a batch.
    name="multi/batches/disk/trackKeys=$track"
    if selected "$name"; then
        id="$RUN-batch-$track"
        env=(-e KV_BACKEND=disk -e KV_TRACK="$track" -e KV_PATH="$WORK/$id.kv" -e KV_N=600)
        pids=()
        for p in 1 2; do
            k6run "$WORK/$id.w$p.log" "$HERE/multi/batch-writer.js" "${env[@]}" -e KV_PROC=$p &
            pids+=($!)
        done
        k6run "$WORK/$id.r.log" "$HERE/multi/batch-reader.js" "${env[@]}" &
        pids+=($!)
        PIDS=("${pids[@]}")
        wait_all "${pids[@]}"
        st=$?
        cat "$WORK/$id".[wr]*.log >"$WORK/$id.log"
        result "$name" $st "$WORK/$id.log"
    fi

    # One producer and two consumer processes at once; each token is
    # taken exactly once.
    name="multi/producer-consumers/disk/trackKeys=$track"
    if selected "$name"; then
        id="$RUN-pc-$track"
        env=(-e KV_BACKEND=disk -e KV_TRACK="$track" -e KV_PATH="$WORK/$id.kv" -e KV_N=1500)
        pids=()
        for p in 1 2; do
            k6run "$WORK/$id.c$p.log" "$HERE/multi/consumer.js" "${env[@]}" -e KV_PROC=$p &
            pids+=($!)
        done
        k6run "$WORK/$id.p.log" "$HERE/multi/producer.js" "${env[@]}" &
        pids+=($!)
        PIDS=("${pids[@]}")
        wait_all "${pids[@]}"
        st=$?
        cat "$WORK/$id".[cp]*.log >"$WORK/$id.log"
        if [[ $st == 0 ]]; then
            k6run "$WORK/$id.v.log" "$HERE/multi/consume-verify.js" "${env[@]}"
            st=$?
            cat "$WORK/$id.v.log" >>"$WORK/$id.log"
        fi
        result "$name" $st "$WORK/$id.log"
    fi

    # A memory store: a reader process sees what two writer processes,
    # running at the same time, write.
    name="multi/memory-reader-writers/trackKeys=$track"
    if selected "$name"; then
        id="$RUN-mem-$track"
        env=(-e KV_BACKEND=memory -e KV_TRACK="$track" -e KV_NAME="$id" -e KV_N=500 -e KV_PROCS=2)
        pids=()
        k6run "$WORK/$id.r.log" "$HERE/multi/mem-reader.js" "${env[@]}" &
        pids+=($!)
        for p in 1 2; do
            k6run "$WORK/$id.w$p.log" "$HERE/multi/mem-writer.js" "${env[@]}" -e KV_PROC=$p &
            pids+=($!)
        done
        PIDS=("${pids[@]}")
        wait_all "${pids[@]}"
        st=$?
        cat "$WORK/$id".[rw]*.log >"$WORK/$id.log"
        if [[ $st == 0 && -e /dev/shm/shmkv.$id ]]; then
            echo "FAILED: /dev/shm/shmkv.$id is still there after its last process exited" >>"$WORK/$id.log"
            st=1
        fi
        result "$name" $st "$WORK/$id.log"
    fi

    # SIGKILL a writer in the middle of its writes while another writer
    # runs to the end: nothing that resolved is lost, the store stays
    # consistent and usable.
    name="multi/sigkill/disk/trackKeys=$track"
    if selected "$name"; then
        id="$RUN-kill-$track"
        env=(-e KV_BACKEND=disk -e KV_TRACK="$track" -e KV_PATH="$WORK/$id.kv")
        k6opts=(--quiet --no-usage-report --address= --no-color --summary-mode=disabled)
        # Started directly (not through k6run) so that $! is k6 itself.
        "$K6" run "${k6opts[@]}" "${env[@]}" -e KV_PROC=killed \
            "$HERE/multi/crash-writer.js" >"$WORK/$id.k.log" 2>&1 &
        victim=$!
        "$K6" run "${k6opts[@]}" "${env[@]}" -e KV_PROC=survivor -e KV_N=3000 \
            "$HERE/multi/crash-writer.js" >"$WORK/$id.s.log" 2>&1 &
        survivor=$!
        PIDS=("$victim" "$survivor")
        last=0
        for ((t = 0; t < 1200; t++)); do
            last=$(grep -o 'durable killed [0-9]*' "$WORK/$id.k.log" | tail -n1 | cut -d' ' -f3)
            [[ ${last:-0} -ge 1999 ]] && break
            kill -0 "$victim" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$victim" 2>/dev/null
        { wait "$victim"; } 2>/dev/null
        vst=$?
        last=$(grep -o 'durable killed [0-9]*' "$WORK/$id.k.log" | tail -n1 | cut -d' ' -f3)
        wait "$survivor"
        st=$?
        PIDS=()
        cat "$WORK/$id.k.log" "$WORK/$id.s.log" >"$WORK/$id.log"
        if [[ $vst != 137 ]]; then
            echo "FAILED: the writer to kill was not killed (exit $vst)" >>"$WORK/$id.log"
            st=1
        fi
        if [[ $st == 0 ]]; then
            k6run "$WORK/$id.v.log" "$HERE/multi/crash-verify.js" "${env[@]}" -e KV_LAST="${last:-0}" -e KV_N=3000
            st=$?
            cat "$WORK/$id.v.log" >>"$WORK/$id.log"
        fi
        result "$name" $st "$WORK/$id.log"
    fi
done

# ---------------------------------------------------------------------
# Examples: each must run to completion without an error. Disk examples use
# ./.k6.kv, so each runs in a directory of its own, with the examples' data
# files copied in.

for ex in "$ROOT"/examples/*.js "$ROOT"/examples/*.ts; do
    [[ -e "$ex" ]] || continue
    base=$(basename "${ex%.*}")
    name="examples/$base"
    selected "$name" || continue
    dir="$WORK/ex-$base"
    mkdir -p "$dir"
    # Data files of the examples (read from the directory k6 runs in).
    cp "$ROOT"/examples/*.csv "$dir"/ 2>/dev/null
    (cd "$dir" && k6run "$dir.log" "$ex" -e KV_NAME="$RUN-ex-$base")
    st=$?
    if [[ $st == 0 ]] && grep -qE 'level=error|Uncaught' "$dir.log"; then
        st=1
    fi
    result "$name" $st "$dir.log"
done

name="examples/multiprocess"
if selected "$name" && [[ -f "$ROOT/examples/multiprocess/run.sh" ]]; then
    KV_DEMO_NAME="$RUN-demo" bash "$ROOT/examples/multiprocess/run.sh" >"$WORK/demo.log" 2>&1
    result "$name" $? "$WORK/demo.log"
fi

echo
if ((failed > 0)); then
    echo "failed: ${failures[*]}"
fi
echo "k6-e2e: $passed passed, $failed failed"
((failed == 0))
