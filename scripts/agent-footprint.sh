#!/usr/bin/env bash
# Measures upkeep-agent's stripped size and idle RSS next to Debian's mender and rauc, measured
# the same way in the same run (scripts/agent-footprint-ref.sh).
# Usage: scripts/agent-footprint.sh   (root; installs mender-client and rauc if missing)
#   IDLE_SECS=N   seconds the agents idle before they are measured (default 5)
#   FOOTPRINT_REF=0   measure upkeep-agent only, without the mender/rauc reference (no apt-get)
#   PUSH=0   measure without the push connection (default: with it, through a Mosquitto with the
#            dynamic-security plugin that this script starts on a free port, when installed)
# The agent runs with the simulated boot loader (--boot sim) and file slots in its state folder.
set -uo pipefail
cd "$(dirname "$0")/.."
IDLE_SECS=${IDLE_SECS:-5}
FOOTPRINT_REF=${FOOTPRINT_REF:-1}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

go build -trimpath -ldflags='-s -w' -o "$tmp/upkeep-agent" ./cmd/upkeep-agent || exit 1
go build -o "$tmp/upkeep" ./cmd/upkeep || exit 1
size=$(stat -c %s "$tmp/upkeep-agent")

"$tmp/upkeep" keys init --dir "$tmp/keys" >/dev/null
PUSH=${PUSH:-1}
mqtt=()
if [ "$PUSH" != 0 ] && [ -x /usr/sbin/mosquitto ] && command -v mosquitto_ctrl >/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mosquitto_ctrl dynsec init "$tmp/dynsec.json" upkeep-admin footprint-pw >/dev/null
  printf 'per_listener_settings true\npersistence false\nlistener %s 127.0.0.1\nallow_anonymous false\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file %s\n' \
    "$port" "$tmp/dynsec.json" >"$tmp/mosquitto.conf"
  [ "$(id -u)" = 0 ] && echo 'user root' >>"$tmp/mosquitto.conf"
  /usr/sbin/mosquitto -c "$tmp/mosquitto.conf" 2>"$tmp/mosquitto.log" &
  pids+=($!)
  sleep 0.5
  mqtt=(--mqtt-url "tcp://127.0.0.1:$port" --mqtt-user upkeep-admin)
  export UPKEEP_MQTT_PASSWORD=footprint-pw
elif [ "$PUSH" != 0 ]; then
  echo "agent-footprint: mosquitto not installed: measuring without push" >&2
fi
"$tmp/upkeep" serve --addr 127.0.0.1:0 --data "$tmp/data" --keys "$tmp/keys" "${mqtt[@]}" >"$tmp/serve.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q '^upkeep serving on ' "$tmp/serve.out" && break; sleep 0.1; done
url=$(sed -n 's/^upkeep serving on //p' "$tmp/serve.out")
token=$(sed -n 's/^operator token (shown once, keep it): //p' "$tmp/serve.out")
[ -n "$url" ] && [ -n "$token" ] || { echo "agent-footprint: upkeep serve did not start" >&2; exit 1; }
enroll=$("$tmp/upkeep" --server "$url" --token "$token" enroll-token) || exit 1
mkdir -p "$tmp/dev/slots" && head -c 1048576 /dev/urandom >"$tmp/dev/slots/slot-a.img"
"$tmp/upkeep-agent" enroll --state "$tmp/dev" --server "$url" --token "$enroll" --serial S1 --product p \
  --hardware h --image-root "$tmp/keys/root.json" --director-root "$tmp/keys/director-root.json" \
  --installed-version 1.0.0 >/dev/null || exit 1
"$tmp/upkeep-agent" run --state "$tmp/dev" --boot sim --poll 2s 2>"$tmp/agent.log" &
agent=$!
pids+=($agent)
sleep "$IDLE_SECS"
if ! kill -0 "$agent" 2>/dev/null; then
  echo "agent-footprint: upkeep-agent run exited:" >&2; tail -n 5 "$tmp/agent.log" >&2; exit 1
fi
rss=$(awk '/^VmRSS/ {print $2}' /proc/$agent/status)
anon=$(awk '/^RssAnon/ {print $2}' /proc/$agent/status)
push=$("$tmp/upkeep-agent" status --state "$tmp/dev" | sed -n 's/^  "push": "\([^"]*\)".*/\1/p')
echo "upkeep-agent stripped_bytes=$size idle_rss_kb=$rss rss_anon_kb=$anon push=${push:-off} version=$(go version | awk '{print $3}')"
if [ "$FOOTPRINT_REF" != 0 ]; then
  IDLE_SECS=$IDLE_SECS bash scripts/agent-footprint-ref.sh
fi
