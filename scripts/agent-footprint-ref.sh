#!/usr/bin/env bash
# Reference footprint of Debian's update agents (mender-client, rauc):
# stripped binary size and idle RSS of the daemon, without systemd or hardware.
# Prints "<agent> stripped_bytes=N idle_rss_kb=N ..." or "<agent> unavailable reason=...".
# Always exits 0. Needs root for apt-get and for mender's private mount namespace.
set -uo pipefail

IDLE_SECS="${IDLE_SECS:-5}"
WORK="$(mktemp -d /tmp/agent-footprint.XXXXXX)" || { echo "agents unavailable reason=\"mktemp failed\""; exit 0; }
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
unavailable() { echo "$1 unavailable reason=\"$2\""; }
# Install the reference packages if missing (best effort).
for c in mender rauc dbus-daemon dbus-send strip; do command -v "$c" >/dev/null || MISSING=1; done
if [ -n "${MISSING:-}" ] && [ "$(id -u)" -eq 0 ]; then
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mender-client rauc dbus binutils; } \
    >"$WORK/apt.log" 2>&1 || { echo "note: apt-get install failed:" >&2; tail -n 3 "$WORK/apt.log" >&2; }
fi

stripped_bytes() {  # $1 = binary path
  cp "$1" "$WORK/$(basename "$1").strip" && strip "$WORK/$(basename "$1").strip" 2>/dev/null
  stat -c %s "$WORK/$(basename "$1").strip"
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
bus_has() { dbus-send --bus="$BUS" --print-reply --dest=org.freedesktop.DBus / \
  org.freedesktop.DBus.NameHasOwner "string:$1" 2>/dev/null | grep -q 'boolean true'; }

# One private bus, used as both "session" and "system" bus by the daemons.
BUS=""
if command -v dbus-daemon >/dev/null; then
  BUS="$(dbus-daemon --session --fork --print-address=1 --print-pid=3 3>"$WORK/dbus.pid")" \
    && PIDS+=("$(cat "$WORK/dbus.pid")") || BUS=""
fi

# Launch "$@" in background, wait IDLE_SECS, print the figures for agent $1 (bin $2, bus name $3).
measure() {
  local name="$1" bin="$2" busname="$3" pid sb rss anon extra=""; shift 3
  sb="$(stripped_bytes "$bin")" || { unavailable "$name" "strip failed"; return; }
  "$@" >"$WORK/$name.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  sleep "$IDLE_SECS"
  if ! kill -0 "$pid" 2>/dev/null; then
    unavailable "$name" "daemon exited: $(tail -n 1 "$WORK/$name.log" | tr '"' "'")"; return
  fi
  rss="$(status_kb "$pid" VmRSS)"; anon="$(status_kb "$pid" RssAnon)"
  bus_has "$busname" || extra=" note=no_dbus_name"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  echo "$name stripped_bytes=$sb idle_rss_kb=$rss rss_anon_kb=$anon version=$VER$extra"
}

# --- mender-client (Go, 3.4.x) ---
if ! command -v mender >/dev/null; then
  unavailable mender "mender-client not installed"
elif [ -z "$BUS" ]; then
  unavailable mender "no dbus-daemon for a private bus"
else
  VER="$(dpkg-query -W -f='${Version}' mender-client 2>/dev/null || echo unknown)"
  M="$WORK/mender"; mkdir -p "$M/data" "$M/etc" "$M/share"
  echo "device_type=test" >"$M/data/device_type"
  echo "artifact_name=footprint-ref" >"$M/etc/artifact_info"
  printf '{"ServerURL":"http://127.0.0.1:9","UpdatePollIntervalSeconds":1800,"InventoryPollIntervalSeconds":1800,"RetryPollIntervalSeconds":300}\n' >"$M/etc/mender.conf"
  cp -r /usr/share/mender/. "$M/share/" 2>/dev/null; mkdir -p "$M/share/identity"
  printf '#!/bin/sh\necho mac=02:00:00:00:00:01\n' >"$M/share/identity/mender-device-identity"
  chmod +x "$M/share/identity/mender-device-identity"
  MARGS=(--no-syslog -c /etc/mender/mender.conf -b "$M/none.conf" -d "$M/data" daemon)
  # artifact_info and the identity script have fixed paths (/etc/mender, /usr/share/mender):
  # bind-mount temp copies in a private mount namespace so the host stays untouched.
  if unshare -m true 2>/dev/null; then
    measure mender /usr/bin/mender io.mender.AuthenticationManager \
      env DBUS_SYSTEM_BUS_ADDRESS="$BUS" unshare -m --propagation private sh -c \
      'mount --bind "$1/etc" /etc/mender && mount --bind "$1/share" /usr/share/mender && shift && exec mender "$@"' \
      sh "$M" "${MARGS[@]}"
  else  # fallback: no artifact_info, daemon idles in its error/retry loop
    MARGS[2]="$M/etc/mender.conf"
    measure mender /usr/bin/mender io.mender.AuthenticationManager \
      env DBUS_SYSTEM_BUS_ADDRESS="$BUS" mender "${MARGS[@]}"
  fi
fi

# --- rauc (C/GLib, 1.8.x) ---
if ! command -v rauc >/dev/null; then
  unavailable rauc "rauc not installed"
elif [ -z "$BUS" ]; then
  unavailable rauc "no dbus-daemon for a private bus"
else
  VER="$(dpkg-query -W -f='${Version}' rauc 2>/dev/null || echo unknown)"
  R="$WORK/rauc"; mkdir -p "$R/data"
  truncate -s 1M "$R/slotA.img" "$R/slotB.img"
  cat >"$R/system.conf" <<EOF
[system]
compatible=footprint-ref
bootloader=noop
data-directory=$R/data

[slot.rootfs.0]
device=$R/slotA.img
type=raw
bootname=A

[slot.rootfs.1]
device=$R/slotB.img
type=raw
bootname=B
EOF
  measure rauc /usr/bin/rauc de.pengutronix.rauc \
    env DBUS_SESSION_BUS_ADDRESS="$BUS" DBUS_SYSTEM_BUS_ADDRESS="$BUS" DBUS_STARTER_BUS_TYPE=session \
    rauc -c "$R/system.conf" service --override-boot-slot=A
fi
exit 0
