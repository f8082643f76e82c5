#!/usr/bin/env bash
# A tour of mailfs on the sample store (tests/fixtures/sample-maildir.tar): builds a release
# binary, mounts the store read-only in a temporary directory, browses it with ordinary
# tools, then unmounts with SIGTERM and cleans up. Without a usable /dev/fuse it shows the
# same through `mailfs ls` and `mailfs cat`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

echo "== cargo build --release"
cargo build --release
bin=$repo/target/release/mailfs

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

# try_mount: 0 once mounted; 1 (with the reason on stderr) if mailfs could not mount.
try_mount() {
    fuse_usable || { echo "/dev/fuse or fusermount3 is not usable here" >&2; return 1; }
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
