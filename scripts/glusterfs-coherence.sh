#!/usr/bin/env bash
# mailfs on real shared storage: a loopback GlusterFS volume mounted by two clients. Dovecot
# writes a Maildir++ store through client A; mailfs mounts the same store through client B
# (--watch auto, which must pick poll there: the script checks its log line; --poll-interval
# 1, --attr-timeout 60 --entry-timeout 60). For N seeded random changes made by one IMAP
# session (as scripts/staleness-bench.sh), it measures mailfs's time-to-visible and stale
# reads after the poll bound (interval + margin), and beside it GlusterFS's own staleness on
# client B for the same change (stat of the message file or mailbox directory Dovecot
# changed, names taken from client A). With --watch imap, mailfs hears of the changes from
# Dovecot instead (--watch imap://USER@127.0.0.1:PORT: the user's IMAP session on the server
# that writes the store, NOTIFY), with --poll-interval 3600, so nothing is polled; the bound
# is then the margin alone. Not a test.
#
#   scripts/glusterfs-coherence.sh [--changes N] [--dir DIR] [--poll-interval S]
#       [--watch poll|imap] [--margin-ms MS] [--cap S] [--probe-trials N] [--seed S]
#       [--no-write] [--keep]
#
#   --watch HOW        poll (default: --watch auto, which must choose poll) or imap
#   --changes N        changes to make (default 200)
#   --dir DIR          where the volume, its brick and the mounts live (default: a new
#                      directory under /tmp, removed at the end unless --keep)
#   --poll-interval S  mailfs --poll-interval (default 1)
#   --margin-ms MS     bound = interval + margin (default 1500: GlusterFS's FUSE client
#                      caches entries and attributes for 1 s, so mailfs's own stat of the
#                      store through B can be that late, plus slack)
#   --cap S            give a change up as never visible after S seconds (default 10)
#   --probe-trials N   also run /work/shared/scripts/glusterfs-staleness-probe.py (GlusterFS
#                      alone, between A and B) with N trials per scenario (default 3; 0: skip)
#   --no-write         do not write the "Shared storage (GlusterFS)" section of
#                      docs/benchmarks.md
#
# Dovecot on a clustered filesystem (Dovecot's docs on shared disks and NFS):
# mmap_disable = yes, mail_fsync = always, lock_method = fcntl. Its config, state and logs
# stay on local disk; only the mail is on GlusterFS. Everything is torn down at the end, also
# on error or Ctrl-C: mailfs, Dovecot, and the volume (glusterfs-loopback.sh down DIR).
# GLFS_* variables are passed to glusterfs-loopback.sh (e.g. GLFS_MOUNT_OPTS). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/dovecot.sh
. scripts/lib/dovecot.sh

changes=200 dir="" poll_interval=1 margin=1500 cap=10 probe_trials=3 seed=1 write=1 watch=poll
keep=${MAILFS_KEEP_TMP:-}
usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --changes) changes=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --poll-interval) poll_interval=$2; shift 2 ;;
        --watch) watch=$2; shift 2 ;;
        --margin-ms) margin=$2; shift 2 ;;
        --cap) cap=$2; shift 2 ;;
        --probe-trials) probe_trials=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --no-write) write=""; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage ;;
        *) echo "unknown argument $1" >&2; usage ;;
    esac
done
case $watch in
    poll) ;;
    imap) poll_interval=3600 ;;
    *) echo "--watch poll or imap" >&2; usage ;;
esac
[ "$(id -u)" = 0 ] || { echo "needs root (GlusterFS, FUSE mounts)" >&2; exit 1; }
[ -x /usr/lib/dovecot/imap ] || { echo "needs dovecot-imapd (doveadm exec imap)" >&2; exit 1; }
loopback=${GLFS_LOOPBACK:-/work/shared/scripts/glusterfs-loopback.sh}
probe=${GLFS_PROBE:-/work/shared/scripts/glusterfs-staleness-probe.py}
[ -x "$loopback" ] || { echo "$loopback not found" >&2; exit 1; }

script_start=$(date +%s)
made_dir=""
if [ -z "$dir" ]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/mailfs-glfs.XXXXXX")
    made_dir=1
