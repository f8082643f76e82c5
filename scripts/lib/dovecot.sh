# shellcheck shell=bash
# Shared helpers for scripts that need a private Dovecot (make-sample-store.sh, benchmarks).
# Source it, then:
#
#   dovecot_start DIR [MAIL_LOCATION]   # start a private master; config, logs and homes in DIR
#   dovecot_user NAME                   # create NAME's home (owned by the mail user)
#   dovecot_adm ARGS...                 # doveadm -c <private config> ARGS...
#   dovecot_stop                        # stop the master (also call it from an EXIT trap)
#
# The default MAIL_LOCATION is maildir:DIR/home/%u/Maildir. Settings in $DOVECOT_EXTRA (one
# per line) are appended to the config, after the defaults (e.g. mail_fsync = always). Dovecot refuses uid 0 as a mail
# user, so as root the mail user is 65534 (nobody/nogroup); otherwise it is the caller.
# The static passdb accepts any password unless $DOVECOT_PASSDB_ARGS replaces its args
# (e.g. password=SECRET, for a client that logs in over IMAP).
# Nothing here touches the system Dovecot or /etc/dovecot.

DOVECOT_DIR=""
DOVECOT_CONF=""
DOVECOT_PID=""
DOVECOT_MAIL_UID=""
DOVECOT_MAIL_GID=""

dovecot_bin() {
    command -v dovecot 2>/dev/null || { [ -x /usr/sbin/dovecot ] && echo /usr/sbin/dovecot; } ||
        { echo "dovecot not found (apt-get install dovecot-core)" >&2; return 1; }
}

dovecot_start() {
    local dir=$1 location=${2:-}
    local bin
    bin=$(dovecot_bin)
    mkdir -p "$dir/run" "$dir/state" "$dir/home"
    chmod 755 "$dir" "$dir/run" "$dir/state" "$dir/home"
    DOVECOT_DIR=$(cd "$dir" && pwd)
    DOVECOT_CONF=$DOVECOT_DIR/dovecot.conf
    [ -n "$location" ] || location="maildir:$DOVECOT_DIR/home/%u/Maildir"
    local extra=""
    if [ "$(id -u)" = 0 ]; then
        DOVECOT_MAIL_UID=65534 DOVECOT_MAIL_GID=65534
    else
        DOVECOT_MAIL_UID=$(id -u) DOVECOT_MAIL_GID=$(id -g)
        extra="default_internal_user = $(id -un)
default_internal_group = $(id -gn)
default_login_user = $(id -un)"
    fi
    cat >"$DOVECOT_CONF" <<EOF
base_dir = $DOVECOT_DIR/run
state_dir = $DOVECOT_DIR/state
log_path = $DOVECOT_DIR/dovecot.log
ssl = no
protocols =
first_valid_uid = 0
mail_fsync = never
mail_location = $location
userdb {
  driver = static
  args = uid=$DOVECOT_MAIL_UID gid=$DOVECOT_MAIL_GID home=$DOVECOT_DIR/home/%u
}
passdb {
  driver = static
  args = ${DOVECOT_PASSDB_ARGS:-nopassword=y}
}
namespace inbox {
  inbox = yes
  separator = /
}
$extra
${DOVECOT_EXTRA:-}
EOF
    "$bin" -F -c "$DOVECOT_CONF" >"$DOVECOT_DIR/master.out" 2>&1 &
    DOVECOT_PID=$!
    local i
    for i in $(seq 1 200); do
        [ -S "$DOVECOT_DIR/run/auth-userdb" ] && return 0
        if ! kill -0 "$DOVECOT_PID" 2>/dev/null; then
            echo "dovecot exited at start:" >&2
            cat "$DOVECOT_DIR/master.out" "$DOVECOT_DIR/dovecot.log" >&2 2>/dev/null || true
            DOVECOT_PID=""
            return 1
        fi
        sleep 0.05
    done
    echo "dovecot did not start listening within 10 s" >&2
    dovecot_stop
    return 1
}

dovecot_user() {
    local home=$DOVECOT_DIR/home/$1
    mkdir -p "$home"
    chown "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$home"
}

dovecot_adm() {
    doveadm -c "$DOVECOT_CONF" "$@"
}

dovecot_stop() {
    [ -n "$DOVECOT_PID" ] || return 0
    kill -TERM "$DOVECOT_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        kill -0 "$DOVECOT_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$DOVECOT_PID" 2>/dev/null || true
    wait "$DOVECOT_PID" 2>/dev/null || true
    DOVECOT_PID=""
}
