#!/usr/bin/env bash
# The Go module as users meet it. Ends with "module: N passed, N failed".
#
# 1. published: the module is packed exactly as a module proxy serves it
#    (golang.org/x/mod/zip over the files git tracks, at v0.0.0-test) into a
#    file-based proxy folder put first in GOPROXY; a generated main module
#    requires it with no replace directive and no path into this clone,
#    builds k6 v2, and two k6 processes share one store through it.
# 2. rebuild: in a copy of the module, editing a file under libshmkv/ makes
#    Go rebuild the extension on the next build, with no environment
#    variable, and the new C is what runs.
# 3. layout: every libshmkv/src/*.c is compiled into the extension, and the
#    shim includes no private header of the library.
#
# xk6 itself is not served by the module proxy that this machine reaches,
# so the generated main module stands in for it (it is what xk6 generates).
# Set K6_VERSION to build against another k6 v2 release.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K6_VERSION=${K6_VERSION:-v2.2.0}
MODULE=github.com/libshmkv/libshmkv
VERSION=v0.0.0-test
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-module.XXXXXX")
cleanup() {
    # The module cache is made read-only by Go.
    chmod -R u+w "$WORK" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

# The module's files: what git tracks, as they are in the working tree (a
# proxy zips a tagged commit; this tests the tree at hand).
SRC="$WORK/src"
mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | \
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done | \
    xargs -0 cp --parents -t "$SRC") || { bad layout "cannot copy the tracked files"; }

# ---- 3. layout ----------------------------------------------------------
missing=""
for c in "$ROOT"/libshmkv/src/*.c; do
    b=$(basename "$c")
    grep -lqs "libshmkv/src/$b\"" "$ROOT"/cgo/*.c || missing="$missing $b"
done
if [ -z "$missing" ]; then ok "layout/every-c-file-compiled"
else bad "layout/every-c-file-compiled" "no cgo/*.c includes:$missing"; fi
if grep -rqs 'internal\.h' "$ROOT/cgo"; then
    bad "layout/public-header-only" "$(grep -rl 'internal\.h' "$ROOT/cgo" | tr '\n' ' ')"
else ok "layout/public-header-only"; fi

# ---- 1. published -------------------------------------------------------
PROXY="$WORK/proxy"
export GOFLAGS=-mod=mod GONOSUMDB=$MODULE GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
# A fresh module cache, so that nothing of this clone is found in it; the
# usual cache's download folder is itself a proxy, and serves k6 and the
# rest without downloading them again.
usual_cache=$(go env GOMODCACHE)
usual_proxy=$(go env GOPROXY)
published() {
    (cd "$ROOT/tests/module/modzip" && go run . -dir "$SRC" -proxy "$PROXY" -version "$VERSION") || return 1
    local app="$WORK/app"
    mkdir -p "$app"
    cat >"$app/main.go" <<GO
// Generated as xk6 would.
package main

import (
	k6cmd "go.k6.io/k6/v2/cmd"

	_ "$MODULE"
)

func main() {
	k6cmd.Execute()
}
GO
    cat >"$app/go.mod" <<MOD
module k6app

go 1.25.0

require (
	go.k6.io/k6/v2 $K6_VERSION
	$MODULE $VERSION
)
MOD
    if grep -q replace "$app/go.mod"; then echo "replace directive in the app" >&2; return 1; fi
    (
        cd "$app" &&
        export GOMODCACHE="$WORK/modcache" \
               GOPROXY="file://$PROXY,file://$usual_cache/cache/download,$usual_proxy" CGO_ENABLED=1 &&
        go mod tidy &&
        go build -trimpath -o "$WORK/k6" . &&
        # The extension came from the proxy folder, not from the clone.
        go list -m -f '{{.Path}} {{.Version}} {{.Dir}}' "$MODULE" | tee "$WORK/where" &&
        grep -q "$VERSION $WORK/modcache/" "$WORK/where"
    ) || return 1
    "$WORK/k6" version | grep -q "$MODULE $VERSION" || { echo "k6 version does not list $MODULE $VERSION" >&2; return 1; }
}
if published >"$WORK/published.log" 2>&1; then
    ok "published/build-k6-from-module-zip"
else
    tail -30 "$WORK/published.log"
    bad "published/build-k6-from-module-zip" "see above"
fi

if [ -x "$WORK/k6" ]; then
    cat >"$WORK/share.js" <<'JS'
import { openKv } from "k6/x/kv";
const kv = openKv({ path: __ENV.STORE });
export const options = { vus: 2, iterations: 400 };
export default async function () {
    await kv.incrementBy("n", 1);
}
JS
    cat >"$WORK/verify.js" <<'JS'
import { openKv } from "k6/x/kv";
const kv = openKv({ path: __ENV.STORE });
export default async function () {
    const n = await kv.get("n");
    if (n !== 800) throw new Error(`counter is ${n}, want 800 (400 from each process)`);
    console.log("verified: 800");
}
JS
    export STORE="$WORK/shared.kv"
    run() { timeout 300 "$WORK/k6" run --quiet --summary-mode=disabled "$@"; }
    ( run "$WORK/share.js" >"$WORK/p1.log" 2>&1 ) & p1=$!
    ( run "$WORK/share.js" >"$WORK/p2.log" 2>&1 ) & p2=$!
    wait $p1; r1=$?; wait $p2; r2=$?
    # An exception in an iteration does not change k6's exit code: look
    # for the line the script prints only when the count is right.
    run --iterations 1 "$WORK/verify.js" >"$WORK/p3.log" 2>&1; r3=$?
    grep -q 'verified: 800' "$WORK/p3.log" || r3=1
    if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ $r3 -eq 0 ]; then
        ok "published/two-k6-processes-share-a-store"
    else
        for f in "$WORK"/p[123].log; do tail -n 5 "$f"; done
        bad "published/two-k6-processes-share-a-store" "exit codes $r1 $r2 $r3"
    fi
else
    bad "published/two-k6-processes-share-a-store" "no k6 binary"
fi

# ---- 2. rebuild ---------------------------------------------------------
rebuild() {
    local m="$WORK/edit"
    cp -r "$SRC" "$m" && cd "$m" || return 1
    mkdir -p cmd/ver
    cat >cmd/ver/main.go <<'GO'
package main

import (
	"fmt"

	kv "github.com/libshmkv/libshmkv/cgo"
)

func main() { fmt.Println(kv.LibraryVersion()) }
GO
    unset GOFLAGS
    local before after
    before=$(go run ./cmd/ver) || return 1
    [ "$(go list -f '{{.Stale}}' ./cgo)" = false ] || { echo "./cgo stale right after a build" >&2; return 1; }
    # Edit a C file only: Go must notice and rebuild.
    echo '/* edited */' >>libshmkv/src/table.c
    [ "$(go list -f '{{.Stale}}' ./cgo)" = true ] || { echo "editing table.c left ./cgo up to date" >&2; return 1; }
    # Change what the C code returns: the next build must run the new code.
    sed -i 's/^#define SHMKV_VERSION_PATCH .*/#define SHMKV_VERSION_PATCH 977/' libshmkv/include/shmkv.h
    after=$(go run ./cmd/ver) || return 1
    echo "version before the edit: $before, after: $after"
    case "$after" in *.977) ;; *) echo "the rebuilt extension still reports $after" >&2; return 1 ;; esac
}
if (rebuild) >"$WORK/rebuild.log" 2>&1; then
    ok "rebuild/editing-c-rebuilds-the-extension"
else
    tail -20 "$WORK/rebuild.log"
    bad "rebuild/editing-c-rebuilds-the-extension" "see above"
fi

echo "module: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
