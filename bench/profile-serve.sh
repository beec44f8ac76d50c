#!/usr/bin/env bash
# Where a server's CPU time per request goes, on the demo MLP, measured as serve.bench measures it:
# the server pinned to CPU 0, wrk (1 thread) to CPU 1, perf sampling the server's threads (kernel
# included) with V8's perf map for JavaScript frames.
#
#   bench/profile-serve.sh ref|on|off|uws [CONNECTIONS=64] [SECONDS=5] [OUT=/tmp/mlos-profile-KIND-C]
#
# Prints the server's CPU µs per request over the profiled window and that time split by where it
# ran (kernel, node/V8, JIT code, libc, uWS, ONNX Runtime, addons); perf.data stays in OUT for
# `perf report -i OUT/perf.data`. Needs perf (Debian: linux-perf), wrk, taskset, a built tree.
set -euo pipefail
KIND=${1:?ref|on|off|uws}; C=${2:-64}; S=${3:-5}; OUT=${4:-/tmp/mlos-profile-$KIND-$C}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
HOME_DIR="$OUT/axon-home"
node --input-type=module -e 'const m = await import(process.argv[1]); const a = new m.Axon({ home: process.argv[2] }); await m.seedDemoModels(a); await a.close();' "$PWD/dist/src/index.js" "$HOME_DIR"
MLP=$(find "$HOME_DIR" -name model.onnx -path '*mlp*' | head -1)
PORT=$((20000 + RANDOM % 10000))
case $KIND in
  ref) ARGS=(dist/bench/reference-server.js "$MLP" mlp "$PORT" 1) ;;
  uws) ARGS=(dist/bench/uws-fixed.js "$PORT") ;;
  on) ARGS=(dist/bench/serve-child.js "$HOME_DIR" "$PORT" 1 demo/mlp@1.0.0) ;;
  off) ARGS=(dist/bench/serve-child.js "$HOME_DIR" "$PORT" 0 demo/mlp@1.0.0) ;;
  *) echo "unknown kind $KIND" >&2; exit 2 ;;
esac
taskset -c 0 node --perf-basic-prof "${ARGS[@]}" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
URL=http://127.0.0.1:$PORT/v2/models/mlp/infer
BODY='{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.841,-0.544,0.121,0.456]}]}'
for _ in $(seq 100); do curl -s -o /dev/null -X POST -d "$BODY" "$URL" && break; sleep 0.2; done
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["content-type"] = "application/json"\n' "'$BODY'" > "$OUT/post.lua"
taskset -c 1 wrk -t1 -c "$C" -d 2s -s "$OUT/post.lua" "$URL" > /dev/null # warm-up
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
taskset -c 1 perf record -F 2999 -g -p "$PID" -o "$OUT/perf.data" -- sleep $((S + 1)) 2> "$OUT/perf.err" &
PERF=$!
sleep 0.5
T0=$(ticks)
taskset -c 1 wrk -t1 -c "$C" -d "${S}s" -s "$OUT/post.lua" "$URL" > "$OUT/wrk.txt"
T1=$(ticks)
wait $PERF
REQ=$(grep -oE '^ *[0-9]+ requests' "$OUT/wrk.txt" | grep -oE '[0-9]+')
HZ=$(getconf CLK_TCK)
US=$(awk -v t=$((T1 - T0)) -v hz="$HZ" -v n="$REQ" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }')
echo "$KIND, $C connections: $REQ requests in ${S} s, server CPU $US µs/request (perf itself adds a little)"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | awk -v us="$US" '
  /^#/ || NF < 2 { next }
  { p = $1; sub("%", "", p); d = $2; for (i = 3; i <= NF; i++) d = d " " $i
    if (d ~ /kernel/) k = "kernel"; else if (d == "node") k = "node (V8, builtins, libuv)"; else if (d ~ /JIT/) k = "JIT (JavaScript)";
    else if (d ~ /libc|libstdc|ld-linux|vdso|libgcc/) k = "libc, libstdc++"; else if (d ~ /uws/) k = "uWS"; else if (d ~ /binding|mlos_native/) k = "addon (mlos_native / onnxruntime_binding)";
    else if (d ~ /onnxruntime/) k = "ONNX Runtime"; else k = d
    s[k] += p }
  END { for (k in s) printf "  %6.2f µs  %5.1f %%  %s\n", us * s[k] / 100, s[k], k }' | sort -rn
