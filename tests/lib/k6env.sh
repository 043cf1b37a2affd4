# k6env.sh - what the shell test drivers that run k6 share (sourced, not run):
# finding the k6 binary with k6/x/kv and the shmkv-dump tool.
#
#   source "$ROOT/tests/lib/k6env.sh"
#   k6env_k6 NAME       sets and exports K6 (K6=/path/to/k6 skips the build);
#                       otherwise prints "NAME: 0 passed, 1 failed" and exits 1
#   k6env_dump          sets DUMP to shmkv-dump: $SHMKV_DUMP, or the tool in a
#                       build directory of the checkout; empty when none. And
#                       MKSTORE to the CLI tests' store maker (dump-mkstore,
#                       in the same build's tests/cli), or $SHMKV_MKSTORE
# Both need ROOT, the checkout's root.

k6env_k6() {
    local name=$1
    if [[ -z "${K6:-}" ]]; then
        K6=$(bash "$ROOT/scripts/build-k6.sh" | tail -n1) || K6=""
    fi
    if [[ -z "$K6" || ! -x "$K6" ]]; then
        echo "$name: could not build k6 (scripts/build-k6.sh failed; set K6=...)" >&2
        echo "$name: 0 passed, 1 failed"
        exit 1
    fi
    export K6
}

k6env_dump() {
    DUMP=${SHMKV_DUMP:-}
    if [[ -z "$DUMP" ]]; then
        local d
        for d in "$ROOT"/build-rel "$ROOT"/build-plain "$ROOT"/build "$ROOT"/build-*; do
            if [[ -x "$d/tools/shmkv-dump/shmkv-dump" ]]; then
                DUMP="$d/tools/shmkv-dump/shmkv-dump"
                break
            fi
        done
    fi
    MKSTORE=${SHMKV_MKSTORE:-}
    if [[ -z "$MKSTORE" && -n "$DUMP" ]]; then
        MKSTORE="$(dirname "$DUMP")/../../tests/cli/dump-mkstore"
    fi
}
