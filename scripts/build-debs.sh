#!/usr/bin/env bash
# Builds upkeep and upkeep-agent and packs them as .deb packages with nfpm
# (packaging/nfpm-upkeep.yaml, packaging/nfpm-upkeep-agent.yaml).
# Usage: scripts/build-debs.sh OUTDIR [VERSION]
#   VERSION defaults to `git describe` of the last vX.Y.Z tag (v1.2.3-4-gabc1234 becomes
#   1.2.3+4.gabc1234), or 0.0.0 without one. GOARCH (default: the host's) picks the
#   architecture; the binaries are static (CGO_ENABLED=0: the SQLite driver is pure Go).
# Needs nfpm on PATH, or NFPM=/path/to/nfpm
#   (go install github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: scripts/build-debs.sh OUTDIR [VERSION]}
version=${2:-}
if [ -z "$version" ]; then
  version=$(git -C "$repo" describe --tags --match 'v[0-9]*' 2>/dev/null || true)
  version=${version#v}
  # 1.2.3-4-gabc1234 -> 1.2.3+4.gabc1234 (sorts after 1.2.3); a pre-release tag 1.2.3-rc1 ->
  # 1.2.3~rc1 (sorts before 1.2.3).
  rest=
  if [[ $version == *-*-g* ]]; then
    base=${version%-*-g*}; rest=${version#"$base"-}; rest=+${rest//-/.}
    version=$base
  fi
  version=${version//-/\~}$rest
  version=${version:-0.0.0}
fi
if ! [[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
  echo "build-debs: version '$version' is not a Debian version (digits first, no 'v')" >&2; exit 2
fi
nfpm=${NFPM:-$(command -v nfpm || true)}
[ -n "$nfpm" ] || { echo "build-debs: nfpm not found (set NFPM or put it on PATH)" >&2; exit 2; }
goarch=${GOARCH:-$(go env GOARCH)}

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin"
cp -r "$repo/packaging" "$stage/packaging"
for cmd in upkeep upkeep-agent; do
  (cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOFLAGS=${GOFLAGS:--buildvcs=false} \
    go build -trimpath -ldflags='-s -w' -o "$stage/bin/$cmd" "./cmd/$cmd")
done
for pkg in upkeep upkeep-agent; do
  (cd "$stage" && VERSION=$version GOARCH=$goarch \
    "$nfpm" package --config "packaging/nfpm-$pkg.yaml" --packager deb --target "$out/") >/dev/null
done
ls -1 "$out"/upkeep_"$version"_*.deb "$out"/upkeep-agent_"$version"_*.deb
