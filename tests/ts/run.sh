#!/usr/bin/env bash
# Type-checks every TypeScript example (examples/**/*.ts) against the
# extension's declarations (cgo/index.d.ts) and k6's own (@types/k6), with
# TypeScript from npm. Ends with "ts: N passed, N failed" (one per file).
#
# The compiler is installed once into ${XDG_CACHE_HOME:-~/.cache}/libshmkv,
# keyed by the versions below; nothing is written into the clone.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TS_VERSION=${TS_VERSION:-5.9.3}
K6_TYPES=${K6_TYPES:-2.3.0}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/libshmkv/ts-$TS_VERSION-k6-$K6_TYPES

mapfile -t files < <(cd "$ROOT" && find examples -name '*.ts' | sort)
if ((${#files[@]} == 0)); then
    echo "ts: no TypeScript example found" >&2
    echo "ts: 0 passed, 1 failed"
    exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
fi
if [[ ! -x "$CACHE/node_modules/.bin/tsc" ]]; then
    mkdir -p "$CACHE"
    (cd "$CACHE" && printf '{"private":true}\n' >package.json &&
        npm install --silent --no-audit --no-fund "typescript@$TS_VERSION" "@types/k6@$K6_TYPES") >&2 ||
        { echo "ts: could not install TypeScript from npm"; echo "ts: 0 passed, ${#files[@]} failed"; exit 1; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmkv-ts.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0
for f in "${files[@]}"; do
    # One project per file, so that a failure names its file.
    cat >"$WORK/tsconfig.json" <<JSON
{
  "compilerOptions": {
    "strict": true, "noEmit": true, "target": "es2022", "module": "es2022",
    "moduleResolution": "bundler", "lib": ["es2022", "dom"], "skipLibCheck": false,
    "typeRoots": ["$CACHE/node_modules/@types"], "types": ["k6"]
  },
  "files": ["$ROOT/cgo/index.d.ts", "$ROOT/$f"]
}
JSON
    if "$CACHE/node_modules/.bin/tsc" -p "$WORK/tsconfig.json" >"$WORK/out" 2>&1; then
        echo "PASS $f"
        pass=$((pass + 1))
    else
        echo "FAIL $f"
        sed 's/^/    /' "$WORK/out"
        fail=$((fail + 1))
    fi
done
echo "ts: $pass passed, $fail failed"
[[ $fail == 0 ]]
