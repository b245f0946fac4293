#!/usr/bin/env bash
# Load harness: toolgate beside nginx, measured in the same run.
#
#   benches/load.sh [seconds-per-round] [rounds] [connections]
#   benches/load.sh --smoke          # a few seconds, debug build: CI's check that it runs
#   TOOLGATE_BIN=path ONLY=list-json benches/load.sh   # another build; one scenario
#
# One nginx serves fixed MCP answers (the upstream): a tools/call result
# as JSON and as SSE, and a tools/list of 1,000 tools (190 KB). Another
# nginx, with a worker per core as toolgate has a thread per core, is the
# reference plain proxy: `proxy_pass` with a keepalive upstream pool,
# access log on. toolgate runs with a realistic
# policy: JWT (ES256) authentication, a 50-pattern allowlist with globs
# that keeps half the tools, list filtering, access log on. Lists are
# measured twice: `list-json` as deployed (the same catalogue again is
# answered from the memo of lists already filtered, `transport.list_memo`)
# and `list-cold` with `list_memo: 0`, every answer filtered afresh, as a
# catalogue that changes with every answer would be. Each scenario
# is measured direct, through nginx and through toolgate, in alternating
# rounds with wrk (1 thread); the table gives medians and ratios, which is
# what means something on a shared, noisy machine. toolgate's CPU seconds
# per 10,000 requests come from /proc (and, for the list rows, its CPU
# milliseconds per MB of list answered).
#
# Needs wrk, nginx and openssl (Debian: wrk nginx-light openssl; installed
# with apt-get when missing and run as root). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
SECONDS_PER_ROUND=${1:-5}
ROUNDS=${2:-3}
CONNECTIONS=${3:-32}
if [ "$SMOKE" = 1 ]; then SECONDS_PER_ROUND=1; ROUNDS=1; CONNECTIONS=4; fi

missing=()
for tool in wrk hey nginx openssl python3; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  packages=$(printf '%s\n' "${missing[@]}" | sed 's/^nginx$/nginx-light/' | tr '\n' ' ')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "load.sh: installing $packages" >&2
    apt-get install -y --no-install-recommends $packages >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends $packages >/dev/null 2>&1; } \
      || { echo "load.sh: apt-get could not install $packages (is a Debian mirror reachable?)" >&2; exit 2; }
  else
    echo "load.sh needs: $packages (Debian: apt-get install $packages)" >&2; exit 2
  fi
fi

if [ -n "${TOOLGATE_BIN:-}" ]; then
  bin=$TOOLGATE_BIN   # another build to measure (a profiling build, a branch's)
elif [ "$SMOKE" = 1 ]; then
  cargo build --quiet --locked; bin=target/debug/toolgate
else
  cargo build --release --quiet --locked; bin=target/release/toolgate
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
# A port free now and not handed out before in this run: the kernel may
# give the same free port twice, and two nginx servers on one port would
# answer for each other (the first one's upstream for both).
free_port() {
  python3 - "$work/ports" <<'PY'
import socket, sys
path = sys.argv[1]
try:
    with open(path) as given:
        used = set(given.read().split())
except FileNotFoundError:
    used = set()
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    if port not in used:
        break
with open(path, "a") as given:
    given.write(port + "\n")
print(port)
PY
}
UP=$(free_port); REF=$(free_port); QUIET=$(free_port); STREAM_UP=$(free_port); STREAM_REF=$(free_port)
# Open files: a proxied stream holds two (client and upstream side).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
files=$(ulimit -n); [ "$files" = unlimited ] && files=65536
STREAMS=${STREAMS:-$(( files / 2 - 1500 < 10000 ? files / 2 - 1500 : 10000 ))}
[ "$SMOKE" = 1 ] && STREAMS=200

