#!/usr/bin/env bash
# Installs a large image (default 1 GiB) with the real upkeep-agent binary from a real server on
# loopback, and reports: the agent's idle RSS, its peak RSS (VmHWM) over the install, the
# download+hash+write throughput, and sha256sum's throughput on the same file in the same run.
# Usage: scripts/agent-install-bench.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

go build -trimpath -ldflags='-s -w' -o "$tmp/upkeep-agent" ./cmd/upkeep-agent
go build -o "$tmp/upkeep" ./cmd/upkeep
"$tmp/upkeep" keys init --dir "$tmp/keys" >/dev/null
"$tmp/upkeep" serve --addr 127.0.0.1:0 --data "$tmp/data" --keys "$tmp/keys" --poll-seconds 1 >"$tmp/serve.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q 'operator token' "$tmp/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^upkeep serving on //p' "$tmp/serve.out")
export UPKEEP_SERVER=$url UPKEEP_TOKEN=$(sed -n 's/^operator token (shown once, keep it): //p' "$tmp/serve.out")

head -c 1048576 /dev/urandom >"$tmp/fw-1.0.0.img"
head -c $((size_mib * 1048576)) /dev/urandom >"$tmp/fw-1.0.1.img"
pub() { "$tmp/upkeep" release publish --product p --hardware h --version "$1" --security-version "$2" --key "$tmp/keys/targets.key" "$tmp/fw-$1.img" >/dev/null; }
pub 1.0.0 1
pub 1.0.1 2
mkdir -p "$tmp/dev/slots" && cp "$tmp/fw-1.0.0.img" "$tmp/dev/slots/slot-a.img"
"$tmp/upkeep-agent" enroll --state "$tmp/dev" --server "$url" --token "$("$tmp/upkeep" enroll-token)" --serial S1 --product p \
  --hardware h --image-root "$tmp/keys/root.json" --director-root "$tmp/keys/director-root.json" \
  --installed-target p/1.0.0/fw-1.0.0.img --installed-version 1.0.0 --installed-security-version 1 >/dev/null
"$tmp/upkeep-agent" run --state "$tmp/dev" --poll 1s 2>"$tmp/agent.log" &
agent=$!
pids+=($agent)
sleep 4
idle=$(awk '/^VmRSS/ {print $2}' /proc/$agent/status)
idle_hwm=$(awk '/^VmHWM/ {print $2}' /proc/$agent/status)
id=$("$tmp/upkeep" devices list --json | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
"$tmp/upkeep" deploy --release p@1.0.1 --device "$id" >/dev/null
for _ in $(seq 600); do
  "$tmp/upkeep-agent" status --state "$tmp/dev" | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["installed"]["version"]=="1.0.1" and s["phase"]=="idle" else 1)' && break
  sleep 0.5
done
peak=$(awk '/^VmHWM/ {print $2}' /proc/$agent/status)
"$tmp/upkeep" devices events "$id" >"$tmp/events"
start=$(awk '$3=="download" && $4=="started" {print $1}' "$tmp/events" | head -1)
done_=$(awk '$3=="download" && $4=="ok" {print $1}' "$tmp/events" | head -1)
# Event times have one-second resolution; the agent log has the exact ones.
t0=$(grep -m1 '"step":"download","status":"started"' "$tmp/agent.log" | sed -n 's/.*"time":"\([^"]*\)".*/\1/p')
t1=$(grep -m1 '"step":"download","status":"ok"' "$tmp/agent.log" | sed -n 's/.*"time":"\([^"]*\)".*/\1/p')
secs=$(python3 -c "from datetime import datetime as d; f=lambda s: d.fromisoformat(s[:26]+s[-6:] if '+' in s[-6:] else s[:26]); print((f('$t1')-f('$t0')).total_seconds())" 2>/dev/null || echo "?")
s0=$(date +%s.%N); sha256sum "$tmp/fw-1.0.1.img" >/dev/null; s1=$(date +%s.%N)
ref=$(python3 -c "print(round($s1-$s0,3))")
echo "image_mib=$size_mib idle_rss_kb=$idle idle_hwm_kb=$idle_hwm peak_rss_kb=$peak peak_minus_idle_kb=$((peak - idle))"
echo "download_hash_write_s=$secs sha256sum_s=$ref (events: $start .. $done_)"
python3 -c "s='$secs'; r=$ref; print('throughput_ratio_vs_sha256sum=%.2f' % (r/float(s)) if s not in ('?','') else 'ratio unavailable')"
