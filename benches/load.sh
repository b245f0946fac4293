#!/usr/bin/env bash
# Load harness: the demo's built-in MCP server, called directly and through
# toolgate (with the demo policy: list filtering, allowlists, all guards),
# under the same wrk load. Rounds alternate direct/proxied; the report gives
# the median of each and the ratios, which is what means something on a
# shared, noisy machine.
#
#   benches/load.sh [seconds-per-round] [rounds] [connections]
#
# Needs wrk (Debian: apt-get install wrk). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_ROUND=${1:-5}
ROUNDS=${2:-3}
CONNECTIONS=${3:-32}
command -v wrk >/dev/null || { echo "load.sh needs wrk (apt-get install wrk)" >&2; exit 2; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill "$demo" 2>/dev/null || true; rm -rf "$work"' EXIT

target/release/toolgate demo --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$work/demo.out" 2>/dev/null &
demo=$!
for _ in $(seq 100); do grep -q "MCP endpoint" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
proxied=$(sed -n 's/.*MCP endpoint: *\(http[^ ]*\).*/\1/p' "$work/demo.out")
direct=$(sed -n 's/.*built-in MCP server at \(http[^)]*\)).*/\1/p' "$work/demo.out")

for method in ping tools/list; do
  cat >"$work/$(echo $method | tr / _).lua" <<LUA
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"$method"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
LUA
done

run() { # url script -> "rps p50_ms p99_ms"
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_ROUND}s" --latency -s "$2" "$1" | awk '
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    END { printf "%s %.3f %.3f\n", rps, ms(p50), ms(p99) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "wrk -t1 -c$CONNECTIONS, ${SECONDS_PER_ROUND}s rounds x $ROUNDS, alternating; medians"
printf "%-11s %12s %12s %9s %9s %9s %9s\n" method direct_rps proxied_rps rps_ratio p50_ratio p99_ratio added_p50
for method in ping tools/list; do
  script="$work/$(echo $method | tr / _).lua"
  : >"$work/d" ; : >"$work/p"
  for _ in $(seq "$ROUNDS"); do
    run "$direct" "$script" >>"$work/d"
    run "$proxied" "$script" >>"$work/p"
  done
  d_rps=$(cut -d' ' -f1 "$work/d" | median); p_rps=$(cut -d' ' -f1 "$work/p" | median)
  d_50=$(cut -d' ' -f2 "$work/d" | median); p_50=$(cut -d' ' -f2 "$work/p" | median)
  d_99=$(cut -d' ' -f3 "$work/d" | median); p_99=$(cut -d' ' -f3 "$work/p" | median)
  awk -v m="$method" -v dr="$d_rps" -v pr="$p_rps" -v d5="$d_50" -v p5="$p_50" -v d9="$d_99" -v p9="$p_99" 'BEGIN {
    printf "%-11s %12.0f %12.0f %9.2f %9.2f %9.2f %7.3fms\n", m, dr, pr, pr / dr, p5 / d5, p9 / d9, p5 - d5 }'
done
