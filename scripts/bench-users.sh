#!/usr/bin/env bash
# A multi-user tree benchmark (issue 19): N users under /srv-like `%2.256Nu/%u`, mixed
# formats (Maildir, sdbox, mdbox in turn), 3 messages each, mounted as one template.
#
#   scripts/bench-users.sh [--users N] [--store-dir DIR] [--samples K]
#
# Measures: the daemon's RSS at mount; the first and a second `ls` of the mount root;
# listing every user's INBOX (`scandir` + `lstat` of every entry, one Python process); the
# RSS after it, with the targets watched and inodes the kernel holds then; `ls -l INBOX`
# of K sample users in the tree against a single-user mount of the same user's store.
# Prints a Markdown table. The users are copies of three stores a
# private Dovecot made (one per format), cached in --store-dir while N matches.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=lib/dovecot.sh
. scripts/lib/dovecot.sh

users=10000
store_dir=${TMPDIR:-/tmp}/mailfs-bench-users
samples=20
while [ $# -gt 0 ]; do
    case $1 in
    --users) users=$2 && shift 2 ;;
    --store-dir) store_dir=$2 && shift 2 ;;
    --samples) samples=$2 && shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) echo "bench-users.sh: unknown option $1" >&2 && exit 2 ;;
    esac
done
[[ $users =~ ^[1-9][0-9]*$ ]] || { echo "--users needs a positive integer" >&2 && exit 2; }
log() { echo "== $*" >&2; }
now_us() { echo "${EPOCHREALTIME/./}"; }

log "cargo build --release"
cargo build --release >&2
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target_dir/release/mailfs

tree=$store_dir/users-$users
if [ ! -f "$tree/done" ]; then
    log "making $users users in $tree (templates by a private Dovecot)"
    rm -rf "$tree"
    mkdir -p "$tree"
    dv=$tree/dovecot
    dovecot_start "$dv" "maildir:$dv/home/%u/mail"
    trap dovecot_stop EXIT
    for f in maildir sdbox mdbox; do
        dovecot_user "t$f"
        loc=$f:$dv/home/t$f/mail
        for i in 1 2 3; do
            printf 'From: a@example.org\nTo: t@example.org\nSubject: message %s\nDate: Mon, 7 Dec 2026 10:0%s:00 +0000\nMessage-ID: <%s.%s@bench>\n\nbody %s\n' \
                "$i" "$i" "$f" "$i" "$i" | dovecot_adm -o "mail_location=$loc" save -u "t$f" -m INBOX
        done
        # Fill the cache as a client would.
        dovecot_adm -o "mail_location=$loc" fetch -u "t$f" \
            'guid date.received date.saved size.physical size.virtual' mailbox INBOX all >/dev/null
    done
    dovecot_stop
    trap - EXIT
    # %2.256Nu: the first 8 bytes of MD5(user), big-endian, modulo 256, as 2 hex digits
    # (Dovecot's var-expand N modifier; src/location/template.rs).
    python3 - "$users" "$tree/srv" "$dv/home" <<'PY'
import hashlib, os, shutil, sys
n, root, homes = int(sys.argv[1]), sys.argv[2], sys.argv[3]
fmts = ["maildir", "sdbox", "mdbox"]
for i in range(n):
    u = f"u{i:05d}"
    b = int.from_bytes(hashlib.md5(u.encode()).digest()[:8], "big") % 256
    shutil.copytree(f"{homes}/t{fmts[i % 3]}/mail", os.path.join(root, f"{b:02x}", u), symlinks=True)
PY
    touch "$tree/done"
fi

