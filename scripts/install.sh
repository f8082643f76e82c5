#!/usr/bin/env bash
# Installs mailfs: the binary into $PREFIX/bin (default /usr/local), its manual pages
# (generated from the same clap definitions as --help) into $PREFIX/share/man/man1, and
# bash, zsh and fish completions. DESTDIR=DIR stages everything under DIR (packaging);
# MAILFS_BIN=PATH installs that binary instead of building a release one.
#
# No /sbin/mount.fuse.mailfs is needed: for `mount -t fuse.mailfs` and fstab lines,
# mount.fuse3 (package fuse3) runs `mailfs` through /bin/sh, and mount(8) clears PATH, so
# the shell's default path (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
# finds $PREFIX/bin/mailfs for the default PREFIX. With another PREFIX, link it into one
# of those directories.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
bin=${MAILFS_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin="${CARGO_TARGET_DIR:-target}/release/mailfs"
fi

install -d "$dest$prefix/bin" "$dest$prefix/share/man/man1" \
    "$dest$prefix/share/bash-completion/completions" \
    "$dest$prefix/share/zsh/site-functions" \
    "$dest$prefix/share/fish/vendor_completions.d"
install -m 755 "$bin" "$dest$prefix/bin/mailfs"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" man --dir "$tmp"
install -m 644 "$tmp"/*.1 "$dest$prefix/share/man/man1/"
"$bin" completions bash >"$dest$prefix/share/bash-completion/completions/mailfs"
"$bin" completions zsh >"$dest$prefix/share/zsh/site-functions/_mailfs"
"$bin" completions fish >"$dest$prefix/share/fish/vendor_completions.d/mailfs.fish"

echo "installed mailfs into $dest$prefix (binary, manual pages, completions)"
if [ -z "$dest" ] && ! command -v mount.fuse3 >/dev/null 2>&1 && [ ! -x /sbin/mount.fuse3 ]; then
    echo "note: mount -t fuse.mailfs and fstab lines need mount.fuse3 (apt-get install fuse3)"
fi
