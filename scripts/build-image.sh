#!/usr/bin/env bash
# Builds the server's container image without a Docker daemon or a base image from a registry:
# one layer (the static upkeep binary, Debian's CA bundle, passwd/group entries for the upkeep
# user 65532, the data and keys folders) on an empty OCI base, assembled with crane through a
# throw-away registry on loopback, and written as a tarball that `docker load` and
# `podman load` read.
# Usage: scripts/build-image.sh OUT.tar [VERSION]
#   VERSION (default: as scripts/build-debs.sh, or 0.0.0) tags the image upkeep:VERSION
#   (IMAGE=name:tag overrides the whole reference). GOARCH (default: the host's) picks the
#   architecture.
# Needs crane on PATH, or CRANE=/path/to/crane
#   (go install github.com/google/go-containerregistry/cmd/crane@v0.22.1), GNU tar, and
#   /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates; CA_BUNDLE overrides).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: scripts/build-image.sh OUT.tar [VERSION]}
version=${2:-}
if [ -z "$version" ]; then
  version=$(git -C "$repo" describe --tags --match 'v[0-9]*' 2>/dev/null || true)
  version=${version#v}
  version=${version:-0.0.0}
fi
image=${IMAGE:-upkeep:$version}
crane=${CRANE:-$(command -v crane || true)}
[ -n "$crane" ] || { echo "build-image: crane not found (set CRANE or put it on PATH)" >&2; exit 2; }
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] || { echo "build-image: no CA bundle at $ca (apt-get install ca-certificates)" >&2; exit 2; }
goarch=${GOARCH:-$(go env GOARCH)}
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
# Layer timestamps: the commit's time, so the same commit gives the same layer.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}

work=$(mktemp -d)
regpid=
cleanup() { [ -z "$regpid" ] || kill "$regpid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The root filesystem of the layer.
root=$work/root
mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/etc/upkeep/keys" "$root/var/lib/upkeep" "$root/tmp"
(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOFLAGS=${GOFLAGS:--buildvcs=false} \
  go build -trimpath -ldflags='-s -w' -o "$root/usr/bin/upkeep" ./cmd/upkeep)
cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nupkeep:x:65532:65532:upkeep:/var/lib/upkeep:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nupkeep:x:65532:\n' >"$root/etc/group"
chmod 0755 "$root/usr/bin/upkeep" "$root/etc/upkeep"
chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt" "$root/etc/passwd" "$root/etc/group"
chmod 0700 "$root/etc/upkeep/keys" "$root/var/lib/upkeep"
chmod 1777 "$root/tmp"
# Everything root-owned but the two folders the server writes, owned by upkeep (65532).
layer=$work/layer.tar
(cd "$root" && find . -mindepth 1 \( -path ./var/lib/upkeep -o -path ./etc/upkeep/keys \) -prune -o -print \
  | sed 's|^\./||' | LC_ALL=C sort >"$work/files")
tar -C "$root" -cf "$layer" --no-recursion --numeric-owner --owner=0 --group=0 --mtime="@$epoch" -T "$work/files"
tar -C "$root" -rf "$layer" --no-recursion --numeric-owner --owner=65532 --group=65532 --mtime="@$epoch" \
  var/lib/upkeep etc/upkeep/keys

# A registry on loopback, in memory, for crane mutate (which reads its input from a registry).
"$crane" registry serve --address 127.0.0.1:0 2>"$work/registry.log" &
regpid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "build-image: crane registry did not start:" >&2; cat "$work/registry.log" >&2; exit 1; }
tmpref=127.0.0.1:$port/upkeep:build

"$crane" append --oci-empty-base -f "$layer" -t "$tmpref" >/dev/null 2>"$work/append.log" \
  || { echo "build-image: crane append failed:" >&2; cat "$work/append.log" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
"$crane" mutate "$tmpref" \
  --set-platform "linux/$goarch" \
  --entrypoint /usr/bin/upkeep --cmd serve \
  --user 65532:65532 --workdir /var/lib/upkeep \
  --exposed-ports 8080/tcp \
  -e UPKEEP_ADDR=0.0.0.0:8080 -e UPKEEP_DATA=/var/lib/upkeep/data -e UPKEEP_KEYS=/etc/upkeep/keys \
  -e SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  -l org.opencontainers.image.title=upkeep \
  -l "org.opencontainers.image.description=Upkeep secure IoT update server" \
  -l "org.opencontainers.image.version=$version" \
  -l "org.opencontainers.image.revision=$revision" \
  -l org.opencontainers.image.url=https://upkeep.dev \
  -t "$image" -o "$out"
"$crane" validate --tarball "$out" >/dev/null
echo "$out: $image ($(du -h "$out" | cut -f1))"