mp=$tree/mnt
mp1=$tree/mnt1
mkdir -p "$mp" "$mp1"
pid=""
cleanup() {
    fusermount3 -u "$mp" 2>/dev/null || true
    fusermount3 -u "$mp1" 2>/dev/null || true
}
trap cleanup EXIT
mount_wait() { # LOCATION MP: mounts, sets pid
    "$bin" mount "$1" "$2" 2>>"$tree/mailfs.log" &
    pid=$!
    for _ in $(seq 1000); do mountpoint -q "$2" && return 0; sleep 0.01; done
    echo "mailfs did not mount $1" >&2
    exit 1
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "mount the tree"
mount_wait "$tree/srv/%2.256Nu/%u" "$mp"
tree_pid=$pid
rss0=$(rss_kb "$tree_pid")
t0=$(now_us)
n_root=$(ls "$mp" | wc -l)
t1=$(now_us)
ls "$mp" >/dev/null
t2=$(now_us)
first_ls=$(ms "$t0" "$t1")
second_ls=$(ms "$t1" "$t2")
log "list every user's INBOX"
t0=$(now_us)
listed=$(python3 - "$mp" <<'PY'
import os, sys
mp, n = sys.argv[1], 0
for u in sorted(os.listdir(mp)):
    for e in os.scandir(os.path.join(mp, u, "INBOX")):
        e.stat(follow_symlinks=False)
        n += 1
print(n)
PY
)
t1=$(now_us)
list_all=$(ms "$t0" "$t1")
rss1=$(rss_kb "$tree_pid")
# What the kernel still holds then (the RSS is only comparable with everything held: a
# drop_caches elsewhere makes the kernel forget directories, and mailfs lets them go).
status=$(getfattr --only-values -n user.mailfs.status "$mp" 2>/dev/null || true)
held_targets=$(sed -n 's/^watched_targets: //p' <<<"$status")
held_inodes=$(sed -n 's/^inodes_held: //p' <<<"$status")
log "ls -l INBOX of $samples users: in the tree and in a single-user mount"
step=$((users / samples > 0 ? users / samples : 1))
in_tree=() single=()
for ((i = 0; i < users && ${#in_tree[@]} < samples; i += step)); do
    u=$(printf 'u%05d' "$i")
    ls -l "$mp/$u/INBOX" >/dev/null # the user's store opened, as in the single mount below
    t0=$(now_us)
    ls -l "$mp/$u/INBOX" >/dev/null
    t1=$(now_us)
    in_tree+=("$(ms "$t0" "$t1")")
    mount_wait "$(ls -d "$tree"/srv/*/"$u")" "$mp1"
    ls -l "$mp1/INBOX" >/dev/null
    t0=$(now_us)
    ls -l "$mp1/INBOX" >/dev/null
    t1=$(now_us)
    single+=("$(ms "$t0" "$t1")")
    fusermount3 -u "$mp1"
    wait "$pid" || true
done
fusermount3 -u "$mp"
wait "$tree_pid" || true

cat <<EOF
Users tree: $users users (\`%2.256Nu/%u\`, Maildir/sdbox/mdbox in turn, 3 messages each),
commit $(git -C "$repo" describe --always --dirty --abbrev=12), load $(cut -d' ' -f1-3 /proc/loadavg).

| measurement | value | target |
|---|---:|---|
| entries in the mount root | $n_root | |
| first \`ls\` of the root (ms) | $first_ls | < 100 |
| second \`ls\` of the root (ms) | $second_ls | |
| listing every user's INBOX, $listed messages (ms) | $list_all | |
| daemon RSS at mount (MiB) | $(awk -v k="$rss0" 'BEGIN { printf "%.1f", k / 1024 }') | |
| daemon RSS after listing every INBOX (MiB) | $(awk -v k="$rss1" 'BEGIN { printf "%.1f", k / 1024 }') | < 32 |
| then: targets watched / inodes the kernel holds | ${held_targets:-?} / ${held_inodes:-?} | |
| \`ls -l INBOX\` in the tree, median of ${#in_tree[@]} users (ms) | $(printf '%s\n' "${in_tree[@]}" | median) | as a single-user mount |
| \`ls -l INBOX\` in a single-user mount of the same users (ms) | $(printf '%s\n' "${single[@]}" | median) | |
EOF
