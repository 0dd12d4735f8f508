#!/bin/bash
# Intake with the tracking log off / on / on + protocol log (tuning.md, "Cost of tracking and protocol logs").
# Needs: cargo build --release --bin ringrelay; python3. Loopback only, 4000 messages, bounded.
# usage: bench/ops_intake_run.sh <variant: on|off|proto>
set -e
v=$1; d=$(mktemp -d); port=32525; admin=39425
track=true; proto=false
[ "$v" = off ] && track=false
[ "$v" = proto ] && proto=true
cat > $d/r.toml <<EOT
hostname = "relay.test"
[spool]
dir = "$d/spool"
[admin]
listen = "127.0.0.1:$admin"
[cores]
smtp = 1
delivery = 1
[tracking]
enabled = $track
[dns]
nameservers = ["127.0.0.1:1"]
[[receive_connector]]
name = "bench"
bind = ["127.0.0.1:$port"]
remote_ip_ranges = ["127.0.0.1/32"]
permission_groups = ["anonymous"]
relay = "any"
protocol_log = $proto
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:1"]
retry = { first = "1h", max = "1h", expire = "2d" }
EOT
"$(dirname "$0")/../target/release/ringrelay" serve --config $d/r.toml > $d/log 2>&1 &
pid=$!
for i in $(seq 50); do grep -q 'ringrelay ready' $d/log && break; sleep 0.1; done
python3 "$(dirname "$0")/ops_intake_load.py" $port 4000 8
curl -s 127.0.0.1:$admin/metrics | grep -E '^ringrelay_accept_latency_seconds_(sum|count)'
kill -TERM $pid; wait $pid || true
du -sh $d/spool/tracking $d/spool/protocol 2>/dev/null || true
rm -rf $d
