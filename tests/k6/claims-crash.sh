#!/usr/bin/env bash
# claims-crash.sh [SECONDS] - exactly-once with claims, k6 consumers SIGKILLed.
#
# A disk store (trackKeys on) gets KV_N tokens (claims/seed.js, default
# 3000). Three consumer slots run claims/consumer.js (4 VUs each: claim a
# random token with a lease, work, release one in ten, otherwise record the
# work under done:<token> and complete the claim). For SECONDS (default 10)
# a random slot is SIGKILLed every 0.3 to 1 s and a new incarnation takes
# it; killed incarnations die holding leases, which run out after KV_TTL ms
# (default 1500) and their tokens are taken again. Then the last
# incarnations run until the pool is empty and must end by themselves.
# Checks:
#   - every consumer incarnation was ended by our SIGKILL or ended cleanly
#     (status 0: its checks passed) once the pool was empty;
#   - claims/verify.js: no token left, no live claim, the work of every
#     token recorded once (setIfAbsent), stale tokens of killed
#     incarnations refused against a fresh claim (complete, release, renew);
#   - from the consumers' logs (G granted, I completing, A completed) and
#     the done records: no token was completed twice (two acknowledged
#     completeClaim true), every token acknowledged as completed once,
#     except those whose completion a killed incarnation did not get to
#     acknowledge (their done record is that incarnation's, its last step on
#     the token was "I"); every done record was written under a claim
#     granted with that token;
#   - shmkv-dump --check finds the store sound (when a shmkv-dump is found).
# The last line is "k6-claims-crash: N passed, N failed"; exit status 0
# only when nothing failed. K6=/path/to/k6 skips building k6; KV_E2E_KEEP=1
# keeps the logs. KV_CLAIMS_SELFTEST=1 tests the accounting instead: a
# made-up second completion of one token is added to a log, and the
# accounting step passes only if it reports the token completed twice.
set -uo pipefail

secs=${1:-10}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/k6/claims"
N=${KV_N:-3000}
TTL=${KV_TTL:-1500}
WORK_MS=${KV_WORK_MS:-30}

