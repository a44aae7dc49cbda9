#!/usr/bin/env bash
# delta-images.sh OUT — builds the image pairs `upkeep bench delta` measures, from Debian
# packages (bookworm, bookworm-updates and bookworm-security: this machine's archive holds the
# point release and the security update of many packages side by side).
#
#   OUT/v1.img, OUT/v2.img   ext4 root-file-system-like images (mkfs.ext4 -d, fixed UUID, hash
#                            seed and time, so a rebuild gives the same bytes), the same package
#                            set; v2 takes the newer version of a handful of packages, as a
#                            security update of a firmware does
#   OUT/small1, OUT/small2   libcrypto.so.3 of libssl3 at two versions (about 5 MB)
#   OUT/packages.txt         every package and version in each image
set -euo pipefail
out=${1:?usage: delta-images.sh OUT}
mkdir -p "$out/debs" && cd "$out"
# Packages at the same version in both images.
same=(perl-base
	libglib2.0-0 libxml2 libexpat1 zlib1g openssh-server
	openssh-client util-linux libblkid1 apt libapt-pkg6.0 ca-certificates coreutils bash
	busybox iproute2 e2fsprogs libnss3 libsqlite3-0 sqlite3 libgnutls30 libkrb5-3 dpkg
	tar gzip libpam-modules)
# Packages updated in v2 (older version in v1, newest in v2).
updated=(libssl3 openssl libc6 libc-bin systemd libsystemd0 libudev1 curl libcurl4 tzdata)
apt-cache madison "${same[@]}" "${updated[@]}" >madison.txt
vers() { awk -v p="$1" '$1 == p {print $3}' madison.txt | sort -uV; }
: >packages.txt
deb() { # name version: the downloaded .deb of that version
	local f
	for f in debs/"$1"_*.deb; do
		[ -e "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$2" ] && { echo "$f"; return; }
	done
	true
}
fetch() { # name version
	if [ -z "$(deb "$1" "$2")" ]; then (cd debs && apt-get download -q "$1=$2" >/dev/null 2>&1); fi
}
for p in "${same[@]}"; do v=$(vers "$p" | tail -1); fetch "$p" "$v"; echo "both $p $v" >>packages.txt; done
for p in "${updated[@]}"; do
	v1=$(vers "$p" | head -1); v2=$(vers "$p" | tail -1)
	fetch "$p" "$v1"; fetch "$p" "$v2"; echo "v1 $p $v1" >>packages.txt; echo "v2 $p $v2" >>packages.txt
done
build() { # which
	local root=root-$1
	rm -rf "$root" && mkdir "$root"
	for p in "${same[@]}"; do dpkg-deb -x "$(deb "$p" "$(vers "$p" | tail -1)")" "$root"; done
	for p in "${updated[@]}"; do
		if [ "$1" = v1 ]; then v=$(vers "$p" | head -1); else v=$(vers "$p" | tail -1); fi
		dpkg-deb -x "$(deb "$p" "$v")" "$root"
	done
	rm -f "$1.img"
	E2FSPROGS_FAKE_TIME=1767225600 mkfs.ext4 -q -F -b 4096 -L rootfs -U 6e0a3a62-43b1-4c7c-9a0e-3b8f5e6a0001 \
		-E hash_seed=6e0a3a62-43b1-4c7c-9a0e-3b8f5e6a0002,root_owner=0:0,lazy_itable_init=0,nodiscard \
		-d "$root" "$1.img" 160M
}
build v1
build v2
# the small pair: one binary of one package at two versions
for v in 1 2; do
	if [ $v = 1 ]; then ver=$(vers libssl3 | head -1); else ver=$(vers libssl3 | tail -1); fi
	rm -rf s && mkdir s && dpkg-deb -x "$(deb libssl3 "$ver")" s
	cp s/usr/lib/x86_64-linux-gnu/libcrypto.so.3 small$v && echo "small$v libssl3 $ver usr/lib/x86_64-linux-gnu/libcrypto.so.3" >>packages.txt
done
rm -rf s
du -sh root-v1 root-v2 >>packages.txt
ls -l v1.img v2.img small1 small2