fi
dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
work=$dir/work            # local: Dovecot's config, state and logs, results, mailfs mount
mkdir -p "$work"
chmod 755 "$dir" "$work"
mnt=$work/mnt
volume=$dir/volume        # glusterfs-loopback.sh's DIR
mailfs_pid=""
volume_up=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$mailfs_pid" ]; then
        kill -TERM "$mailfs_pid" 2>/dev/null || true
        wait "$mailfs_pid" 2>/dev/null || true
        fusermount3 -u "$mnt" 2>/dev/null || true
    fi
    dovecot_stop
    if [ -n "$volume_up" ]; then
        echo "== tearing down the GlusterFS volume"
        "$loopback" down "$volume" || echo "glusterfs-loopback.sh down failed" >&2
    fi
    if [ -n "$keep" ] || [ "$rc" != 0 ]; then
        echo "kept $dir" >&2
    elif [ -n "$made_dir" ]; then
        # Only what this script created; the volume is down and unmounted.
        if ! grep -qF " $volume/" /proc/mounts; then rm -rf "$dir"; fi
    fi
    echo "== done in $(($(date +%s) - script_start)) s (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building mailfs (release)"
cargo build --release --quiet --bin mailfs
mailfs=$PWD/target/release/mailfs

echo "== GlusterFS loopback volume in $volume"
volume_up=1   # from here on, tear down whatever `up` managed to start
mapfile -t mounts < <("$loopback" up "$volume")
[ "${#mounts[@]}" = 2 ] || { echo "glusterfs-loopback.sh up did not print two mounts" >&2; exit 1; }
A=${mounts[0]} B=${mounts[1]}
echo "   client A (Dovecot): $A"
echo "   client B (mailfs):  $B"
grep -E " ($A|$B) " /proc/mounts | sed 's/^/   /'

user=glfs
export DOVECOT_EXTRA="mmap_disable = yes
mail_fsync = always
lock_method = fcntl"
imap_port=""
if [ "$watch" = imap ]; then
    # Dovecot's own IMAP service on loopback, for mailfs's change feed (plaintext login on
    # loopback; the static passdb takes this password).
    imap_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export DOVECOT_PASSDB_ARGS="password=glfs-feed-secret"
    echo "glfs-feed-secret" >"$work/imap-password"
    chmod 600 "$work/imap-password"
    DOVECOT_EXTRA="$DOVECOT_EXTRA
protocols = imap
disable_plaintext_auth = no
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}"
fi
echo "== private Dovecot, mail on client A (mmap_disable, mail_fsync = always, lock_method = fcntl)"
dovecot_start "$work/dovecot" "maildir:$A/mail/%u/Maildir"
dovecot_user "$user"
mkdir -p "$A/mail/$user"
chown "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$A/mail" "$A/mail/$user"
python3 scripts/staleness_bench.py seed --conf "$DOVECOT_CONF" --user "$user" --messages 60 \
    --seed "$seed" --imap-log "$work/imap.log"

store_b=$B/mail/$user/Maildir
for _ in $(seq 1 100); do [ -d "$store_b/cur" ] && break; sleep 0.1; done
mkdir -p "$mnt"
if [ "$watch" = imap ]; then
    watch_args=(--watch "imap://$user@127.0.0.1:$imap_port" --password-file "$work/imap-password")
    watch_desc="--watch imap://$user@127.0.0.1:PORT --password-file FILE"
else
    watch_args=(--watch auto)
    watch_desc="--watch auto"
fi
echo "== mailfs mount of $store_b (client B): ${watch_args[*]} --poll-interval $poll_interval"
RUST_LOG=${RUST_LOG:-info} "$mailfs" mount "maildir:$store_b" "$mnt" "${watch_args[@]}" \
    --poll-interval "$poll_interval" --attr-timeout 60 --entry-timeout 60 2>"$work/mailfs.log" &
mailfs_pid=$!
for _ in $(seq 1 100); do
    grep -q " $mnt fuse" /proc/mounts && break
    kill -0 "$mailfs_pid" 2>/dev/null || { cat "$work/mailfs.log" >&2; exit 1; }
    sleep 0.05
done
grep -q " $mnt fuse" /proc/mounts || { echo "mailfs did not mount" >&2; exit 1; }
sed 's/^/   mailfs: /' "$work/mailfs.log"
if [ "$watch" = imap ]; then
    for _ in $(seq 1 100); do
        grep -q "NOTIFY set" "$work/mailfs.log" && break
        sleep 0.05
    done
    if ! grep -q "NOTIFY set" "$work/mailfs.log"; then
        echo "mailfs's IMAP change feed did not set NOTIFY" >&2
        exit 1
    fi
    auto_line=$(grep -m1 "NOTIFY set" "$work/mailfs.log" | sed 's/^\[[^]]*\] *//' | tr -s ' ')
    bound=$margin
    label="GlusterFS, --watch imap:// (NOTIFY)"
    section=glusterfs-imap
    heading="Shared storage (GlusterFS), changes heard over IMAP"
    echo "== $changes changes, bound $bound ms (the margin; nothing is polled)"
