#!/usr/bin/env bash
# Measures how long a change Dovecot makes takes to become visible through a mailfs mount
# whose kernel caches are long (--attr-timeout 60 --entry-timeout 60), so that only the
# watcher's explicit invalidations can make it visible in time. Not a test.
#
#   scripts/staleness-bench.sh [--changes N] [--format maildir|sdbox|mdbox] [--seed S]
#       [--modes "inotify poll"] [--poll-interval S] [--bound-inotify-ms MS]
#       [--bound-margin-ms MS] [--cap S] [--probe-sleep-ms MS] [--include FILE.json]...
#       [--mix KIND=W,...] [--no-write] [--keep]
#
# For each mode (inotify, and poll every --poll-interval, default 0.1 s) it starts a fresh
# user in a private Dovecot, seeds five mailboxes, mounts the user's store with mailfs, and
# runs scripts/staleness_bench.py: ONE long-lived IMAP session (`doveadm exec imap`) makes
# N (default 10,000) random changes one at a time (APPEND, flag and keyword STORE +/-,
# UID EXPUNGE, CREATE, RENAME, DELETE; seeded), while the reader, which cached the old
# state first, probes the mount until each change is visible. The bound is
# --bound-inotify-ms (20) for inotify, poll interval + --bound-margin-ms (20) for poll;
# probes after the bound that still show the old state are "stale reads after the bound".
#
# Prints one table per mode (overall and per change kind) and writes them into
# docs/benchmarks.md between the staleness markers (other sections are kept), unless
# --no-write. MAILFS_KEEP_TMP=1 or --keep keeps the work directory (JSON, logs).
# --mix changes the mix of change kinds (default append=30,flags=24,keywords=12,expunge=22,
# create=4,rename=4,delete=4), e.g. to chase one kind. RUST_LOG is passed to mailfs.
# --include adds the results of an earlier run (its kept <mode>.json) to the report, e.g. to
# measure the modes one at a time: --modes inotify --keep, then --modes poll --include
# /tmp/mailfs-staleness.XXXXXX/inotify.json.
# Needs root (FUSE), dovecot-core, dovecot-imapd, fuse3 and python3 (3.11, stdlib only).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/dovecot.sh
. scripts/lib/dovecot.sh

changes=10000 format=maildir seed=1 modes="inotify poll" poll_interval=0.1
bound_inotify=20 margin=20 cap=3 probe_sleep=0.5 write=1 keep=${MAILFS_KEEP_TMP:-}
seed_messages=150
usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
included=()
mix=()
while [ $# -gt 0 ]; do
    case $1 in
        --changes) changes=$2; shift 2 ;;
        --format) format=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --poll-interval) poll_interval=$2; shift 2 ;;
        --bound-inotify-ms) bound_inotify=$2; shift 2 ;;
        --bound-margin-ms) margin=$2; shift 2 ;;
        --cap) cap=$2; shift 2 ;;
        --probe-sleep-ms) probe_sleep=$2; shift 2 ;;
        --seed-messages) seed_messages=$2; shift 2 ;;
        --include) included+=("$2"); shift 2 ;;
        --mix) mix=(--mix "$2"); shift 2 ;;
        --no-write) write=""; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage ;;
        *) echo "unknown argument $1" >&2; usage ;;
    esac
done
case $format in maildir | sdbox | mdbox) ;; *) echo "--format: maildir, sdbox or mdbox" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root (FUSE mounts, a private Dovecot)" >&2; exit 1; }
[ -x /usr/lib/dovecot/imap ] || { echo "needs dovecot-imapd (doveadm exec imap)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mailfs-staleness.XXXXXX")
chmod 755 "$work"
mnt=$work/mnt
mailfs_pid=""
cleanup() {
    local rc=$?
    if [ -n "$mailfs_pid" ]; then
        fusermount3 -u "$mnt" 2>/dev/null || true
        kill -TERM "$mailfs_pid" 2>/dev/null || true
        wait "$mailfs_pid" 2>/dev/null || true
    fi
    dovecot_stop
    if [ -n "$keep" ] || [ $rc != 0 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

echo "== building mailfs (release)"
cargo build --release --quiet --bin mailfs
mailfs=$PWD/target/release/mailfs

case $format in
    maildir) location="maildir:$work/dovecot/home/%u/Maildir" ;;
    *) location="$format:$work/dovecot/home/%u/$format" ;;
esac
echo "== private Dovecot in $work ($format)"
dovecot_start "$work/dovecot" "$location"
mkdir -p "$mnt"

started=$(date +%s)
jsons=()
for f in "${included[@]}"; do
    [ -s "$f" ] || { echo "--include: no results in $f" >&2; exit 2; }
    cp "$f" "$work/included-$(basename "$f")"
    jsons+=("$work/included-$(basename "$f")")
