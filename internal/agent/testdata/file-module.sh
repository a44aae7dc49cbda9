#!/bin/sh
# An example update module: installs the image as one file ($TARGET_FILE, default
# $UPKEEP_WORKDIR/installed), keeping the previous file for rollback. Every step is idempotent.
set -eu
dst=${TARGET_FILE:-$UPKEEP_WORKDIR/installed}
case "$1" in
download) cp "$UPKEEP_IMAGE" "$UPKEEP_WORKDIR/new" ;;
install)
	if [ -f "$UPKEEP_WORKDIR/new" ]; then
		[ -f "$dst" ] && [ ! -f "$UPKEEP_WORKDIR/old" ] && cp "$dst" "$UPKEEP_WORKDIR/old"
		mv "$UPKEEP_WORKDIR/new" "$dst"
	fi ;;
needs-reboot) echo no ;;
outcome)
	if [ "$(sha256sum "$dst" | cut -d' ' -f1)" != "$UPKEEP_SHA256" ]; then echo previous
	elif [ -f "$UPKEEP_WORKDIR/old" ]; then echo trial
	else echo committed; fi ;;
commit) rm -f "$UPKEEP_WORKDIR/old" ;;
rollback)
	rm -f "$UPKEEP_WORKDIR/new"
	if [ -f "$UPKEEP_WORKDIR/old" ]; then mv "$UPKEEP_WORKDIR/old" "$dst"; fi ;;
*) exit 3 ;;
esac
