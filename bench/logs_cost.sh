#!/usr/bin/env bash
# bench/logs_cost.sh [REPS=3] [MSGS=20000] [CONC=50]
#
# What the tracking log and the protocol log cost (tuning.md, "Cost of the tracking and
# protocol logs"): ringload drives the relay (one message per connection, 1 KiB), the relay
# delivers to `ringload sink`, and three relay variants run interleaved in every repetition so
# they share the machine's noise: tracking off, tracking on (the default), tracking + protocol
# log. Prints msgs/s (acceptance, from ringload), the relay's CPU per message (user+sys from
# /proc while the run lasts and until the sink has every message) and the bytes each log wrote
# per message; then medians. Loopback only; bounded by MSGS. Needs: cargo build --release --workspace.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${1:-3}; msgs=${2:-20000}; conc=${3:-50}
relay=$root/target/release/ringrelay; ringload=$root/target/release/ringload
[ -x "$relay" ] && [ -x "$ringload" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
work=$(mktemp -d); port=10040; admin=10041; sink=10042
hz=$(getconf CLK_TCK)
"$ringload" sink --listen 127.0.0.1:$sink --threads 1 --no-pin --duration 1h --stats-file "$work/sink.json" \
  </dev/null >/dev/null 2>&1 &
sink_pid=$!
trap 'kill $sink_pid 2>/dev/null; rm -rf "$work"' EXIT
sink_count() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("messages", 0))' "$work/sink.json" 2>/dev/null || echo 0; }
config() { # VARIANT
  local track=true proto=false
  [ "$1" = off ] && track=false
  [ "$1" = proto ] && proto=true
  cat > "$work/relay.toml" <<TOML
hostname = "relay.test"
[spool]
dir = "$work/spool"
[admin]
listen = "127.0.0.1:$admin"
[tracking]
enabled = $track
[dns]
nameservers = ["127.0.0.1:1"]
[[receive_connector]]
name = "bench"
bind = ["127.0.0.1:$port"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "any"
protocol_log = $proto
[[send_connector]]
name = "sink"
domains = ["*"]
smart_hosts = ["127.0.0.1:$sink"]
TOML
}
for _ in $(seq 50); do [ -s "$work/sink.json" ] && break; sleep 0.1; done
for rep in $(seq "$reps"); do
  for v in off on proto; do
    config $v; rm -rf "$work/spool"
    "$relay" serve --config "$work/relay.toml" > "$work/relay.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "ringrelay ready" "$work/relay.log" && break; sleep 0.05; done
    before=$(sink_count)
    c0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    mps=$("$ringload" run --target 127.0.0.1:$port --concurrency "$conc" --messages "$msgs" --duration 10m \
      --size 1k --per-connection 1 --threads 1 --no-pin --quiet 2>&1 | grep -o 'throughput: [0-9.]*' | cut -d' ' -f2)
    for _ in $(seq 600); do [ $(( $(sink_count) - before )) -ge "$msgs" ] && break; sleep 0.1; done
    c1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    kill -TERM $pid; wait $pid 2>/dev/null || true
    tb=$(du -sb "$work/spool/tracking" 2>/dev/null | cut -f1 || true); pb=$(du -sb "$work/spool/protocol" 2>/dev/null | cut -f1 || true)
    awk -v v=$v -v r=$rep -v m="$mps" -v a=$c0 -v b=$c1 -v hz=$hz -v n=$msgs -v t="${tb:-0}" -v p="${pb:-0}" \
      'BEGIN{printf "variant=%s rep=%s msgs_per_s=%s relay_cpu_ms_per_msg=%.3f tracking_bytes_per_msg=%.0f protocol_bytes_per_msg=%.0f\n", v, r, m, (b-a)/hz*1000/n, t/n, p/n}'
  done
done | tee "$work/runs.txt"
for v in off on proto; do
  for key in msgs_per_s relay_cpu_ms_per_msg; do
    grep "variant=$v " "$work/runs.txt" | sed "s/.*$key=\([0-9.]*\).*/\1/" | sort -n \
      | awk -v v=$v -v k=$key '{a[NR]=$1} END{print "median variant=" v " " k "=" a[int((NR+1)/2)]}'
  done
done
