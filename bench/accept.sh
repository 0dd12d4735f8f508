#!/usr/bin/env bash
# bench/accept.sh [REPS=3] [CONC=50] [MSGS=20000] [SIZE=1024]
#
# Acceptance throughput of ringrelay (fsync = batch, delivery to a sink that is down so only
# acceptance is measured) against the no-relay ceiling (smtp-source -> smtp-sink), in the same
# run, alternating, REPS times. Uses ../shared/bench (Postfix's smtp-source and smtp-sink).
# Prints one line per run and the medians; relay CPU is user+sys of the ringrelay process, sink
# CPU that of smtp-sink during the ceiling run (a server that keeps nothing: the floor).
# Environment: FSYNC=batch|always|never (default batch), PIN=true|false|auto (cores.pin, default auto).
# Loopback only. Needs a release build: cargo build --release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
kit=${BENCH_KIT:-$root/../shared/bench}
reps=${1:-3}; conc=${2:-50}; msgs=${3:-20000}; size=${4:-1024}
sink_port=10026; relay_port=10030; down_port=10031
bin=$root/target/release/ringrelay
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
cat > "$work/relay.toml" <<TOML
hostname = "bench.test"
[spool]
dir = "$work/spool"
fsync = "${FSYNC:-batch}"
[cores]
pin = $(case "${PIN:-auto}" in true|false) echo "$PIN" ;; *) echo '"auto"' ;; esac)
[admin]
enabled = false
[dns]
nameservers = ["127.0.0.1:1"]
[[receive_connector]]
name = "bench"
bind = ["127.0.0.1:$relay_port"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "any"
[[send_connector]]
name = "down"
domains = ["*"]
smart_hosts = ["127.0.0.1:$down_port"]
retry = { first = "1h", max = "1h", expire = "2d" }
TOML
"$kit/sink.sh" --stop $sink_port >/dev/null 2>&1 || true
"$kit/sink.sh" $sink_port >/dev/null
trap '"$kit/sink.sh" --stop $sink_port >/dev/null 2>&1; kill $relay_pid 2>/dev/null; rm -rf "$work"' EXIT
"$bin" serve --config "$work/relay.toml" > "$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 50); do grep -q "ringrelay ready" "$work/relay.log" && break; sleep 0.1; done
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
sink_pid=$(cat "${PEERS_STATE:-/var/tmp/peers}/sink-$sink_port.pid")
for rep in $(seq "$reps"); do
  s0=$(cpu $sink_pid)
  d=$("$kit/load.sh" $sink_port "$conc" "$msgs" "$size")
  s1=$(cpu $sink_pid)
  c0=$(cpu $relay_pid)
  r=$("$kit/load.sh" $relay_port "$conc" "$msgs" "$size")
  c1=$(cpu $relay_pid)
  dm=$(sed 's/.*msgs_per_s=\([0-9.]*\).*/\1/' <<<"$d"); rm_=$(sed 's/.*msgs_per_s=\([0-9.]*\).*/\1/' <<<"$r")
  cpu_ms=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v n="$msgs" 'BEGIN{printf "%.3f", (b-a)/hz*1000/n}')
  sink_ms=$(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v n="$msgs" 'BEGIN{printf "%.3f", (b-a)/hz*1000/n}')
  ratio=$(awk -v a="$rm_" -v b="$dm" 'BEGIN{printf "%.2f", a/b}')
  echo "run=$rep ceiling_mps=$dm ringrelay_mps=$rm_ ratio=$ratio relay_cpu_ms_per_msg=$cpu_ms sink_cpu_ms_per_msg=$sink_ms"
done | tee "$work/runs.txt"
for key in ceiling_mps ringrelay_mps ratio relay_cpu_ms_per_msg sink_cpu_ms_per_msg; do
  sed "s/.*$key=\([0-9.]*\).*/\1/" "$work/runs.txt" | sort -n | awk -v k="$key" '{a[NR]=$1} END{print "median " k "=" a[int((NR+1)/2)]}'
done