else
    if ! grep -q "polling the store every" "$work/mailfs.log"; then
        echo "mailfs --watch auto did not choose poll on GlusterFS" >&2
        exit 1
    fi
    auto_line=$(grep -m1 "inotify cannot see" "$work/mailfs.log" | sed 's/^\[[^]]*\] *//' | tr -s ' ')
    bound=$(awk "BEGIN { print $poll_interval * 1000 + $margin }")
    label="GlusterFS, poll $poll_interval s"
    section=glusterfs
    heading="Shared storage (GlusterFS)"
    echo "== $changes changes, bound $bound ms (poll interval + $margin ms)"
fi
run_start=$(date +%s)
python3 scripts/staleness_bench.py run --conf "$DOVECOT_CONF" --user "$user" --mount "$mnt" \
    --label "$label" --out "$work/glusterfs.json" \
    --changes "$changes" --seed "$seed" --bound-ms "$bound" --cap-s "$cap" \
    --probe-sleep-ms 2 --imap-log "$work/imap.log" \
    --raw-a "$A/mail/$user/Maildir" --raw-b "$store_b" \
    --meta "{\"format\": \"maildir\", \"mode\": \"glusterfs\"}"
run_secs=$(($(date +%s) - run_start))
kill -TERM "$mailfs_pid"
wait "$mailfs_pid" || echo "mailfs exited with $?" >&2
mailfs_pid=""
if grep -q "WARN\|ERROR" "$work/mailfs.log"; then
    echo "   mailfs logged $(grep -c "WARN\|ERROR" "$work/mailfs.log") warnings/errors; distinct (first 5):"
    grep "WARN\|ERROR" "$work/mailfs.log" | sed 's/^\[[^]]*\] *//' | sed 's/[0-9][0-9]*/N/g' |
        sort | uniq -c | sort -rn | head -5 | cut -c1-220 | sed 's/^/   /' || true  # SIGPIPE
fi
dovecot_stop

probe_text=""
if [ "$probe_trials" != 0 ] && [ -x "$probe" ]; then
    echo "== GlusterFS alone: $probe, $probe_trials trials per scenario"
    probe_dir=$A/probe
    mkdir -p "$probe_dir"
    probe_text=$(cd "$work" && python3 "$probe" "$probe_dir" "$B/probe" --trials "$probe_trials" --cap 5)
    echo "$probe_text"
fi

total=$(($(date +%s) - script_start))
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
preamble="Written by \`scripts/glusterfs-coherence.sh --changes $changes --watch $watch\` (seed $seed) at \
commit $rev on $(date -u +%Y-%m-%d), $(nproc) CPUs shared with other work. A loopback \
GlusterFS volume (\`glusterfs-loopback.sh\`, one brick, two FUSE clients, default client \
options); Dovecot writes a Maildir++ store through client A (\`mmap_disable = yes\`, \
\`mail_fsync = always\`, \`lock_method = fcntl\`); mailfs mounts it through client B with \
\`$watch_desc --poll-interval $poll_interval --attr-timeout 60 --entry-timeout 60\` \
(its log: \"$auto_line\"). Changes as in the staleness section (one IMAP session, the \
reader caches the old state first, probes every 2 ms); bound = $bound ms; \
cap $cap s. \"raw client B\": the same change seen by \`stat\` of the raw file or \
directory through client B (GlusterFS's own staleness; flags and keywords: the Maildir \
file's old name gone and new name there; n/a when the name did not change). The changes \
took $run_secs s; the whole script (volume up, Dovecot, seeding, changes, probe script, \
teardown) about $((total + 5)) s."
if [ -n "$probe_text" ]; then
    preamble="$preamble

GlusterFS alone (\`glusterfs-staleness-probe.py\`, $probe_trials trials per scenario: B \
caches the old state, A changes it, time until B sees it):

\`\`\`
$probe_text
\`\`\`"
fi
args=(--title "GlusterFS coherence ($changes changes)" --preamble "$preamble"
    --heading "$heading" --section "$section"
    --script scripts/glusterfs-coherence.sh)
[ -z "$write" ] || args+=(--write docs/benchmarks.md)
python3 scripts/staleness_bench.py report "${args[@]}" "$work/glusterfs.json"
