#!/usr/bin/env bash
# The main job: build libshmkv, its tools and a k6 binary with k6/x/kv,
# then show several processes sharing one store - first plain C processes,
# then several k6 processes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/deps.sh
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

echo "== building libshmkv, tools and examples (meson, build/)"
[ -f build/build.ninja ] || meson setup build --buildtype=release -Dtests=false >/dev/null
meson compile -C build >/dev/null
echo "   library: build/libshmkv/libshmkv.a and libshmkv.so"
[ -x build/tools/shmkv-dump/shmkv-dump ] && echo "   tool:    build/tools/shmkv-dump/shmkv-dump"

echo
echo "== demo 1: three separate C processes share one memory store"
name="demo-$$"
n=20000
trap 'build/examples/shmkv-tokens report "$name" >/dev/null 2>&1 || true; rm -f /dev/shm/shmkv."$name"' EXIT
build/examples/shmkv-tokens consume "$name" A >"/tmp/shmkv-demo-$$.A" &
a=$!
build/examples/shmkv-tokens consume "$name" B >"/tmp/shmkv-demo-$$.B" &
b=$!
sleep 0.2
build/examples/shmkv-tokens produce "$name" "$n"
wait "$a" "$b"
cat "/tmp/shmkv-demo-$$.A" "/tmp/shmkv-demo-$$.B"
ta=$(grep -o 'took [0-9]*' "/tmp/shmkv-demo-$$.A" | cut -d' ' -f2)
tb=$(grep -o 'took [0-9]*' "/tmp/shmkv-demo-$$.B" | cut -d' ' -f2)
rm -f "/tmp/shmkv-demo-$$.A" "/tmp/shmkv-demo-$$.B"
if [ $((ta + tb)) -eq "$n" ]; then
  echo "   => $n tokens produced, $((ta + tb)) taken: each exactly once, split $ta/$tb between two processes"
else
  echo "   => MISMATCH: produced $n, taken $((ta + tb))" >&2
  exit 1
fi

if [ -f scripts/build-k6.sh ] && [ -f examples/multiprocess/run.sh ]; then
  echo
  echo "== building k6 with k6/x/kv (cached outside the clone)"
  k6=$(bash scripts/build-k6.sh | tail -1)
  echo "   k6: $k6"
  echo
  echo "== demo 2: several k6 processes share one store"
  K6="$k6" bash examples/multiprocess/run.sh
fi
