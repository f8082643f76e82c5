#!/usr/bin/env bash
# THE test command (README and .ci/run call exactly this): installs what the tests need if
# it is missing, then runs rustfmt, clippy and every test (unit + integration).
#
# The integration tests use real Dovecot as their oracle and real FUSE mounts. They start a
# private Dovecot of their own (never the system service, never /etc/dovecot), so the
# packages only have to be installed, not running. See tests/tests.rs for the variables
# MAILFS_TEST_SKIP_MISSING, MAILFS_KEEP_TMP and MAILFS_TEST_TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 dovecot-core dovecot-imapd rsync attr openssl xz-utils ca-certificates cyrus-common sasl2-bin python3
    man-db procps notmuch neomutt mblaze tmux)

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing() {
    have doveadm || return 0
    have dovecot || return 0
    have fusermount3 || return 0
    # `doveadm exec imap` (used to move mail from new/ to cur/) needs dovecot-imapd.
    [ -x /usr/lib/dovecot/imap ] || return 0
    # The write-mode tests restore mail with rsync and set flags with setfattr (attr).
    have rsync || return 0
    have setfattr || return 0
    # The IMAP TLS tests make a CA and a server certificate with openssl.
    have openssl || return 0
    # tests/compressed.rs compresses a Maildir message with xz (Dovecot 2.3 reads xz but
    # cannot write it).
    have xz || return 0
    # An IMAP server that is not Dovecot: Cyrus's master (cyrus-common; its imapd below)
    # and saslpasswd2 for its users.
    [ -x /usr/lib/cyrus/bin/master ] || return 0
    have saslpasswd2 || return 0
    # Python's imaplib is the Cyrus test's client and oracle.
    have python3 || return 0
    # The install test renders the generated manual pages with `man -l` (man-db, groff).
    have man || return 0
    # The mount(8) tests find the background daemon with pgrep (procps).
    have pgrep || return 0
    # Mail clients nobody here wrote, run against the mount (tests/clients.rs).
    have notmuch || return 0
    have neomutt || return 0
    have mscan || return 0
    have tmux || return 0
    return 1
}

if missing; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing ${packages[*]}"
        # Keep the package scripts from starting the system dovecot service: the tests run
        # their own private instance. (Also makes the install work without an init system.)
        policy=/usr/sbin/policy-rc.d
        added_policy=""
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            added_policy=1
        fi
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
        [ -z "$added_policy" ] || rm -f "$policy"
    else
        echo "The tests need Dovecot and FUSE. Install them with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
fi
# Cyrus's imapd (package cyrus-imapd) conflicts with dovecot-imapd ("imap-server"), which
# the tests need too: it is unpacked, not installed, where the Cyrus test looks for it.
cyrus_dir=/var/cache/mailfs-tests/cyrus-imapd
if [ ! -x "$cyrus_dir/usr/lib/cyrus/bin/imapd" ] && [ "$(id -u)" = 0 ]; then
    echo "== unpacking cyrus-imapd into $cyrus_dir"
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download cyrus-imapd >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get download cyrus-imapd; })
    mkdir -p "$cyrus_dir"
    chmod 755 /var/cache/mailfs-tests "$cyrus_dir"
    dpkg-deb -x "$tmp"/cyrus-imapd_*.deb "$cyrus_dir"
    rm -rf "$tmp"
fi

if ! { [ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ]; }; then
    echo "warning: /dev/fuse is missing or not usable: the mount tests will fail" >&2
    echo "  (in a container: --device /dev/fuse --cap-add SYS_ADMIN)" >&2
fi

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
        rustup component add "$component"
    fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
