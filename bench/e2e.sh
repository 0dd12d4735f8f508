#!/usr/bin/env bash
# bench/e2e.sh [REPS=3] [MSGS=20000]
#
# End-to-end relay throughput, the headline figures: Postfix's smtp-source drives each target,
# the target relays to Postfix's smtp-sink, and the time runs until the sink has every message
# (../shared/bench/e2e.sh). Targets, interleaved in every repetition so that they share the
# machine's noise: the ceiling (smtp-source -> smtp-sink directly), ringrelay with its default
# configuration (cores.pin = "auto": not pinned on this 2-CPU machine), ringrelay with cores.pin = true,
# and Postfix (../shared/bench/
# postfix-relay.sh; skipped with POSTFIX=0). Matrix: concurrency 10 and 50, 1 KiB and 10 KiB.
# Then connection reuse (smtp-source -d) against ringrelay and the ceiling, and the sink's
# outbound connections it opened per 1,000 messages relayed (pooling at work), from its own
# ringrelay_outbound_connections_total.
#
# Loopback only; ports 10025 (Postfix), 10026 (sink), 10030/10032 (ringrelay). Needs a release
# build (cargo build --release) and Postfix installed (apt-get install postfix).
# Output: one line per run, then medians per cell, into bench/results-e2e-<date>.txt as well.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
kit=${BENCH_KIT:-$root/../shared/bench}
reps=${1:-3}; msgs=${2:-20000}
bin=$root/target/release/ringrelay
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
. "$kit/common.sh"
work=$(mktemp -d)
mkdir -p "$here/results"
out="$here/results/e2e-$(date -u +%Y%m%dT%H%M).txt"
sink=10026

relay_config() { # PORT PIN (admin on PORT+1000, for the outbound connection count)
  cat > "$work/relay-$1.toml" <<TOML
hostname = "bench.test"
[spool]
dir = "$work/spool-$1"
fsync = "batch"
[cores]
pin = $2
[admin]
listen = "127.0.0.1:$(( $1 + 1000 ))"
[tracking]
enabled = true
[dns]
nameservers = ["127.0.0.1:1"]
[[receive_connector]]
name = "bench"
bind = ["127.0.0.1:$1"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "any"
[[send_connector]]
name = "sink"
domains = ["*"]
smart_hosts = ["127.0.0.1:$sink"]
max_connections_per_domain = 20
TOML
}
relay_config 10030 '"auto"'   # the default
relay_config 10032 true       # forced pinning, for comparison

start_relay() { # PORT -> pid
  rm -rf "$work/spool-$1"
  "$bin" serve --config "$work/relay-$1.toml" > "$work/relay-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "ringrelay ready" "$work/relay-$1.log" && break; sleep 0.05; done
  echo "$pid"
}
stop_relay() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
outbound() { # PORT: outbound SMTP connections the relay opened so far
  curl -s "http://127.0.0.1:$(( $1 + 1000 ))/metrics" | awk '/^ringrelay_outbound_connections_total/ {print $2}'
}

cleanup() {
  "$kit/sink.sh" --stop $sink >/dev/null 2>&1
  [ "${POSTFIX:-1}" = 1 ] && "$kit/postfix-relay.sh" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
"$kit/sink.sh" --stop $sink >/dev/null 2>&1
"$kit/sink.sh" $sink >/dev/null
if [ "${POSTFIX:-1}" = 1 ]; then
  "$kit/postfix-relay.sh" start >/dev/null || { echo "Postfix did not start; POSTFIX=0 to skip it" >&2; exit 2; }
  pf_pid=$(tr -d ' ' < /var/spool/postfix/pid/master.pid)
fi

run() { # NAME PORT CONC SIZE [CPU_PID]
  local line
  line=$(CPU_PIDS=${5:-} "$kit/e2e.sh" "$2" $sink "$3" "$msgs" "$4" 2>/dev/null | tail -1)
  local mps cpu foreign
  mps=$(grep -o 'e2e_mps=[0-9.]*' <<<"$line" | cut -d= -f2)
  cpu=$(grep -o 'relay_cpu_s=[0-9.NA]*' <<<"$line" | cut -d= -f2)
  foreign=$(grep -o 'foreign_pct=[0-9]*' <<<"$line" | cut -d= -f2)
  local cpu_ms=NA
  [ "$cpu" != NA ] && [ -n "$cpu" ] && cpu_ms=$(awk -v c="$cpu" -v n="$msgs" 'BEGIN{printf "%.3f", c*1000/n}')
  echo "target=$1 conc=$3 size=$4 e2e_mps=$mps relay_cpu_ms_per_msg=$cpu_ms foreign_pct=$foreign" | tee -a "$out"
}

for rep in $(seq "$reps"); do
  for conc in 10 50; do
    for size in 1024 10240; do
      run direct $sink "$conc" "$size"
      p=$(start_relay 10030); run ringrelay 10030 "$conc" "$size" "$p"
      echo "target=outbound-connections port=10030 conc=$conc size=$size connections=$(outbound 10030)" | tee -a "$out"
      stop_relay "$p"
      p=$(start_relay 10032); run ringrelay-pinned 10032 "$conc" "$size" "$p"; stop_relay "$p"
      if [ "${POSTFIX:-1}" = 1 ]; then
        "$kit/postfix-relay.sh" wait-empty >/dev/null 2>&1
        run postfix 10025 "$conc" "$size" "$pf_pid"
      fi
    done
  done
  # Connection reuse: smtp-source -d (one connection per client for all its messages).
  export SMTP_SOURCE_OPTS=-d
  run direct-reuse $sink 50 1024
  for port in 10030 10032; do
    p=$(start_relay $port)
    run "ringrelay-reuse-$([ $port = 10030 ] && echo default || echo pinned)" $port 50 1024 "$p"
    n=$(outbound $port)
    echo "target=outbound-connections port=$port msgs=$msgs connections=$n per_1000=$(awk -v s="$n" -v n="$msgs" 'BEGIN{printf "%.2f", s*1000/n}')" | tee -a "$out"
    stop_relay "$p"
  done
  unset SMTP_SOURCE_OPTS
done

echo "# medians" | tee -a "$out"
grep '^target=' "$out" | grep -v outbound-connections | sed 's/ e2e_mps=.*//' | sort -u | while read -r key; do
  sel=$(grep -F "$key " "$out" | grep -v '^#')
  med() { grep -o "$1=[0-9.]*" <<<"$sel" | cut -d= -f2 | sort -n | awk '{a[NR]=$1} END{if (NR) print a[int((NR+1)/2)]; else print "NA"}'; }
  echo "median $key e2e_mps=$(med e2e_mps) relay_cpu_ms_per_msg=$(med relay_cpu_ms_per_msg) runs=$(wc -l <<<"$sel")" | tee -a "$out"
done
echo "results: $out"
