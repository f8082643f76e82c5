#!/usr/bin/env bash
# Measures the index engine (not a test): builds a Maildir INBOX of N messages (default
# 100,000) with a private Dovecot, then runs examples/index_refresh.rs (release build),
# which times a full load of the index, delivers ONE message with `doveadm save`, times
# the incremental refresh and a full reopen, and prints memory per message.
#
#   scripts/index-bench.sh [N]
#
# The messages are written straight into the Maildir's cur/ and Dovecot's first sync
# (`doveadm mailbox status`) gives them UIDs and writes the index: much faster than
# `doveadm save` or `import` of each message. MAILFS_KEEP_TMP=1 keeps the store.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/dovecot.sh
. scripts/lib/dovecot.sh

n=${1:-100000}
work=$(mktemp -d "${TMPDIR:-/tmp}/mailfs-bench.XXXXXX")
chmod 755 "$work"
cleanup() {
    dovecot_stop
    if [ "${MAILFS_KEEP_TMP:-}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

echo "== building the example (release)"
cargo build --release --quiet --example index_refresh

echo "== private Dovecot in $work"
dovecot_start "$work/dovecot"
dovecot_user bench
maildir=$DOVECOT_DIR/home/bench/Maildir
mkdir -p "$maildir/cur" "$maildir/new" "$maildir/tmp"

echo "== writing $n messages into $maildir/cur"
start=$(date +%s.%N)
awk -v n="$n" -v dir="$maildir/cur" 'BEGIN {
    for (i = 1; i <= n; i++) {
        flags = (i % 3 == 0) ? "S" : ((i % 7 == 0) ? "FS" : "")
        f = sprintf("%s/%d.M%dP1.bench:2,%s", dir, 1700000000 + i, i, flags)
        printf "From: Sender %d <s%d@example.org>\nTo: bench@example.com\n", i, i > f
        printf "Subject: Bench message %d\nMessage-ID: <%d@bench>\n\nBody %d.\n", i, i, i > f
        close(f)
    }
}'
chown -R "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$DOVECOT_DIR/home/bench"
echo "   $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s"

echo "== first sync (UIDs and the index)"
start=$(date +%s.%N)
dovecot_adm mailbox status -u bench 'messages uidnext' INBOX
echo "   $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s"

# Steady state: the first save after the sync introduces the cache extension (which
# touches every record once), so save one message first; then a flag change with a forced
# index write, so that dovecot.index exists, as a long-running Dovecot would have it.
printf 'From: warm@example.org\nSubject: Warm-up\n\nHello.\n' |
    dovecot_adm save -u bench -m INBOX
dovecot_adm -o mail_index_rewrite_max_log_bytes=1 flags add -u bench '\Flagged' mailbox INBOX uid 1
ls -l "$maildir"/dovecot.index*

printf 'From: one@example.org\nSubject: The one new message\n\nHello.\n' >"$work/one.eml"
echo "== measuring"
target/release/examples/index_refresh "$maildir" \
    --deliver "doveadm -c '$DOVECOT_CONF' save -u bench -m INBOX < '$work/one.eml'"