passed=0
failed=0
result() { # result OK|FAIL what
    if [[ "$1" == OK ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    echo "k6-claims-crash: $1: $2"
}

source "$ROOT/tests/lib/k6env.sh"
k6env_k6 k6-claims-crash
k6env_dump

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-k6claims.XXXXXX")
STORE="$WORK/store.kv"
declare -a PID INC
cleanup() {
    for p in "${PID[@]:-}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [[ "${KV_E2E_KEEP:-0}" == 1 ]]; then echo "k6-claims-crash: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

k6flags=(run --quiet --no-usage-report --summary-mode=disabled --address "" -e "KV_PATH=$STORE"
    -e "KV_N=$N" -e "KV_TTL=$TTL" -e "KV_WORK_MS=$WORK_MS")

if ! "$K6" "${k6flags[@]}" "$HERE/seed.js" >"$WORK/seed.log" 2>&1; then
    cat "$WORK/seed.log"
    echo "k6-claims-crash: 0 passed, 1 failed"
    exit 1
fi

ninc=0
start_consumer() { # slot
    ninc=$((ninc + 1))
    INC[$1]="$1.$ninc"
    "$K6" "${k6flags[@]}" -e "KV_INC=${INC[$1]}" --console-output="$WORK/log.${INC[$1]}" \
        "$HERE/consumer.js" >"$WORK/out.${INC[$1]}" 2>&1 &
    PID[$1]=$!
}

killed=()
selfdied=0
for s in 1 2 3; do start_consumer "$s"; done
end=$((SECONDS + secs))
while ((SECONDS < end)); do
    sleep "0.$((3 + RANDOM % 7))$((RANDOM % 10))"
    s=$((1 + RANDOM % 3))
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then
        # It ended by itself: the pool is empty, or it failed.
        wait "${PID[$s]}"
        st=$?
        if [[ $st != 0 ]]; then
            echo "k6-claims-crash: consumer ${INC[$s]} failed (status $st):" >&2
            tail -n 5 "$WORK/out.${INC[$s]}" >&2
            selfdied=$((selfdied + 1))
        fi
        PID[$s]=""
        break
    fi
    kill -9 "${PID[$s]}"
    wait "${PID[$s]}" 2>/dev/null
    killed+=("${INC[$s]}")
    start_consumer "$s"
done
# The last incarnations drain the pool (waiting out the dead ones' leases).
for s in 1 2 3; do
    [[ -n "${PID[$s]}" ]] || continue
    wait "${PID[$s]}"
    st=$?
    if [[ $st != 0 ]]; then
        echo "k6-claims-crash: consumer ${INC[$s]} failed (status $st):" >&2
        grep -E 'FAILED|level=error' "$WORK/out.${INC[$s]}" "$WORK/log.${INC[$s]}" | head -n 10 >&2
        selfdied=$((selfdied + 1))
    fi
    PID[$s]=""
done

if ((selfdied == 0)); then
    result OK "${#killed[@]} consumer incarnations SIGKILLed, the others ($((ninc - ${#killed[@]}))) ended cleanly"
else
    result FAIL "$selfdied consumer incarnation(s) failed"
fi
if ((${#killed[@]} == 0)); then
    result FAIL "no consumer was killed (the pool emptied before the first kill: raise KV_N)"
fi

# Stale tokens to try: the last claim each killed incarnation was granted
# on a key, when it did not acknowledge completing it (at most 40).
printf '%s\n' "${killed[@]}" >"$WORK/killed"
python3 - "$WORK" <<'PY' >"$WORK/stale.json"
import glob, json, os, re, sys
work = sys.argv[1]
killed = set(open(os.path.join(work, "killed")).read().split())
pairs = []
for inc in sorted(killed):
    held = {}
    path = os.path.join(work, "log." + inc)
    text = open(path).read() if os.path.exists(path) else ""  # killed before it logged
    text = text[:text.rfind("\n") + 1]  # a kill can cut the last line short
    for m in re.finditer(r"\b([GIA]) (token:\d+) (\d+)(?: (true|false))?", text):
        kind, key, tok = m.group(1), m.group(2), int(m.group(3))
        if kind == "G":
            held[key] = tok
        elif kind == "A":
            held.pop(key, None)
    pairs += [[k, t] for k, t in held.items()]
json.dump(pairs[:40], sys.stdout)
PY

"$K6" "${k6flags[@]}" -e "KV_STALE=$WORK/stale.json" --console-output="$WORK/verify.log" \
    "$HERE/verify.js" >"$WORK/verify.out" 2>&1
vst=$?
if ((vst == 0)); then
    result OK "verifier: pool empty, no live claim, every token's work recorded once, $(grep -oE 'fencing: [0-9]+ stale tokens refused' "$WORK/verify.log")"
else
    result FAIL "verifier (k6 exit $vst)"
    grep -E 'FAILED' "$WORK/verify.log" "$WORK/verify.out" | head -n 10
fi

# The logs against the done records.
selftest=${KV_CLAIMS_SELFTEST:-0}
if [[ "$selftest" == 1 ]]; then
    echo 'msg="A token:00000 9007199254740990 true"' >>"$(ls "$WORK"/log.* | head -n1)"
fi
python3 - "$WORK" "$N" <<'PY'
import glob, os, re, sys
work, n = sys.argv[1], int(sys.argv[2])
killed = set(open(os.path.join(work, "killed")).read().split())
granted = set()          # (inc, key, token)
last = {}                # (inc, key) -> last step on it
acked = {}               # key -> [(inc, token)] with completeClaim true
for path in glob.glob(os.path.join(work, "log.*")):
    inc = os.path.basename(path)[4:]
    # A SIGKILL can cut an incarnation's last line short (a write that
    # straddles a page stops between its pages): such a line was not
    # written, and it must not be read as a step with a cut token.
    text = open(path).read()
    for m in re.finditer(r"\b([GIA]) (token:\d+) (\d+)(?: (true|false))?", text[:text.rfind("\n") + 1]):
        kind, key, tok = m.group(1), m.group(2), int(m.group(3))
        if kind == "G":
            granted.add((inc, key, tok))
        if kind == "A" and m.group(4) == "true":
            acked.setdefault(key, []).append((inc, tok))
        last[(inc, key)] = (kind, tok)
done = {}
for m in re.finditer(r"DONE (token:\d+) (\S+) (\d+)", open(os.path.join(work, "verify.log")).read()):
    done[m.group(1)] = (m.group(2), int(m.group(3)))
bad = []
twice = [k for k, a in acked.items() if len(a) > 1]
for k in twice[:10]:
    bad.append(f"{k} completed twice: {acked[k]}")
lost = 0
for i in range(n):
    key = f"token:{i:05d}"
    if key not in done:
        bad.append(f"{key}: no done record")
        continue
    by, tok = done[key]
    if (by, key, tok) not in granted:
        bad.append(f"{key}: done record {by} {tok} not written under a claim granted to it")
    if key in acked:
        inc, atok = acked[key][0]
        if tok > atok:
            bad.append(f"{key}: recorded by {by} with token {tok} after its completion with {atok}")
    else:
        if by not in killed or last.get((by, key)) != ("I", tok):
            bad.append(f"{key}: never acknowledged as completed, and not in the middle of a killed incarnation's completion (record {by} {tok}, its last step {last.get((by, key))})")
        lost += 1
for b in bad[:20]:
    print("FAILED:", b)
print(f"k6-claims-crash: {sum(len(a) for a in acked.values())} completions acknowledged, {lost} cut short by a kill, {len(twice)} twice")
sys.exit(1 if bad else 0)
PY
ast=$?
if [[ "$selftest" == 1 ]]; then
    if [[ $ast != 0 ]]; then
        result OK "self-test: the accounting caught the made-up second completion"
    else
        result FAIL "self-test: the accounting missed the made-up second completion"
    fi
elif [[ $ast == 0 ]]; then
    result OK "every token completed exactly once (none twice, none missing)"
else
    result FAIL "exactly-once accounting from the consumers' logs"
fi

if [[ -n "$DUMP" && -x "$DUMP" ]]; then
    if "$DUMP" --check "$STORE" >"$WORK/dump.out" 2>&1; then
        result OK "shmkv-dump --check"
    else
        result FAIL "shmkv-dump --check"
        head -n 20 "$WORK/dump.out"
    fi
else
    echo "k6-claims-crash: shmkv-dump not found (set SHMKV_DUMP): structure check not run"
fi

echo "k6-claims-crash: $passed passed, $failed failed"
((failed == 0))