done
for mode in $modes; do
    user=bench-$mode
    dovecot_user "$user"
    store=${location//%u/$user}
    case $mode in
        inotify) watch=(--watch inotify); bound=$bound_inotify
            label="inotify" ;;
        poll) watch=(--watch poll --poll-interval "$poll_interval")
            bound=$(awk "BEGIN { print $poll_interval * 1000 + $margin }")
            label="poll ${poll_interval} s" ;;
        *) echo "unknown mode $mode (inotify, poll)" >&2; exit 2 ;;
    esac
    echo "== $label: seeding $seed_messages messages for $user"
    python3 scripts/staleness_bench.py seed --conf "$DOVECOT_CONF" --user "$user" \
        --messages "$seed_messages" --seed "$seed" --imap-log "$work/imap-$mode.log"
    "$mailfs" mount "$store" "$mnt" "${watch[@]}" --attr-timeout 60 --entry-timeout 60 \
        2>"$work/mailfs-$mode.log" &
    mailfs_pid=$!
    for _ in $(seq 1 100); do
        grep -q " $mnt fuse" /proc/mounts && break
        kill -0 "$mailfs_pid" 2>/dev/null || { cat "$work/mailfs-$mode.log" >&2; exit 1; }
        sleep 0.05
    done
    grep -q " $mnt fuse" /proc/mounts || { echo "mailfs did not mount" >&2; exit 1; }
    grep -h "polling\|watching\|caches" "$work/mailfs-$mode.log" | sed 's/^/   mailfs: /' || true
    echo "== $label: $changes changes, bound $bound ms"
    python3 scripts/staleness_bench.py run --conf "$DOVECOT_CONF" --user "$user" \
        --mount "$mnt" --label "$label" --out "$work/$mode.json" --changes "$changes" \
        --seed "$seed" --bound-ms "$bound" --cap-s "$cap" --probe-sleep-ms "$probe_sleep" \
        --imap-log "$work/imap-$mode.log" "${mix[@]}" \
        --meta "{\"format\": \"$format\", \"mode\": \"$mode\"}"
    jsons+=("$work/$mode.json")
    kill -TERM "$mailfs_pid"   # mailfs unmounts and exits 0
    wait "$mailfs_pid" || echo "mailfs exited with $?" >&2
    mailfs_pid=""
    if grep -q "WARN\|ERROR" "$work/mailfs-$mode.log"; then
        echo "   mailfs logged $(grep -c "WARN\|ERROR" "$work/mailfs-$mode.log") warnings/errors; distinct (first 5):"
        grep "WARN\|ERROR" "$work/mailfs-$mode.log" | sed 's/^\[[^]]*\] *//' | sed 's/[0-9][0-9]*/N/g' |
            sort | uniq -c | sort -rn | head -5 | cut -c1-220 | sed 's/^/   /' || true  # SIGPIPE
    fi
done
elapsed=$(($(date +%s) - started))

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
preamble="Written by \`scripts/staleness-bench.sh --changes $changes --format $format\` \
(seed $seed) at commit $rev on $(date -u +%Y-%m-%d), $(nproc) CPUs, shared with other \
work (numbers are noisy). One IMAP session (\`doveadm exec imap\`) makes the changes one \
at a time; before each, the reader caches the old state through the mount (stat of the \
names, directory listings, \`user.mail.flags\`); after the tagged OK it probes every \
${probe_sleep} ms until all show the new state (time to visible), then keeps probing past \
the bound: any probe after the bound still showing the old state is a stale read. Mounts \
use \`--attr-timeout 60 --entry-timeout 60\`, so only the watcher's invalidations make a \
change visible in time. Cap: ${cap} s (\"never visible\"). Changes$([ ${#mix[@]} = 0 ] || echo " (mix ${mix[1]})"): append = IMAP APPEND \
(new \`<uid>.eml\`, listing, flags xattr); flags / keywords = UID STORE +/-FLAGS of one \
system flag / keyword (\`user.mail.flags\`); expunge = UID EXPUNGE (name gone, listing); \
create / delete / rename = mailbox directory and its parent's listing. Total run time \
${elapsed} s$([ ${#included[@]} = 0 ] || echo " for the modes run now (${modes}); the other results come from an earlier run (--include)")."
args=(--title "Staleness ($format, $changes changes per mode)" --preamble "$preamble")
[ -z "$write" ] || args+=(--write docs/benchmarks.md)
python3 scripts/staleness_bench.py report "${args[@]}" "${jsons[@]}"
if [ -n "$keep" ]; then cp "${jsons[@]}" "$work/" 2>/dev/null || true; fi