# The answers, a JWKS and an ES256 token (openssl and the standard library only).
# Policies in a directory of their own: toolgate watches its policy's
# directory, and the logs written beside it would wake every gate.
mkdir "$work/policies"
python3 - "$work" <<'PY'
import base64, json, subprocess, sys, time
work = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
tools = [{"name": f"{'read' if i % 2 == 0 else 'write'}_{i:04d}", "description": "A tool of the benchmark catalogue " * 2,
          "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}} for i in range(1000)]
open(f"{work}/list.json", "w").write(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}))
call = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}})
open(f"{work}/call.json", "w").write(call)
open(f"{work}/call.sse", "w").write(f"event: message\ndata: {call}\n\n")
subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{work}/jwt.key"], check=True)
der = subprocess.run(["openssl", "ec", "-in", f"{work}/jwt.key", "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
x, y = der[-64:-32], der[-32:]
open(f"{work}/policies/jwks.json", "w").write(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig", "x": b64(x), "y": b64(y)}]}))
header = b64(json.dumps({"alg": "ES256", "kid": "bench", "typ": "JWT"}).encode())
claims = b64(json.dumps({"iss": "https://id.bench", "sub": "bench", "aud": "http://127.0.0.1/mcp", "exp": int(time.time()) + 86400, "groups": ["bench"]}).encode())
signing = f"{header}.{claims}".encode()
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/jwt.key"], input=signing, check=True, capture_output=True).stdout
# DER ECDSA-Sig-Value -> r || s, 32 bytes each.
def ints(d):
    i, out = 2 if d[1] < 0x80 else 3, []
    while i < len(d):
        n = d[i + 1]; out.append(int.from_bytes(d[i + 2:i + 2 + n], "big")); i += 2 + n
    return out
r, s = ints(sig)
open(f"{work}/token", "w").write(f"{header}.{claims}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
PY
TOKEN=$(cat "$work/token")

# Two nginx instances, so that the reference proxy never shares a process
# with the upstream it proxies to. The upstream (and the reference for
# idle streams, whose memory is then one process's, as toolgate's is)
# runs one worker; the reference proxy runs as many workers as toolgate
# has runtime threads (one per core), nginx's own `auto`.
nginx_conf() { # name workers -> a config whose http block reads stdin
  cat >"$work/$1.conf" <<NGINX
worker_processes $2;
worker_rlimit_nofile $files;
daemon off;
pid $work/$1.pid;
error_log $work/$1-error.log warn;
events { worker_connections $files; }
http {
  access_log $work/$1-access.log;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  keepalive_requests 1000000;
$(cat)
}
NGINX
}
nginx_conf upstream 1 <<NGINX
  # Fixed answers to POSTs (served as files through error_page, since the
  # static handler answers POST with 405).
  server {
    listen 127.0.0.1:$UP;
    access_log off;
    root $work;
    location = /call-json { error_page 405 =200 /call.json; try_files /call.json =404; }
    location = /call-sse { error_page 405 =200 /call.sse; try_files /call.sse =404; }
    location = /list-json { error_page 405 =200 /list.json; try_files /list.json =404; }
    location = /call.json { default_type application/json; }
    location = /list.json { default_type application/json; }
    location = /call.sse { default_type text/event-stream; }
  }
  # Idle SSE streams (GET /mcp), to benches/streams.py's upstream.
  server {
    listen 127.0.0.1:$STREAM_REF;
    location / { proxy_pass http://127.0.0.1:$STREAM_UP; proxy_http_version 1.1; proxy_buffering off; proxy_read_timeout 1h; }
  }
NGINX
nginx_conf nginx auto <<NGINX
  # The reference: nginx as a plain reverse proxy with a keepalive pool.
  upstream mcp { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$REF;
    location / { proxy_pass http://mcp; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
  # The same without its access log.
  server {
    listen 127.0.0.1:$QUIET;
    access_log off;
    location / { proxy_pass http://mcp; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
NGINX
for instance in upstream nginx; do
  nginx -c "$work/$instance.conf" -p "$work" &
  pids+=($!)
done

# 50 patterns: exact names and globs, half of the catalogue kept.
patterns=$(python3 -c 'print(", ".join(["\"read_*\""] + [f"\"audit_{i}_*\"" for i in range(24)] + [f"\"ping_{i}\"" for i in range(25)]))')
start_gate() { # gate scenario log-filter [transport setting] -> port pid
  local port; port=$(free_port)
  cat >"$work/policies/$1.yaml" <<YAML
version: 1
listen: { proxy: 127.0.0.1:$port, admin: 127.0.0.1:$(free_port), max_connections: 20000 }
upstream: { url: $2 }
transport: { allowed_hosts: [127.0.0.1]${4:+, $4} }
identity:
  resource_metadata: { base_url: http://127.0.0.1 }
  jwt: [{ issuer: https://id.bench, algorithms: [ES256], jwks: { file: jwks.json } }]
virtual_servers:
  default:
    tools: { allow: [$patterns, "write_0001"], deny: ["*_admin"] }
YAML
  RUST_LOG=$3 "$bin" run --config "$work/policies/$1.yaml" 2>"$work/$1.log" &
  echo "$port $!"
}
# A gate per scenario, access log on (info, the default); one more for
# JSON calls with the log at warn, and one for lists that filters every
# answer afresh (no memo of lists already filtered: a catalogue that
# changes with every answer costs this).
declare -A gate_port gate_pid
gates="call-json:call-json:info call-sse:call-sse:info list-json:list-json:info list-cold:list-json:info call-json-quiet:call-json:warn"
for spec in $gates streams:-:info; do
  IFS=: read -r gate scenario filter <<<"$spec"
  upstream=http://127.0.0.1:$UP/$scenario
  [ "$gate" = streams ] && upstream=http://127.0.0.1:$STREAM_UP/mcp
  extra=""; [ "$gate" = list-cold ] && extra="list_memo: 0"
  read -r port pid < <(start_gate "$gate" "$upstream" "$filter" "$extra")
  gate_port[$gate]=$port; gate_pid[$gate]=$pid; pids+=("$pid")
done
for _ in $(seq 100); do
  ready=1
  for gate in "${!gate_port[@]}"; do
    curl -s -o /dev/null "http://127.0.0.1:${gate_port[$gate]}/" 2>/dev/null || ready=0
  done
  for port in $UP $REF; do curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null || ready=0; done
  [ "$ready" = 1 ] && break; sleep 0.1
done

script() { # method -> lua file
  local file="$work/$(echo "$1" | tr / _).lua"
  local body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_0002","arguments":{}}}'
  [ "$1" = tools/list ] && body='{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
  cat >"$file" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
  echo "$file"
}
run() { # url script connections -> "rps p50_ms p99_ms non2xx"
  wrk -t1 -c"$3" -d"${SECONDS_PER_ROUND}s" --latency -s "$2" "$1" | awk '
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    END { printf "%s %.3f %.3f %d\n", rps, ms(p50), ms(p99), bad + 0 }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The reference nginx's workers, together.
nginx_ticks() { local t=0 w; for w in $(pgrep -P "${pids[1]}"); do t=$((t + $(cpu_ticks "$w"))); done; echo "$t"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
col() { cut -d' ' -f"$1" "$2" | median; }
per_10k() { # ticks "rps ..." -> CPU seconds per 10,000 requests
  awk -v t="$1" -v hz="$hz" -v rps="${2%% *}" -v s="$SECONDS_PER_ROUND" \
    'BEGIN { n = rps * s; if (n > 0) printf "%.3f\n", t / hz / n * 10000; else print 0 }'
}

echo "wrk -t1, ${SECONDS_PER_ROUND}s rounds x $ROUNDS, alternating direct / nginx / toolgate; medians. toolgate: $bin"
printf "%-26s %10s %10s %10s %8s %10s %10s %10s %15s %12s %12s\n" \
  scenario direct_rps nginx_rps tg_rps tg/nginx nginx_p50 tg_p50 added_p50 nginx_cpu_s/10k tg_cpu_s/10k tg_cpu_ms/MB
list_bytes=$(wc -c <"$work/list.json")
hz=$(getconf CLK_TCK)
failed=0
declare -A nginx_median
rows=("call-json call-json tools/call $CONNECTIONS $REF" "call-sse call-sse tools/call $CONNECTIONS $REF"
      "call-json-quiet call-json tools/call $CONNECTIONS $QUIET"
      "list-json list-json tools/list $CONNECTIONS $REF" "list-json list-json tools/list 1 $REF"
      "list-cold list-json tools/list $CONNECTIONS $REF" "list-cold list-json tools/list 1 $REF")
for row in "${rows[@]}"; do
  read -r gate scenario method conns nginx <<<"$row"
  # ONLY=list-json (a gate) measures that one alone.
  [ -n "${ONLY:-}" ] && [ "$ONLY" != "$gate" ] && continue
  lua=$(script "$method")
  : >"$work/d"; : >"$work/n"; : >"$work/t"; : >"$work/c"; : >"$work/nc"
  for _ in $(seq "$ROUNDS"); do
    run "http://127.0.0.1:$UP/$scenario" "$lua" "$conns" >>"$work/d"
    before=$(nginx_ticks)
    out=$(run "http://127.0.0.1:$nginx/$scenario" "$lua" "$conns"); echo "$out" >>"$work/n"
    after=$(nginx_ticks)
    per_10k "$((after - before))" "$out" >>"$work/nc"
    before=$(cpu_ticks "${gate_pid[$gate]}")
    out=$(run "http://127.0.0.1:${gate_port[$gate]}/mcp" "$lua" "$conns"); echo "$out" >>"$work/t"
    after=$(cpu_ticks "${gate_pid[$gate]}")
    per_10k "$((after - before))" "$out" >>"$work/c"
  done
  bad=$(awk '{ s += $4 } END { print s + 0 }' "$work/t" "$work/n")
  [ "$bad" -gt 0 ] && { echo "load.sh: $bad non-2xx answers in $gate (see $work/$gate.log)" >&2; failed=1; }
  nginx_median[$gate.$conns]=$(col 1 "$work/n")
  # CPU per MB of list filtered: the list rows' answers are list.json.
  mb=0; [ "$method" = tools/list ] && mb=$list_bytes
  awk -v name="$gate c=$conns" -v d="$(col 1 "$work/d")" -v n="$(col 1 "$work/n")" -v t="$(col 1 "$work/t")" \
      -v n5="$(col 2 "$work/n")" -v t5="$(col 2 "$work/t")" -v c="$(col 1 "$work/c")" -v nc="$(col 1 "$work/nc")" -v mb="$mb" 'BEGIN {
    per_mb = (mb > 0 ? sprintf("%.2f", c / 10000 * 1000 / (mb / 1e6)) : "-")
    printf "%-26s %10.0f %10.0f %10.0f %8.2f %8.3fms %8.3fms %8.3fms %15s %12s %12s\n", name, d, n, t, (n > 0 ? t / n : 0), n5, t5, t5 - n5, nc, c, per_mb }'
done

# Fixed rate: half of nginx's saturation rate for JSON and SSE calls, with
# hey (-q is per worker); the latency each proxy adds at p50 and p99.
fixed() { # url rate lua-body -> "p50_ms p99_ms non2xx"
  local workers=16
  hey -z "${SECONDS_PER_ROUND}s" -c "$workers" -q "$(awk -v r="$2" -v w="$workers" 'BEGIN { printf "%.1f", r / w }')" \
    -m POST -disable-compression -T application/json -d "$3" \
    -H "Accept: application/json, text/event-stream" -H "MCP-Protocol-Version: 2025-06-18" \
    -H "Authorization: Bearer $TOKEN" "$1" | awk '
    /^ +50%/ { p50 = $3 * 1000 } /^ +99%/ { p99 = $3 * 1000 }
    /^ +\[[0-9]+\]/ { if ($1 != "[200]") bad += $2 }
    END { printf "%.3f %.3f %d\n", p50, p99, bad + 0 }'
}
echo
echo "fixed rate, half of nginx's saturation (hey -c 16, ${SECONDS_PER_ROUND}s rounds x $ROUNDS); medians"
printf "%-26s %10s %10s %10s %10s %10s %10s %10s\n" \
  scenario rate direct_p99 nginx_p50 nginx_p99 tg_p50 tg_p99 added_p99
call_body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_0002","arguments":{}}}'
for gate in call-json call-sse; do
  [ -n "${ONLY:-}" ] && [ "$ONLY" != "$gate" ] && continue
  rate=$(awk -v n="${nginx_median[$gate.$CONNECTIONS]:-0}" 'BEGIN { printf "%d", n / 2 }')
  [ "$rate" -gt 0 ] || continue
  : >"$work/d"; : >"$work/n"; : >"$work/t"
  for _ in $(seq "$ROUNDS"); do
    fixed "http://127.0.0.1:$UP/$gate" "$rate" "$call_body" >>"$work/d"
    fixed "http://127.0.0.1:$REF/$gate" "$rate" "$call_body" >>"$work/n"
    fixed "http://127.0.0.1:${gate_port[$gate]}/mcp" "$rate" "$call_body" >>"$work/t"
  done
  bad=$(awk '{ s += $3 } END { print s + 0 }' "$work/t" "$work/n")
  [ "$bad" -gt 0 ] && { echo "load.sh: $bad non-200 answers at a fixed rate in $gate" >&2; failed=1; }
  awk -v name="$gate" -v rate="$rate" -v d="$(col 2 "$work/d")" -v n5="$(col 1 "$work/n")" -v n9="$(col 2 "$work/n")" \
      -v t5="$(col 1 "$work/t")" -v t9="$(col 2 "$work/t")" 'BEGIN {
    printf "%-26s %10d %8.3fms %8.3fms %8.3fms %8.3fms %8.3fms %8.3fms\n", name, rate, d, n5, n9, t5, t9, t9 - n9 }'
done

rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# Startup to ready and a reload taking effect (the JWT policy above).
if [ -z "${ONLY:-}" ] || [ "$ONLY" = lifecycle ]; then
  if times=$(python3 benches/lifecycle.py "$bin" "$work/policies/call-json.yaml" "$([ "$SMOKE" = 1 ] && echo 2 || echo 7)"); then
    read -r startup reload <<<"$times"
    echo "toolgate startup to ready: ${startup} ms; a policy change to taking effect: ${reload} ms (medians)"
  else
    failed=1
  fi
fi

# Idle SSE streams: memory per open stream, nginx beside toolgate.
echo "toolgate idle RSS (a gate that has served nothing): $(rss "${gate_pid[streams]}") KiB"
[ -n "${ONLY:-}" ] && [ "$ONLY" != streams ] && exit "$failed"
nginx_worker=$(pgrep -P "${pids[0]}" | head -1)
echo
echo "idle SSE streams (GET /mcp held open), $STREAMS at once"
printf "%-26s %12s %12s %10s\n" proxy rss_before rss_streams KiB/stream
for target in "nginx $STREAM_REF $nginx_worker" "toolgate ${gate_port[streams]} ${gate_pid[streams]}"; do
  read -r name port pid <<<"$target"
  if out=$(python3 benches/streams.py "$STREAM_UP" "$port" "$pid" "$STREAMS" "$TOKEN"); then
    read -r before with opened per <<<"$out"
    printf "%-26s %9d KiB %9d KiB %10s\n" "$name ($opened)" "$before" "$with" "$per"
  else
    failed=1
  fi
  sleep 1
done
echo "toolgate RSS after the runs: $(rss "${gate_pid[call-json]}") KiB (call-json), $(rss "${gate_pid[list-json]}") KiB (list-json)"
# A smoke run must at least have been answered correctly through both proxies.
[ ! -f "$work/t" ] || [ "$(col 1 "$work/t")" != "0.00" ] || failed=1
exit "$failed"
