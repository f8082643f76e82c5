#!/usr/bin/env bash
# A tour of mailfs on the sample store (tests/fixtures/sample-maildir.tar): builds a release
# binary, mounts the store read-only in a temporary directory, browses it with ordinary
# tools, then unmounts with SIGTERM and cleans up. Installs fuse3 when it is missing and
# this runs as root (apt-get), else says what to install. Without a usable /dev/fuse it
# shows the same through `mailfs ls` and `mailfs cat`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# MAILFS_BIN=PATH: show that binary instead of building a release one.
bin=${MAILFS_BIN:-}
if [ -z "$bin" ]; then
    echo "== cargo build --release"
    cargo build --release
    bin=$repo/target/release/mailfs
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mailfs-demo.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if grep -qs " $work/mnt " /proc/self/mountinfo; then
        fusermount3 -uz "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/store" "$work/mnt"
tar -xf tests/fixtures/sample-maildir.tar -C "$work/store"
location="maildir:$work/store/Maildir"

# run CMD...: print it like a shell transcript, then run it in the mount.
run() {
    local shown="" a
    for a in "$@"; do
        case $a in *[[:space:]]*) shown+=" \"$a\"" ;; *) shown+=" $a" ;; esac
    done
    printf '\n$%s\n' "$shown"
    (cd "$work/mnt" && "$@")
}

show_xattrs() {
    local f=$1
    if command -v getfattr >/dev/null; then
        run getfattr -d "$f"
    elif command -v python3 >/dev/null; then
        printf '\n$ python3: os.listxattr / os.getxattr %s\n' "$f"
        (cd "$work/mnt" && python3 - "$f" <<'EOF'
import os, sys
path = sys.argv[1]
for name in os.listxattr(path):
    print(f'{name}="{os.getxattr(path, name).decode(errors="replace")}"')
EOF
        )
    else
        echo "(neither getfattr nor python3 is installed: skipping the xattrs)"
    fi
}

fuse_usable() {
    [ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ] && command -v fusermount3 >/dev/null
}

# ensure_fuse3: installs fuse3 (fusermount3, mount.fuse3) when it is missing and this runs
# as root with apt-get, as scripts/test.sh does; otherwise says what to install.
ensure_fuse3() {
    command -v fusermount3 >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== fuse3 is missing: apt-get install fuse3"
        apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y fuse3 >/dev/null \
            || echo "installing fuse3 failed" >&2
    else
        echo "fusermount3 is missing: install fuse3 to see the mount" >&2
        echo "  (sudo apt-get install fuse3, dnf install fuse3, pacman -S fuse3)" >&2
    fi
    command -v fusermount3 >/dev/null
}

# try_mount: 0 once mounted; 1 (with the reason on stderr) if mailfs could not mount.
try_mount() {
    ensure_fuse3 || return 1
    fuse_usable || {
        echo "/dev/fuse is not usable here (in a container: --device /dev/fuse --cap-add SYS_ADMIN)" >&2
        return 1
    }
    echo "== mailfs mount $location $work/mnt"
    "$bin" mount "$location" "$work/mnt" 2>"$work/mailfs.log" &
    pid=$!
    local parent_dev
    parent_dev=$(stat -c %d "$work")
    for _ in $(seq 1 200); do
        [ "$(stat -c %d "$work/mnt" 2>/dev/null || echo "$parent_dev")" != "$parent_dev" ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            pid=""
            echo "mailfs could not mount:" >&2
            cat "$work/mailfs.log" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "mailfs did not mount within 10 s:" >&2
    cat "$work/mailfs.log" >&2
    return 1
}

if try_mount; then
    run ls -R
    run ls -l INBOX
    run cat INBOX/1.eml
    run grep -rl "statement is ready" .
    show_xattrs INBOX/2.eml
    show_xattrs INBOX
    printf '\n$ touch INBOX/new.eml   # read-only\n'
    (cd "$work/mnt" && touch INBOX/new.eml) || true

    echo
    echo "== unmounting (SIGTERM)"
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    pid=""
    echo "mailfs exited with status $status"
    [ "$status" = 0 ] || { cat "$work/mailfs.log" >&2; exit 1; }
else
    echo "== no FUSE mount possible: showing the store with mailfs ls/cat instead"
    printf '\n$ mailfs ls %s\n' "$location"
    "$bin" ls "$location"
    printf '\n$ mailfs ls %s INBOX\n' "$location"
    "$bin" ls "$location" INBOX
    printf '\n$ mailfs cat %s INBOX 1\n' "$location"
    "$bin" cat "$location" INBOX 1
fi
