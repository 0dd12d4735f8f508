#!/usr/bin/env bash
# bench-vs-smtp-source.sh [REPS=3] [MSGS=20000] [CONC=10]
#
# ringload against Postfix smtp-source, both driving the same Postfix smtp-sink on
# 127.0.0.1, interleaved in the same run (the machine is shared: a baseline measured at
# another time means nothing). Same message size (smtp-source -l 1024 sends 1159-byte
# messages: ringload --size 1159), same concurrency, same connection model:
#
#   per-conn-1   smtp-source -s C -m M -l 1024 ...     vs ringload --per-connection 1
#   reuse        smtp-source -d -s C -m M -l 1024 ...  vs ringload --per-connection 100
#
# ringload rows: `ringload` is the default (one thread per core, pinned on 4 CPUs or more, PIPELINING when
# offered), `ringload-1t` is --threads 1 --no-pin (one client core, free to move: what suits
# a client sharing a 2-core machine with the server), `ringload-1t-nopipe` adds
# --no-pipelining (smtp-source never pipelines: the protocol-equal comparison).
# Client CPU is user+sys of the client process (GNU time); sink CPU is the sink process's
# utime+stime delta from /proc (all its threads). Each line of the raw output:
#   RAW config tool rep msgs wall_s msgs_per_s client_cpu_s sink_cpu_s
# and at the end the medians over REPS.
#
# Environment: RINGLOAD (default target/release/ringload), PORT (default: a free one),
# SINK=ringload to use `ringload sink --threads 2 --no-pin` instead of smtp-sink (then the
# sink is not the bottleneck and the clients' own limits show).
set -euo pipefail

reps=${1:-3}
msgs=${2:-20000}
conc=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
ringload=${RINGLOAD:-$here/../../target/release/ringload}
[ -x "$ringload" ] || { echo "build first: cargo build --release -p ringload" >&2; exit 1; }
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null || {
  echo "needs Postfix's smtp-source and smtp-sink (apt-get install postfix)" >&2; exit 1; }

port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
hz=$(getconf CLK_TCK)
if [ "${SINK:-smtp-sink}" = ringload ]; then
  "$ringload" sink --listen "127.0.0.1:$port" --threads 2 --no-pin --duration 1h </dev/null >/dev/null 2>&1 &
else
  smtp-sink -u nobody -m 1000 "127.0.0.1:$port" 1000 </dev/null >/dev/null 2>&1 &
fi
sink_pid=$!
trap 'kill $sink_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

sink_ticks() { awk '{print $14 + $15}' "/proc/$sink_pid/stat"; }

# measure CONFIG TOOL REP CMD...
measure() {
  local config=$1 tool=$2 rep=$3; shift 3
  local tf s0 s1 out
  tf=$(mktemp)
  s0=$(sink_ticks)
  if ! out=$(/usr/bin/time -f '%e %U %S' -o "$tf" "$@" 2>&1); then
    echo "FAILED: $*" >&2; echo "$out" | tail -5 >&2; exit 1
  fi
  s1=$(sink_ticks)
  if [ "$tool" != smtp-source ] && ! grep -q "^messages: $msgs ok, 0 failed" <<<"$out"; then
    echo "ringload did not get all $msgs messages through:" >&2; echo "$out" | head -3 >&2; exit 1
  fi
  read -r wall user sys < "$tf"; rm -f "$tf"
  awk -v c="$config" -v t="$tool" -v r="$rep" -v m="$msgs" -v w="$wall" -v u="$user" -v s="$sys" \
      -v s0="$s0" -v s1="$s1" -v hz="$hz" \
      'BEGIN { printf "RAW %s %s %d %d %.3f %.0f %.3f %.3f\n", c, t, r, m, w, m / w, u + s, (s1 - s0) / hz }'
}

common=(--target "127.0.0.1:$port" --concurrency "$conc" --messages "$msgs" --duration 10m --size 1159 --quiet)
src=(-s "$conc" -m "$msgs" -l 1024 -f from@bench.test -t to@dest.test -M bench.test "127.0.0.1:$port")

raw=$(mktemp)
for rep in $(seq "$reps"); do
  # Alternate the order so that neither tool always runs first.
  if [ $((rep % 2)) -eq 1 ]; then order="a b"; else order="b a"; fi
  for o in $order; do
    if [ "$o" = a ]; then
      measure per-conn-1 smtp-source "$rep" smtp-source "${src[@]}"
      measure reuse smtp-source "$rep" smtp-source -d "${src[@]}"
    else
      for pc in 1 100; do
        config=$([ "$pc" = 1 ] && echo per-conn-1 || echo reuse)
        measure "$config" ringload "$rep" "$ringload" run "${common[@]}" --per-connection "$pc"
        measure "$config" ringload-1t "$rep" "$ringload" run "${common[@]}" --per-connection "$pc" --threads 1 --no-pin
        measure "$config" ringload-1t-nopipe "$rep" "$ringload" run "${common[@]}" --per-connection "$pc" \
          --threads 1 --no-pin --no-pipelining
      done
    fi
  done | tee -a "$raw"
done

echo
echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "medians of $reps runs, $msgs messages of 1159 bytes, concurrency $conc, against ${SINK:-smtp-sink}:"
python3 - "$raw" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] != "RAW":
        continue
    key = (f[1], f[2])
    rows.setdefault(key, []).append((float(f[6]), float(f[7]), float(f[8]), int(f[4])))
print(f"{'config':<11} {'client':<19} {'msgs/s':>8} {'client CPU us/msg':>17} {'sink CPU us/msg':>16}")
for (config, tool), v in sorted(rows.items()):
    rate = statistics.median(x[0] for x in v)
    ccpu = statistics.median(x[1] / x[3] * 1e6 for x in v)
    scpu = statistics.median(x[2] / x[3] * 1e6 for x in v)
    print(f"{config:<11} {tool:<19} {rate:>8.0f} {ccpu:>17.1f} {scpu:>16.1f}")
PY
rm -f "$raw"
