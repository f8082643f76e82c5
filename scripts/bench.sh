#!/usr/bin/env bash
# Benchmarks mailfs (not a test) against the raw store and against doveadm, on one INBOX of
# N generated messages (default 20,000) stored as Maildir, sdbox and mdbox by a private,
# real Dovecot; writes the results as a Markdown table to docs/benchmarks.md (section
# "Latest run") and prints it. Run `scripts/bench.sh --help` for the options.
#
# What happens, in one run:
#  1. A deterministic generator (awk, own LCG, fixed seed) writes a Maildir of N messages:
#     mostly 2-20 KB text mails (log-uniform), 0.5 % of 100 KB-1 MB with a base64
#     attachment, 1 % containing the word $NEEDLE; received dates over two years.
#     `doveadm import` copies it into three users of a private Dovecot, one per format
#     (mail_location = %u:~/mail, the users are called maildir, sdbox and mdbox). The result
#     is cached in --store-dir and reused while the parameters match (--fresh rebuilds);
#     each run works on a copy, because the refresh measurement delivers messages and
#     doveadm writes its cache files.
#  2. `cargo build --release`; each store is mounted with target/release/mailfs in the
#     background and unmounted with SIGTERM (also on error and Ctrl-C).
#  3. Every measurement has one untimed warm-up run (page cache, Dovecot's cache file and
#     mailfs's views are warm; its output is checked: line counts, byte totals, match
#     counts), then --runs timed runs (default 3); the median is reported.
#  4. IMAP (unless --no-imap): the same Dovecot also serves IMAP on a free loopback port
#     (static password); the Maildir user's INBOX is mounted as imap://maildir@127.0.0.1
#     and compared with Python's imaplib (the listing FETCH), mbsync (a cold copy into a
#     fresh Maildir) and the raw Maildir (warm cat and grep). Missing tools (isync is
#     installed with apt-get when possible) or a failure there skip these rows with a
#     message, unless --imap asked for them.
#  5. Compressed mail (unless --no-zstd): the same INBOX imported into an mdbox by Dovecot
#     with its zlib plugin (`zlib_save = zstd`), cached as a store of its own; `cat` and
#     `grep -r` through mailfs, first pass and warm, beside `doveadm fetch text` and
#     `doveadm search` of that store and beside mailfs on the uncompressed mdbox.
#  6. Large stores (--large): a Maildir INBOX of --large-messages (default 1,000,000)
#     written by the generator into the maildir user's home and indexed by Dovecot, and an
#     mdbox imported from it, cached as one store (about 24 GB and 20 minutes for a
#     million); each run hard-links their message files instead of copying them (see
#     start_run). First `ls -l` after mount, RSS growth, refresh after one delivery, and
#     issue 19's targets (--large-full: every measurement).
#
# Timing: wall clock from bash's $EPOCHREALTIME (microseconds, read without forking)
# around the command, which runs in this shell (a function call, no eval, no subshell).
# Times are seconds with 3 decimals, latencies milliseconds.
#
# Needs root (for /dev/fuse and the mail user), fuse3, dovecot-core and dovecot-imapd
# (scripts/test.sh installs them), perl, and about 4x the store size free in --store-dir
# (--large: 2x the large store's messages, once, for the cache); for the
# IMAP rows also python3 and mbsync (isync: installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export LC_ALL=C
# shellcheck source=lib/dovecot.sh
. scripts/lib/dovecot.sh

# Bump when the generator or the store build changes: cached stores are rebuilt.
GEN_VERSION=1
NEEDLE=hornbill7431 # in about 1 % of the message bodies
ABSENT=kestrel9052  # in none
FORMATS=(maildir sdbox mdbox)

messages=20000
store_dir=${TMPDIR:-/tmp}/mailfs-bench
seed=1
fresh=""
runs=3
samples=200
large=""
large_messages=1000000
large_full=""
write=1
write_messages=1000
keep=""
imap=auto # auto: measured when possible; required: --imap; "": --no-imap
zstd=1 # the compressed-mdbox rows (--no-zstd: none)
formats_arg=""
IMAP_SKIP="" # why the IMAP rows are missing

usage() {
    cat <<EOF
Usage: scripts/bench.sh [OPTIONS]

Benchmarks mailfs on a generated INBOX stored as Maildir, sdbox and mdbox, beside the raw
store (Maildir) and doveadm; writes the table to docs/benchmarks.md and prints it.

Options:
  --messages N         messages in the INBOX (default $messages)
  --store-dir DIR      cache of generated stores, reused while the parameters match
                       (default $store_dir)
  --fresh              rebuild the cached stores
  --seed S             generator seed (default $seed)
  --runs R             timed runs after the warm-up; the median is reported (default $runs)
  --samples K          random messages for the single-message cat latency (default $samples)
  --large              also a Maildir and an mdbox INBOX of --large-messages messages:
                       first ls -l after mount (beside raw ls -l cur/ and doveadm
                       fetch), ls -l, RSS growth, refresh after one delivery, and issue
                       19's targets; built once (about 24 GB and 20 minutes for a
                       million messages) and cached, runs hard-link the message files
  --large-messages N   size of those stores (default $large_messages)
  --large-full         with --large: every measurement on the large stores too
  --write-messages N   messages per write operation (rm, mv, setfattr, cp through a
                       --rw mount, beside doveadm); 0 skips the writes (default $write_messages)
  --no-write           print the table only; leave docs/benchmarks.md alone
  --imap               require the IMAP rows (a failure there fails the run); without
                       it they are measured when mbsync (isync) and python3 are there
                       (isync is installed with apt-get when missing) and skipped with
                       a message otherwise
  --no-imap            skip the IMAP rows
  --no-zstd            skip the compressed rows (an mdbox Dovecot stored with
                       zlib_save = zstd: cat and grep -r, first pass and warm)
  --formats LIST       the uncompressed stores to measure, a comma-separated subset of
                       maildir,sdbox,mdbox (default all three)
  --keep               keep the per-run working copy of the stores (and the mailfs logs)
  -h, --help           this text

Progress goes to stderr, the Markdown report to stdout.
EOF
}

die() {
    echo "bench.sh: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, not '$2'"; }

args="$*" # for the report

while [ $# -gt 0 ]; do
    case $1 in
    --messages | --store-dir | --seed | --runs | --samples | --large-messages | --write-messages | --formats)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --messages) positive "$1" "$2" && messages=$2 ;;
        --store-dir) store_dir=$2 ;;
        --seed) positive "$1" "$2" && seed=$2 ;;
        --runs) positive "$1" "$2" && runs=$2 ;;
        --samples) positive "$1" "$2" && samples=$2 ;;
        --large-messages) positive "$1" "$2" && large_messages=$2 ;;
        --formats) formats_arg=$2 ;;
        --write-messages)
            [[ $2 =~ ^[0-9]+$ ]] || die "$1 needs a number, not '$2'"
            write_messages=$2
            ;;
        esac
        shift 2
        ;;
    --fresh) fresh=1 && shift ;;
    --large) large=1 && shift ;;
    --large-full) large=1 large_full=1 && shift ;;
    --no-write) write="" && shift ;;
    --keep) keep=1 && shift ;;
    --imap) imap=required && shift ;;
    --no-imap) imap="" && shift ;;
    --no-zstd) zstd="" && shift ;;
    -h | --help) usage && exit 0 ;;
    *) usage >&2 && exit 2 ;;
    esac
done
if [ -n "$formats_arg" ]; then
    IFS=, read -r -a FORMATS <<<"$formats_arg"
    for fmt in "${FORMATS[@]}"; do
        [[ $fmt =~ ^(maildir|sdbox|mdbox)$ ]] || die "--formats: $fmt is not maildir, sdbox or mdbox"
    done
fi
[ "$write_messages" -le "$messages" ] || die "--write-messages ($write_messages) exceeds --messages ($messages)"
mkdir -p "$store_dir"
store_dir=$(cd "$store_dir" && pwd)

[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts and Dovecot's mail user)"
[ -c /dev/fuse ] || die "/dev/fuse is missing (in a container: --device /dev/fuse --cap-add SYS_ADMIN)"
for tool in doveadm fusermount3 find grep awk perl; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/test.sh installs fuse3 and dovecot)"
done
[ -x /usr/lib/dovecot/imap ] || die "dovecot-imapd is missing (apt-get install dovecot-imapd)"

# imap_prereqs: mbsync (isync, installed with apt-get when missing) and a Python 3 with
# imaplib (PYTHON: its real executable, not a pyenv or asdf shim, whose start-up would be
# timed too). Sets IMAP_SKIP and returns 1 when one is missing.
imap_prereqs() {
    if ! command -v mbsync >/dev/null; then
        if command -v apt-get >/dev/null; then
            log "installing isync (mbsync) for the IMAP rows"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq isync >&2 ||
                { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq isync >&2; } ||
                true
        fi
        command -v mbsync >/dev/null || {
            IMAP_SKIP="mbsync not found and isync could not be installed (apt-get install isync)"
            return 1
        }
    fi
    PYTHON=$(python3 -c 'import imaplib, sys; print(sys.executable)' 2>/dev/null) && [ -x "$PYTHON" ] || {
        IMAP_SKIP="no python3 with imaplib"
        return 1
    }
}
if [ -n "$imap" ] && ! imap_prereqs; then
    [ "$imap" = auto ] || die "--imap: $IMAP_SKIP"
    log "skipping the IMAP rows: $IMAP_SKIP"
    imap=""
fi

# ----------------------------------------------------------------------------------------
# Clean-up: whatever is mounted or running is stopped, even on error or Ctrl-C.

MAILFS_PID=""
MAILFS_MP=""
RUN_DIR=""

# is_mounted DIR: DIR is a mount point (also when its FUSE daemon died: stat then fails).
is_mounted() {
    [ -d "$1" ] || return 1
    [ "$(stat -c %d "$1" 2>/dev/null)" != "$(stat -c %d "$1/.." 2>/dev/null)" ]
}

unmount_mailfs() {
    local status=0
    if [ -n "$MAILFS_PID" ]; then
        kill -TERM "$MAILFS_PID" 2>/dev/null || true
        wait "$MAILFS_PID" 2>/dev/null || status=$?
        MAILFS_PID=""
    fi
    if [ -n "$MAILFS_MP" ] && is_mounted "$MAILFS_MP"; then
        fusermount3 -uz "$MAILFS_MP" 2>/dev/null || umount -l "$MAILFS_MP" 2>/dev/null || true
    fi
    MAILFS_MP=""
    return "$status"
}

# remove_run_dir DIR: removes a working copy, after detaching any mount left inside it.
remove_run_dir() {
    local mp
    for mp in "$1"/mnt-*; do
        if is_mounted "$mp"; then fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp" || true; fi
    done
    rm -rf "$1"
}

cleanup() {
    local status=$?
    set +e
    unmount_mailfs >/dev/null 2>&1
    dovecot_stop
    if [ -n "$RUN_DIR" ]; then
        if [ -n "$keep" ]; then echo "kept $RUN_DIR" >&2; else remove_run_dir "$RUN_DIR"; fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------------------
# Timing. All values are integer microseconds (or kB for memory) in R[key].

declare -A R=()
WARNINGS=()
FIRST_PASS_ARGS=() # extra mount options of first_pass (bash arrays: "${FIRST_PASS_ARGS[@]}")
sink=/dev/null # where a job writes its output: a file in the warm-up, /dev/null when timed

now_us() { echo "${EPOCHREALTIME/./}"; }

median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# measure KEY JOB ARGS...: runs JOB ARGS once untimed with its output in $RUN_DIR/warm.out
# (for check and warm_*), then $runs times timed; R[KEY] = the median.
measure() {
    local key=$1
    shift
    fresh_pass "$key" : "$@"
}

# check WHAT EXPECTED ACTUAL: records a warning when a job's output was not as expected.
check() {
    if [ "$2" != "$3" ]; then
        WARNINGS+=("$1: expected $2, got $3")
        echo "   WARNING: $1: expected $2, got $3" >&2
    fi
}
warm_lines() { wc -l <"$RUN_DIR/warm.out" | tr -d ' '; }
warm_bytes() { wc -c <"$RUN_DIR/warm.out" | tr -d ' '; }

# The jobs: what is timed. $1 is a directory (mailfs or raw) or a Dovecot user.
job_ls() { ls -l "$1" >"$sink"; }
job_find() { find "$1" -type f -printf '%s %T@ %p\n' >"$sink"; }
job_cat_all() { find "$1" -type f -exec cat {} + >"$sink"; }
job_grep() { grep -rlF -- "$2" "$1" >"$sink" || [ $? = 1 ]; }
job_dv_ls() { dovecot_adm fetch -u "$1" 'uid size.physical date.received' mailbox INBOX all >"$sink"; }
job_dv_cat_all() { dovecot_adm fetch -u "$1" text mailbox INBOX all >"$sink"; }
job_dv_grep() { dovecot_adm search -u "$1" mailbox INBOX body "$2" >"$sink"; }

# ----------------------------------------------------------------------------------------
# The stores.

# generate DIR N SEED META: writes the Maildir DIR (cur/, new/, tmp/) of N messages and the
# file META (total_bytes=, hits=). Deterministic for (N, SEED, GEN_VERSION). mawk when
# there (about twice as fast as gawk for a million messages; the same bytes).
generate() {
    local dir=$1 n=$2 seed=$3 meta=$4 list=$4.list awk
    awk=$(command -v mawk || echo awk)
    mkdir -p "$dir/cur" "$dir/new" "$dir/tmp"
    "$awk" -v n="$n" -v seed="$seed" -v dir="$dir/cur" -v list="$list" \
        -v meta="$meta" -v needle="$NEEDLE" -v base=1672531200 '
    # Park-Miller "minimal standard" LCG: exact in doubles, so mawk and gawk agree.
    function rnd() { state = (state * 16807) % 2147483647; return state / 2147483647 }
    function pick(k) { return int(rnd() * k) }
    # out(S): S as it is (w: bytes, nl: line ends); outl(S): S and a line end.
    function out(s) { printf "%s", s > f; w += length(s); nl += gsub(/\n/, "", s) }
    function outl(s) { printf "%s\n", s > f; w += length(s) + 1; nl++ }
    function rfc2822(t,    days, secs, z, era, doe, yoe, y, doy, mp, d, m) {
        days = int(t / 86400); secs = t - days * 86400
        z = days + 719468; era = int(z / 146097); doe = z - era * 146097
        yoe = int((doe - int(doe / 1460) + int(doe / 36524) - int(doe / 146096)) / 365)
        y = yoe + era * 400; doy = doe - (365 * yoe + int(yoe / 4) - int(yoe / 100))
        mp = int((5 * doy + 2) / 153); d = doy - int((153 * mp + 2) / 5) + 1
        m = mp < 10 ? mp + 3 : mp - 9
        if (m <= 2) y++
        return sprintf("%s, %d %s %d %02d:%02d:%02d +0000", wday[(days + 4) % 7], d, mon[m], y,
            int(secs / 3600), int((secs % 3600) / 60), secs % 60)
    }
    # text(BYTES): about BYTES of prose; the needle line halfway through when it is due.
    function text(bytes,    stop, half, text_line) {
        stop = w + bytes; half = w + int(bytes / 2)
        while (w < stop) {
            if (needle_due && w >= half) { text_line = "Our reference is " needle ", please quote it."; needle_due = 0 }
            else if (pick(6) == 0) text_line = ""
            else text_line = pool[pick(npool)]
            outl(text_line)
        }
    }
    BEGIN {
        state = seed % 2147483646 + 1
        nw = split("the of and to in is for on that with as it at be this from by are have was " \
            "or we an will not can all your has more about our their which new one if would there " \
            "what when up out so time them other people some into year also could its how than " \
            "then only first over after work use two these may such should any because most under " \
            "day well report meeting project review budget plan schedule team update customer " \
            "contract invoice order shipment delivery account payment office server network " \
            "release draft agenda minutes summary question answer request approval deadline " \
            "quarter results sales marketing support ticket issue feature design document " \
            "attached please thanks regards best morning afternoon week month monday tuesday " \
            "wednesday thursday friday", words, " ")
        npool = 2000
        for (p = 0; p < npool; p++) {
            target = 30 + pick(47); line = words[1 + pick(nw)]
            while (length(line) < target) line = line " " words[1 + pick(nw)]
            pool[p] = line (pick(3) ? "." : ",")
        }
        b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        nb = 500
        for (p = 0; p < nb; p++) {
            s = ""; for (k = 0; k < 76; k++) s = s substr(b64, 1 + pick(64), 1); bpool[p] = s
        }
        split("Thu Fri Sat Sun Mon Tue Wed", tmp, " "); for (k = 0; k < 7; k++) wday[(k + 4) % 7] = tmp[k + 1]
        split("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec", mon, " ")
        nfirst = split("alice bob carol dave erin frank grace heidi ivan judy mallory nina oscar " \
            "peggy quentin rupert sybil trent ursula victor walter xena yvonne zoe", first, " ")
        ndom = split("example.org example.net example.com mail.example.org lists.example.net", dom, " ")
        nbuckets = n < 400 ? n : 400        # received dates: 400 steps over two years
        span = int(2 * 365 * 86400 / nbuckets)
        total = 0; hits = 0
        for (i = 1; i <= n; i++) {
            big = rnd() < 0.005
            size = big ? 102400 + pick(1048576 - 102400) : int(2048 * exp(rnd() * log(10)))
            needle_due = rnd() < 0.01
            hits += needle_due
            r = rnd(); flags = r < 0.70 ? "S" : (r < 0.80 ? "RS" : (r < 0.85 ? "FS" : ""))
            t = base + int((i - 1) * nbuckets / n) * span
            name = sprintf("%d.M%dP%d.bench:2,%s", t, i, seed, flags)
            f = dir "/" name
            w = 0; nl = 0
            who = first[1 + pick(nfirst)]; d = dom[1 + pick(ndom)]
            out(sprintf("Return-Path: <%s@%s>\n", who, d))
            out(sprintf("Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mail.example.com with ESMTPS id %08X\n\tfor <bench@example.com>; %s\n",
                pick(9), d, pick(9), d, 1 + pick(250), pick(2147483647), rfc2822(t)))
            out(sprintf("From: %s%s <%s@%s>\nTo: Bench User <bench@example.com>\n",
                toupper(substr(who, 1, 1)), substr(who, 2), who, d))
            out(sprintf("Subject: %s\nDate: %s\nMessage-ID: <%d.%d.%d@%s>\nMIME-Version: 1.0\n",
                substr(pool[pick(npool)], 1, 20 + pick(30)), rfc2822(t - 30 - pick(3600)), t, i, seed, d))
            if (!big) {
                out("Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n")
                text(size - w)
            } else {
                b = "=_bench_" i
                out("Content-Type: multipart/mixed; boundary=\"" b "\"\n\nThis is a multi-part message in MIME format.\n\n")
                out("--" b "\nContent-Type: text/plain; charset=us-ascii\n\n")
                text(1000 + pick(3000))
                out("\n--" b "\nContent-Type: application/pdf; name=\"report-" i ".pdf\"\n")
                out("Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"report-" i ".pdf\"\n\n")
                while (w < size) outl(bpool[pick(nb)])
                out("--" b "--\n")
            }
            close(f)
            total += w
            print t "\t" name "\t" w "\t" (w + nl) > list
        }
        # %.0f: the %d of mawk stops at 2^31 - 1.
        printf "total_bytes=%.0f\nhits=%d\n", total, hits > meta
    }'
    # Named as Dovecot names what it saves (",S=<size>,W=<virtual size>" before ":2,", the
    # virtual size counting CRLF line ends: every line end here is a bare LF), so that Dovecot
    # and mailfs read the sizes from the name; the received date is the file's mtime.
    perl -e 'my ($cur, $list) = @ARGV;
        open(my $in, "<", $list) or die "$list: $!\n";
        while (<$in>) {
            chomp;
            my ($t, $name, $size, $vsize) = split /\t/;
            (my $sized = $name) =~ s/:2,/,S=$size,W=$vsize:2,/;
            rename("$cur/$name", "$cur/$sized") or die "rename $cur/$name: $!\n";
            utime($t, $t, "$cur/$sized") or die "utime $cur/$sized: $!\n";
        }' "$dir/cur" "$list"
    rm -f "$list"
}

# meta_get FILE KEY: the value of KEY=value in FILE.
meta_get() { sed -n "s/^$2=//p" "$1"; }

# store_path N FORMAT...: the cache directory for these parameters.
store_path() {
    local n=$1
    shift
    local IFS=+
    echo "$store_dir/inbox-n$n-seed$seed-g$GEN_VERSION-$*${STORE_ZLIB:+-$STORE_ZLIB}${STORE_DIRECT:+-direct}"
}

# The Dovecot setting that loads the zlib plugin (reading detects compressed mail by its
# magic; with STORE_ZLIB set, saves and imports also compress with it).
ZLIB_PLUGIN='mail_plugins = $mail_plugins zlib'

# ensure_store N FORMAT...: sets STORE to the cache directory for these parameters, after
# building it there unless a complete one exists (and no --fresh). The store is
# STORE/dovecot/home/<format>/mail, with STORE/meta (messages, total_bytes, hits,
# build_seconds). Sets STORE_CACHED=1 when it was reused.
# With STORE_DIRECT=1 (the large stores of --large; maildir must be the first FORMAT) the
# generator writes the maildir user's INBOX itself, files named as Dovecot names them, and
# Dovecot only indexes it (SELECT and FETCH, as a client's first ones); the other formats
# are imported from it. No src/ copy and no import into Maildir: a million messages are
# written once for the Maildir, not twice.
ensure_store() {
    local n=$1
    shift
    local dir fmt t0 uidnext out src
    dir=$(store_path "$n" "$@")
    STORE=$dir STORE_CACHED=""
    if [ -z "$fresh" ] && [ -f "$dir/meta" ]; then
        log "reusing the cached store $dir"
        STORE_CACHED=1
        return
    fi
    log "building $n messages as $* in $dir (cached for later runs)"
    t0=$(now_us)
    rm -rf "$dir"
    mkdir -p "$dir"
    chmod 755 "$dir"
    src=$dir/src
    if [ -n "${STORE_DIRECT:-}" ]; then
        [ "$1" = maildir ] || die "ensure_store: STORE_DIRECT needs maildir as the first format"
        src=$dir/dovecot/home/maildir/mail
    fi
    log "  generating the messages into $src"
    generate "$src" "$n" "$seed" "$dir/gen.meta"
    log "  generated in $((($(now_us) - t0) / 1000000)) s"
    local zopts=()
    [ -z "${STORE_ZLIB:-}" ] || zopts=(-o "plugin/zlib_save=$STORE_ZLIB")
    DOVECOT_EXTRA=${STORE_ZLIB:+$ZLIB_PLUGIN} dovecot_start "$dir/dovecot" '%u:~/mail'
    chown -R "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$src"
    for fmt in "$@"; do
        dovecot_user "$fmt"
        if [ "$src" = "$DOVECOT_DIR/home/$fmt/mail" ]; then
            log "  $fmt: the generator's Maildir, indexed by Dovecot"
        else
            log "  doveadm import into $fmt"
            dovecot_adm "${zopts[@]}" import -u "$fmt" -s "maildir:$src:INDEX=MEMORY" "" mailbox INBOX all
        fi
        if [ "$fmt" = maildir ]; then
            # A client's SELECT moves the unflagged messages from new/ to cur/.
            out=$(printf 'a SELECT INBOX\r\nb LOGOUT\r\n' | dovecot_adm exec imap -u "$fmt")
            [[ $out == *$'\na OK'* ]] || die "IMAP SELECT failed for $fmt: $out"
        fi
        # What a client's first FETCH would leave in Dovecot's cache file.
        dovecot_adm fetch -u "$fmt" 'uid flags size.physical size.virtual date.received date.saved guid' \
            mailbox INBOX all >/dev/null
        uidnext=$(dovecot_adm mailbox status -u "$fmt" uidnext INBOX | sed -n 's/.*uidnext=//p')
        [ "$uidnext" = $((n + 1)) ] || die "$fmt: uidnext is $uidnext after importing $n messages"
        log "  $fmt done after $((($(now_us) - t0) / 1000000)) s"
    done
    dovecot_stop
    rm -rf "$dir/src" "$dir/dovecot/run" "$dir/dovecot/state"
    {
        echo "messages=$n"
        cat "$dir/gen.meta"
        echo "build_seconds=$((($(now_us) - t0) / 1000000))"
    } >"$dir/meta.tmp"
    rm -f "$dir/gen.meta"
    mv "$dir/meta.tmp" "$dir/meta"
}

# Settings of a run on hard-linked message files (start_run STORE link): no existing mdbox
# m.N file takes another message. Dovecot appends a saved message to the m.N file of one of
# the last messages when it stays below mdbox_rotate_size (mdbox-map.c,
# mdbox_map_find_appendable_file: offset + size + new size < mdbox_rotate_size); every
# generated message is over 2 KB, so with 1k every save goes to a new m.N file.
LINKED_RUN_SETTINGS='mdbox_rotate_size = 1k'

# linked_files_sum STORE: a checksum of the name, size and mtime of the store's message
# files (what a linked run shares with the cache).
linked_files_sum() {
    find "$1/dovecot/home" \( -path '*/mail/cur/*' -o -path '*/mail/new/*' -o -path '*/storage/m.*' \) \
        -type f -printf '%P %s %T@\n' | sort | md5sum | cut -d' ' -f1
}

# start_run STORE [link]: copies the cached store's homes to a fresh working directory and
# starts a private Dovecot on it. Sets RUN_DIR and HOME_DIR.
# With "link" (the large stores: a million messages are not copied for each run), the
# message files (Maildir cur/ and new/, mdbox storage/m.N) are hard links to the cache's
# and everything else is copied (indexes, logs, caches, uidlist, map: Dovecot appends to or
# rewrites those). Dovecot never writes into an existing Maildir message file (a flag
# change renames the run's link; a save makes a new file) and with LINKED_RUN_SETTINGS it
# appends to no existing m.N; end_run checks that the cache's message files are unchanged.
start_run() {
    local store=$1 link=${2:-} f
    RUN_DIR=$store.run
    RUN_LINKED_SUM=""
    remove_run_dir "$RUN_DIR"
    mkdir -p "$RUN_DIR/dovecot"
    chmod 755 "$RUN_DIR" "$RUN_DIR/dovecot"
    if [ -n "$link" ]; then
        RUN_LINKED_SUM=$(linked_files_sum "$store")
        RUN_STORE=$store
        cp -al "$store/dovecot/home" "$RUN_DIR/dovecot/home"
        while IFS= read -r -d '' f; do
            cp -a "$f" "$f.copy" && mv -f "$f.copy" "$f"
        done < <(find "$RUN_DIR/dovecot/home" \( -path '*/mail/cur' -o -path '*/mail/new' \) -prune -o \
            -type f ! -path '*/storage/m.*' -print0)
        DOVECOT_EXTRA="${DOVECOT_EXTRA:+$DOVECOT_EXTRA
}$LINKED_RUN_SETTINGS" dovecot_start "$RUN_DIR/dovecot" '%u:~/mail'
    else
        cp -a --reflink=auto "$store/dovecot/home" "$RUN_DIR/dovecot/home"
        dovecot_start "$RUN_DIR/dovecot" '%u:~/mail'
    fi
    HOME_DIR=$DOVECOT_DIR/home
    # The copy's write-back would otherwise run during the first rows measured.
    sync
}

end_run() {
    dovecot_stop
    if [ -n "$RUN_LINKED_SUM" ] && [ "$(linked_files_sum "$RUN_STORE")" != "$RUN_LINKED_SUM" ]; then
        WARNINGS+=("the cached store $RUN_STORE: a message file changed during the run (written through a hard link): rebuild it with --fresh")
    fi
    RUN_LINKED_SUM=""
    if [ -n "$keep" ]; then echo "kept $RUN_DIR" >&2; else remove_run_dir "$RUN_DIR"; fi
    RUN_DIR=""
}

# ----------------------------------------------------------------------------------------
# mailfs

# mount_mailfs LOCATION MOUNTPOINT [OPTION...]: mounts in the background and waits.
mount_mailfs() {
    local location=$1 mp=$2 i
    shift 2
    mkdir -p "$mp"
    "$bin" mount "$location" "$mp" "$@" 2>>"$RUN_DIR/${MAILFS_LOG:-mailfs.log}" &
    MAILFS_PID=$! MAILFS_MP=$mp
    for ((i = 0; i < 1000; i++)); do
        is_mounted "$mp" && return 0
        if ! kill -0 "$MAILFS_PID" 2>/dev/null; then
            MAILFS_PID=""
            tail -20 "$RUN_DIR/${MAILFS_LOG:-mailfs.log}" >&2
            die "mailfs could not mount $location"
        fi
        sleep 0.01
    done
    tail -20 "$RUN_DIR/${MAILFS_LOG:-mailfs.log}" >&2
    die "mailfs did not mount $location within 10 s"
}

remount() {
    unmount_mailfs || die "mailfs exited with an error; see $RUN_DIR/mailfs.log"
    mount_mailfs "$@"
}

# rss KEY: R[KEY:rss] and R[KEY:hwm] from the daemon's /proc status (kB).
rss() {
    R[$1:rss]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$MAILFS_PID/status")
    R[$1:hwm]=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MAILFS_PID/status")
}

# sample_uids N K: K pseudo-random UIDs in 1..N (deterministic).
sample_uids() {
    awk -v n="$1" -v k="$2" -v seed="$seed" 'BEGIN {
        state = (seed * 7919) % 2147483646 + 1
        for (i = 0; i < k; i++) { state = (state * 16807) % 2147483647; print 1 + int(state / 2147483647 * n) }
    }'
}

# first_pass KEY LOCATION MOUNTPOINT JOB ARGS...: fresh_pass with every run (the checked
# one and the $runs timed ones) right after a remount (with FIRST_PASS_ARGS): mailfs's views
# and the kernel's FUSE page cache are empty (the store's own files stay in the page cache,
# as for the raw rows).
first_pass() {
    local key=$1
    PASS_LOCATION=$2 PASS_MP=$3 PASS_DROP=""
    shift 3
    fresh_pass "$key" pass_setup "$@"
}

# cold_pass KEY LOCATION MP JOB ARGS...: as first_pass, and the kernel's page cache (the
# store's files included) dropped before each run (LOCATION "": no mount, the raw store).
# Needs root; without it the row is left out with a warning.
cold_pass() {
    local key=$1
    PASS_LOCATION=$2 PASS_MP=$3 PASS_DROP=1
    shift 3
    if [ ! -w /proc/sys/vm/drop_caches ]; then
        WARNINGS+=("cold rows left out: /proc/sys/vm/drop_caches is not writable (not root)")
        return 0
    fi
    fresh_pass "$key" pass_setup "$@"
}

# pass_setup: first_pass's and cold_pass's setup before each run.
pass_setup() {
    [ -z "$PASS_LOCATION" ] || remount "$PASS_LOCATION" "$PASS_MP" "${FIRST_PASS_ARGS[@]}"
    if [ -n "$PASS_DROP" ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    elif [ -n "$PASS_LOCATION" ]; then
        warm_store "$PASS_LOCATION"
    fi
}

# warm_store LOCATION: reads the store's files (mailfs's LOCATION, FORMAT:PATH) so that
# they are in the page cache, as the first-pass rows promise: some machines page out
# what was not touched for a while (a VM's DAMON pageout scheme; seen here: pages idle
# for 60 s), which made a store's rows depend on how long it had been left alone. Not
# for the --large stores ($WARM_STORES empty): they are larger than the page cache here.
WARM_STORES=1
warm_store() {
    [ -n "$WARM_STORES" ] || return 0
    local path=${1#*:}
    find "${path%%:*}" -type f -exec cat {} + >/dev/null
}

# cat_latency KEY PATH...: median single-file cat in µs over all PATHs, after one warm-up
# pass, pooling $runs passes.
cat_latency() {
    local key=$1 p i t0 t1 times=()
    shift
    for p in "$@"; do cat "$p" >/dev/null; done
    for ((i = 0; i < runs; i++)); do
        for p in "$@"; do
            t0=${EPOCHREALTIME/./}
            cat "$p" >/dev/null
            t1=${EPOCHREALTIME/./}
            times+=($((t1 - t0)))
        done
    done
    R[$key]=$(median "${times[@]}")
}

# dv_cat_latency KEY USER UID...: the same with doveadm fetch text (one pass: each call
# costs a doveadm process; the first UID is the warm-up).
dv_cat_latency() {
    local key=$1 user=$2 uid t0 t1 times=()
    shift 2
    dovecot_adm fetch -u "$user" text mailbox INBOX uid "$1" >/dev/null
    for uid in "$@"; do
        t0=${EPOCHREALTIME/./}
        dovecot_adm fetch -u "$user" text mailbox INBOX uid "$uid" >/dev/null
        t1=${EPOCHREALTIME/./}
        times+=($((t1 - t0)))
    done
    R[$key]=$(median "${times[@]}")
}

# refresh KEY USER MOUNTPOINT: time from `doveadm save` returning until the new
# <uid>.eml is visible through the mount (stat in a tight loop); warm-up + $runs
# deliveries, median in R[KEY]. The mount must have --attr-timeout 0 --entry-timeout 0.
refresh() {
    local key=$1 user=$2 mp=$3 i uid t0 t1 deadline times=()
    for ((i = 0; i <= runs; i++)); do
        uid=$(dovecot_adm mailbox status -u "$user" uidnext INBOX | sed -n 's/.*uidnext=//p')
        ls -l "$mp/INBOX" >/dev/null
        [ ! -e "$mp/INBOX/$uid.eml" ] || die "$mp/INBOX/$uid.eml exists before its delivery"
        printf 'From: Refresh <refresh@example.org>\nTo: bench@example.com\nSubject: Delivery %d\nMessage-ID: <refresh.%d.%d@example.org>\n\n%s\n' \
            "$i" "$uid" "$$" "One new message, delivered while mailfs is mounted." |
            dovecot_adm save -u "$user" -m INBOX
        t0=${EPOCHREALTIME/./}
        deadline=$((t0 + 10000000))
        until [ -e "$mp/INBOX/$uid.eml" ]; do
            if [ "${EPOCHREALTIME/./}" -gt "$deadline" ]; then
                WARNINGS+=("$key: $uid.eml not visible 10 s after its delivery")
                return 0
            fi
        done
        t1=${EPOCHREALTIME/./}
        [ "$i" = 0 ] || times+=($((t1 - t0)))
    done
    R[$key]=$(median "${times[@]}")
}

location_of() {
    local fmt=$1
    echo "$fmt:$HOME_DIR/$fmt/mail"
}

# bench_format LABEL FORMAT N TOTAL_BYTES HITS FULL: every measurement on one store.
# LABEL prefixes the R keys; FULL="" limits it to ls, refresh and RSS.
bench_format() {
    local label=$1 fmt=$2 n=$3 total=$4 hits=$5 full=$6 i
    local mp=$RUN_DIR/mnt-$fmt location raw="" uids paths=()
    location=$(location_of "$fmt")
    [ "$fmt" = maildir ] && raw=$HOME_DIR/maildir/mail/cur
    log "$label: mailfs mount $location"

    log "  first ls -l after mount"
    local t0 t1 times=()
    for ((i = 0; i <= runs; i++)); do
        remount "$location" "$mp"
        [ "$i" != 0 ] || R[$label:rss0]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$MAILFS_PID/status")
        t0=${EPOCHREALTIME/./}
        ls -l "$mp/INBOX" >/dev/null
        t1=${EPOCHREALTIME/./}
        [ "$i" != 0 ] || R[$label:rss_ls]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$MAILFS_PID/status")
        [ "$i" = 0 ] || times+=($((t1 - t0)))
    done
    R[$label:ls_first:mailfs]=$(median "${times[@]}")

    log "  ls -l"
    measure "$label:ls:mailfs" job_ls "$mp/INBOX"
    check "$label: mailfs ls -l lines" $((n + 1)) "$(warm_lines)"
    if [ -n "$raw" ]; then
        measure "$label:ls:raw" job_ls "$raw"
        check "$label: raw ls -l lines" $((n + 1)) "$(warm_lines)"
    fi
    measure "$label:ls:doveadm" job_dv_ls "$fmt"
    check "$label: doveadm fetch uid lines" "$n" "$(grep -c '^uid: ' "$RUN_DIR/warm.out" 2>/dev/null || true)"
    R[$label:ls_first:doveadm]=${R[$label:ls:doveadm]}
    [ -z "$raw" ] || R[$label:ls_first:raw]=${R[$label:ls:raw]}

    if [ -n "$full" ]; then
        log "  find -printf"
        measure "$label:find:mailfs" job_find "$mp"
        check "$label: mailfs find lines" "$n" "$(warm_lines)"
        if [ -n "$raw" ]; then
            measure "$label:find:raw" job_find "$raw"
            check "$label: raw find lines" "$n" "$(warm_lines)"
        fi
        R[$label:find:doveadm]=${R[$label:ls:doveadm]}

        log "  cat of every message"
        measure "$label:cat:mailfs" job_cat_all "$mp/INBOX"
        check "$label: mailfs cat bytes" "$total" "$(warm_bytes)"
        if [ -n "$raw" ]; then
            measure "$label:cat:raw" job_cat_all "$raw"
            check "$label: raw cat bytes" "$total" "$(warm_bytes)"
        fi
        measure "$label:cat:doveadm" job_dv_cat_all "$fmt"
        # doveadm prints "text:" and a newline before each message.
        check "$label: doveadm fetch text bytes" $((total + 6 * n)) "$(warm_bytes)"
        log "  first pass: cat of every message, grep -rl, each right after a remount"
        first_pass "$label:cat_first:mailfs" "$location" "$mp" job_cat_all "$mp/INBOX"
        check "$label: mailfs first-pass cat bytes" "$total" "$(warm_bytes)"
        first_pass "$label:grep_first:mailfs" "$location" "$mp" job_grep "$mp/INBOX" "$NEEDLE"
        check "$label: mailfs first-pass grep matches" "$hits" "$(warm_lines)"
        R[$label:cat_first:raw]=${R[$label:cat:raw]:-}
        R[$label:cat_first:doveadm]=${R[$label:cat:doveadm]}
        log "  first pass without read-ahead across files (--prefetch 0)"
        FIRST_PASS_ARGS=(--prefetch 0)
        first_pass "$label:cat_first_np:mailfs" "$location" "$mp" job_cat_all "$mp/INBOX"
        check "$label: mailfs first-pass cat bytes (--prefetch 0)" "$total" "$(warm_bytes)"
        first_pass "$label:grep_first_np:mailfs" "$location" "$mp" job_grep "$mp/INBOX" "$NEEDLE"
        check "$label: mailfs first-pass grep matches (--prefetch 0)" "$hits" "$(warm_lines)"
        FIRST_PASS_ARGS=()
        R[$label:cat_first_np:raw]=${R[$label:cat:raw]:-}
        R[$label:cat_first_np:doveadm]=${R[$label:cat:doveadm]}
        log "  cold page cache: cat and grep -rl after dropping every cache"
        cold_pass "$label:cat_cold:mailfs" "$location" "$mp" job_cat_all "$mp/INBOX"
        [ -z "${R[$label:cat_cold:mailfs]:-}" ] ||
            check "$label: mailfs cold cat bytes" "$total" "$(warm_bytes)"
        cold_pass "$label:grep_cold:mailfs" "$location" "$mp" job_grep "$mp/INBOX" "$NEEDLE"
        [ -z "${R[$label:grep_cold:mailfs]:-}" ] ||
            check "$label: mailfs cold grep matches" "$hits" "$(warm_lines)"
        if [ -n "$raw" ]; then
            cold_pass "$label:cat_cold:raw" "" "" job_cat_all "$raw"
            cold_pass "$label:grep_cold:raw" "" "" job_grep "$raw" "$NEEDLE"
        fi
        if [ -n "$raw" ]; then
            # The other --open-modes, on Maildir (where passthrough applies).
            local mode key
            for mode in held passthrough; do
                key=cat_$mode
                log "  cat of every message, grep -rl, with --open-mode $mode"
                remount "$location" "$mp" --open-mode "$mode"
                if [ "$mode" = passthrough ] &&
                    ! getfattr --only-values -n user.mailfs.status "$mp" 2>/dev/null |
                    grep -q '^passthrough: true'; then
                    WARNINGS+=("$label: --open-mode passthrough fell back to held opens (kernel refused)")
                fi
                measure "$label:$key:mailfs" job_cat_all "$mp/INBOX"
                check "$label: mailfs cat bytes ($mode)" "$total" "$(warm_bytes)"
                R[$label:$key:raw]=${R[$label:cat:raw]}
                R[$label:$key:doveadm]=${R[$label:cat:doveadm]}
                measure "$label:grep_$mode:mailfs" job_grep "$mp/INBOX" "$NEEDLE"
                check "$label: mailfs grep matches ($mode)" "$hits" "$(warm_lines)"
            done
            remount "$location" "$mp"
            ls -l "$mp/INBOX" >/dev/null
        fi

        log "  grep -rl $NEEDLE (in $hits messages) and $ABSENT (in none)"
        measure "$label:grep_hit:mailfs" job_grep "$mp/INBOX" "$NEEDLE"
        check "$label: mailfs grep matches" "$hits" "$(warm_lines)"
        measure "$label:grep_miss:mailfs" job_grep "$mp/INBOX" "$ABSENT"
        check "$label: mailfs grep (absent) matches" 0 "$(warm_lines)"
        if [ -n "$raw" ]; then
            measure "$label:grep_hit:raw" job_grep "$raw" "$NEEDLE"
            check "$label: raw grep matches" "$hits" "$(warm_lines)"
            measure "$label:grep_miss:raw" job_grep "$raw" "$ABSENT"
        fi
        measure "$label:grep_hit:doveadm" job_dv_grep "$fmt" "$NEEDLE"
        check "$label: doveadm search matches" "$hits" "$(warm_lines)"
        for key in grep_first grep_first_np; do
            R[$label:$key:raw]=${R[$label:grep_hit:raw]:-}
            R[$label:$key:doveadm]=${R[$label:grep_hit:doveadm]}
        done
        local mode
        for mode in held passthrough; do
            [ -z "${R[$label:grep_$mode:mailfs]:-}" ] || {
                R[$label:grep_$mode:raw]=${R[$label:grep_hit:raw]:-}
                R[$label:grep_$mode:doveadm]=${R[$label:grep_hit:doveadm]}
            }
        done
        measure "$label:grep_miss:doveadm" job_dv_grep "$fmt" "$ABSENT"
        check "$label: doveadm search (absent) matches" 0 "$(warm_lines)"

        log "  single-message cat ($samples random messages)"
        mapfile -t uids < <(sample_uids "$n" "$samples")
        paths=()
        for i in "${uids[@]}"; do paths+=("$mp/INBOX/$i.eml"); done
        cat_latency "$label:cat1:mailfs" "${paths[@]}"
        if [ -n "$raw" ]; then
            # UID -> file: dovecot-uidlist names the base ("<base>:2,<flags>" in cur/).
            printf '%s\n' "${uids[@]}" >"$RUN_DIR/uids"
            ls -U "$raw" >"$RUN_DIR/cur.list"
            mapfile -t paths < <(awk -v cur="$raw" '
                FILENAME ~ /uids$/ { want[FNR] = $1; next }
                FILENAME ~ /uidlist$/ { if (FNR > 1) { b = $NF; sub(/^:/, "", b); base[$1] = b }; next }
                { f = $0; sub(/:2,.*/, "", f); file[f] = $0 }
                END { for (i = 1; i in want; i++) print cur "/" file[base[want[i]]] }' \
                "$RUN_DIR/uids" "$raw/../dovecot-uidlist" "$RUN_DIR/cur.list")
            cat_latency "$label:cat1:raw" "${paths[@]}"
        fi
        dv_cat_latency "$label:cat1:doveadm" "$fmt" "${uids[@]}"
    fi

    rss "$label"
    log "  refresh after one delivery (remounted with --attr-timeout 0 --entry-timeout 0)"
    remount "$location" "$mp" --attr-timeout 0 --entry-timeout 0
    refresh "$label:refresh:mailfs" "$fmt" "$mp"
    unmount_mailfs || die "mailfs exited with an error; see $RUN_DIR/mailfs.log"
    if grep -q 'ERROR\|panicked' "$RUN_DIR/mailfs.log" 2>/dev/null; then
        WARNINGS+=("$label: mailfs logged errors: $(grep -m1 'ERROR\|panicked' "$RUN_DIR/mailfs.log")")
    fi
}

# bench_zstd LABEL N TOTAL_BYTES HITS: cat and grep -r on the zstd-compressed mdbox (the
# user mdbox of the STORE_ZLIB=zstd store), first pass and warm, beside doveadm.
bench_zstd() {
    local label=$1 n=$2 total=$3 hits=$4 mp=$RUN_DIR/mnt-zstd location
    location=$(location_of mdbox)
    log "$label: mailfs mount $location (stored by Dovecot with zlib_save = zstd)"
    R[$label:stored]=$(du -sk "$HOME_DIR/mdbox/mail/storage" | cut -f1)
    remount "$location" "$mp"
    log "  cat of every message"
    measure "$label:cat:mailfs" job_cat_all "$mp/INBOX"
    check "$label: mailfs cat bytes" "$total" "$(warm_bytes)"
    measure "$label:cat:doveadm" job_dv_cat_all mdbox
    check "$label: doveadm fetch text bytes" $((total + 6 * n)) "$(warm_bytes)"
    log "  grep -rl $NEEDLE"
    measure "$label:grep_hit:mailfs" job_grep "$mp/INBOX" "$NEEDLE"
    check "$label: mailfs grep matches" "$hits" "$(warm_lines)"
    measure "$label:grep_hit:doveadm" job_dv_grep mdbox "$NEEDLE"
    check "$label: doveadm search matches" "$hits" "$(warm_lines)"
    rss "$label"
    R[$label:starts]=$(getfattr --only-values -n user.mailfs.status "$mp" 2>/dev/null |
        sed -n 's/^decoder_starts: //p')
    log "  first pass: cat of every message, grep -rl, each right after a remount"
    first_pass "$label:cat_first:mailfs" "$location" "$mp" job_cat_all "$mp/INBOX"
    check "$label: mailfs first-pass cat bytes" "$total" "$(warm_bytes)"
    first_pass "$label:grep_first:mailfs" "$location" "$mp" job_grep "$mp/INBOX" "$NEEDLE"
    check "$label: mailfs first-pass grep matches" "$hits" "$(warm_lines)"
    R[$label:cat_first:doveadm]=${R[$label:cat:doveadm]}
    R[$label:grep_first:doveadm]=${R[$label:grep_hit:doveadm]}
    unmount_mailfs || die "mailfs exited with an error; see $RUN_DIR/mailfs.log"
    if grep -q 'ERROR\|panicked\|EIO' "$RUN_DIR/mailfs.log" 2>/dev/null; then
        WARNINGS+=("$label: mailfs logged errors: $(grep -m1 'ERROR\|panicked\|EIO' "$RUN_DIR/mailfs.log")")
    fi
}

zstd_measurements=(
    "cat|\`cat\` all messages, warm"
    "cat_first|\`cat\` all, first pass after mount ⁴"
    "grep_hit|\`grep -rl\` (1 % match), warm"
    "grep_first|\`grep -rl\` (1 %), first pass after mount ⁴"
)

zstd_report() {
    local label=$1 plain=$2 m key title
    echo
    echo "Compressed: the same INBOX imported by Dovecot with its zlib plugin and \`zlib_save = zstd\`"
    echo "(default level) into an mdbox: $(val "$label:stored" MiB) MiB in \`storage/\` for"
    echo "$(awk -v b="$total_bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB of messages. mailfs decodes on read;"
    echo "doveadm reads it with the zlib plugin. The uncompressed column is mailfs on the"
    echo "\`$plain\` store above."
    echo
    echo "| measurement (s) | mailfs, zstd mdbox | mailfs, uncompressed mdbox | zstd/uncompressed | doveadm, zstd mdbox | mailfs/doveadm |"
    echo "|---|---:|---:|---:|---:|---:|"
    for m in "${zstd_measurements[@]}"; do
        IFS='|' read -r key title <<<"$m"
        printf '| %s | %s | %s | %s | %s | %s |\n' "$title" \
            "$(val "$label:$key:mailfs" s)" "$(val "$plain:$key:mailfs" s)" \
            "$(ratio "$label:$key:mailfs" "$plain:$key:mailfs")" \
            "$(val "$label:$key:doveadm" s)" "$(ratio "$label:$key:mailfs" "$label:$key:doveadm")"
    done
    echo
    echo "Daemon RSS after the warm rows: $(val "$label:rss" MiB) MiB (peak $(val "$label:hwm" MiB));"
    echo "decoder starts by then: ${R[$label:starts]:-—} (each message once per mount; chunk cache 8 MiB)."
}

# ----------------------------------------------------------------------------------------
# IMAP: the Maildir user's INBOX through the same Dovecot's IMAP service on loopback, as
# imap://maildir@127.0.0.1:PORT, beside Python's imaplib, mbsync and the raw Maildir.

IMAP_PORT=""
IMAP_PASSWORD=""

# free_port: a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# imap_config: sets IMAP_PORT, IMAP_PASSWORD and the Dovecot settings for the next
# dovecot_start (appended after the defaults: the later `protocols` wins).
imap_config() {
    IMAP_PORT=$(free_port)
    IMAP_PASSWORD=bench-$RANDOM$RANDOM
    DOVECOT_PASSDB_ARGS="password=$IMAP_PASSWORD"
    DOVECOT_EXTRA="protocols = imap
disable_plaintext_auth = no
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}"
}

imap_unconfig() { DOVECOT_EXTRA="" DOVECOT_PASSDB_ARGS=""; }

# fresh_pass KEY SETUP JOB ARGS...: like measure, but SETUP (untimed) before each run, the
# checked one and the $runs timed ones.
fresh_pass() {
    local key=$1 setup=$2 i t0 t1 times=()
    shift 2
    for ((i = 0; i <= runs; i++)); do
        "$setup"
        if [ "$i" = 0 ]; then
            rm -f "$RUN_DIR/warm.out"
            sink=$RUN_DIR/warm.out
            "$@"
            sink=/dev/null
            continue
        fi
        t0=${EPOCHREALTIME/./}
        "$@"
        t1=${EPOCHREALTIME/./}
        times+=($((t1 - t0)))
    done
    R[$key]=$(median "${times[@]}")
}

# imap_fresh_mount: (re)mounts the IMAP INBOX at $IMAP_MP with an empty --cache-dir.
imap_fresh_mount() {
    unmount_mailfs || die "mailfs (IMAP) exited with an error; see $IMAP_DIR/mailfs.log"
    rm -rf "$IMAP_DIR/cache"
    mkdir -p "$IMAP_DIR/cache"
    mount_mailfs "imap://maildir@127.0.0.1:$IMAP_PORT" "$IMAP_MP" \
        --password-file "$IMAP_DIR/password" --cache-dir "$IMAP_DIR/cache"
}

# mbsync_fresh: an empty target for mbsync (its sync state lives inside it).
mbsync_fresh() {
    rm -rf "$IMAP_DIR/mbsync"
    mkdir -p "$IMAP_DIR/mbsync"
}

# job_py_fetch: LOGIN, EXAMINE INBOX, UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE),
# LOGOUT with imaplib; the FETCH alone is appended (µs) to fetch.us in timed runs.
job_py_fetch() {
    local times=/dev/null
    [ "$sink" != /dev/null ] || times=$IMAP_DIR/fetch.us
    "$PYTHON" "$IMAP_DIR/fetch.py" "$IMAP_PORT" maildir "$IMAP_DIR/password" "$times" >"$sink"
}

# job_mbsync: its warning about the password in clear goes to mbsync.log.
job_mbsync() {
    mbsync -q -c "$IMAP_DIR/mbsyncrc" bench >"$sink" 2>>"$IMAP_DIR/mbsync.log" || {
        tail -5 "$IMAP_DIR/mbsync.log" >&2
        die "mbsync failed (config: $IMAP_DIR/mbsyncrc)"
    }
}

# bench_imap LABEL N HITS: the IMAP rows, in R[LABEL:...].
bench_imap() {
    local label=$1 n=$2 hits=$3 vbytes us
    local raw=$HOME_DIR/maildir/mail/cur
    IMAP_DIR=$RUN_DIR/imap IMAP_MP=$RUN_DIR/mnt-imap MAILFS_LOG=imap/mailfs.log
    mkdir -p "$IMAP_DIR"
    printf '%s\n' "$IMAP_PASSWORD" >"$IMAP_DIR/password"
    chmod 600 "$IMAP_DIR/password"
    # IMAP sends CRLF line ends: the bytes to expect are Dovecot's virtual sizes.
    vbytes=$(dovecot_adm fetch -u maildir size.virtual mailbox INBOX all |
        awk '/^size.virtual:/ { s += $2 } END { print s + 0 }')
    R[$label:vbytes]=$vbytes
    log "$label: IMAP on 127.0.0.1:$IMAP_PORT, user maildir, $n messages ($vbytes bytes with CRLF)"
    cat >"$IMAP_DIR/fetch.py" <<'EOF'
import imaplib, sys, time
port, user, password_file, times = sys.argv[1:5]
imap = imaplib.IMAP4("127.0.0.1", int(port))
imap.login(user, open(password_file).read().strip())
typ, _ = imap.select("INBOX", readonly=True)  # EXAMINE
assert typ == "OK", typ
t0 = time.perf_counter()
typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
t1 = time.perf_counter()
assert typ == "OK", typ
imap.logout()
with open(times, "a") as f:
    f.write("%d\n" % round((t1 - t0) * 1e6))
sys.stdout.buffer.write(b"\n".join(d for d in data if d) + b"\n")
EOF
    cat >"$IMAP_DIR/mbsyncrc" <<EOF
# mailfs's cache does not fsync either.
FSync no

IMAPAccount bench
Host 127.0.0.1
Port $IMAP_PORT
User maildir
PassCmd "cat $IMAP_DIR/password"
SSLType None
AuthMechs LOGIN

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path $IMAP_DIR/mbsync/
Inbox $IMAP_DIR/mbsync/INBOX

Channel bench
Far :bench-far:
Near :bench-near:
Patterns INBOX
Sync Pull
Create Near
SyncState *
EOF

    log "  Python imaplib: LOGIN, EXAMINE, UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)"
    rm -f "$IMAP_DIR/fetch.us"
    measure "$label:ls_first:ref" job_py_fetch
    check "$label: imaplib FETCH responses" "$n" "$(warm_lines)"
    mapfile -t us <"$IMAP_DIR/fetch.us"
    R[$label:fetch_only:ref]=$(median "${us[@]}")

    log "  first ls -l, each on a fresh mount with an empty cache"
    fresh_pass "$label:ls_first:mailfs" imap_fresh_mount job_ls "$IMAP_MP/INBOX"
    check "$label: mailfs first ls -l lines" $((n + 1)) "$(warm_lines)"
    R[$label:rss_ls]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$MAILFS_PID/status")
    R[$label:fetch_only:mailfs]=${R[$label:ls_first:mailfs]}

    log "  cold cat of every message, each on a fresh mount with an empty cache"
    fresh_pass "$label:cat_cold:mailfs" imap_fresh_mount job_cat_all "$IMAP_MP/INBOX"
    check "$label: mailfs cold cat bytes" "$vbytes" "$(warm_bytes)"
    R[$label:rss_cat]=$(awk '/^VmRSS:/ { print $2 }' "/proc/$MAILFS_PID/status")
    R[$label:cache]=$(du -sk "$IMAP_DIR/cache" | cut -f1)
    log "  mbsync (Sync Pull) into a fresh Maildir"
    fresh_pass "$label:cat_cold:ref" mbsync_fresh job_mbsync
    check "$label: messages mbsync pulled" "$n" \
        "$(find "$IMAP_DIR/mbsync/INBOX/cur" "$IMAP_DIR/mbsync/INBOX/new" -type f | wc -l | tr -d ' ')"

    log "  warm cat of every message and grep -rl $NEEDLE, beside the raw Maildir"
    measure "$label:cat_warm:mailfs" job_cat_all "$IMAP_MP/INBOX"
    check "$label: mailfs warm cat bytes" "$vbytes" "$(warm_bytes)"
    measure "$label:cat_warm:ref" job_cat_all "$raw"
    check "$label: raw cat bytes" "$(meta_get "$main_store/meta" total_bytes)" "$(warm_bytes)"
    measure "$label:grep:mailfs" job_grep "$IMAP_MP/INBOX" "$NEEDLE"
    check "$label: mailfs grep matches" "$hits" "$(warm_lines)"
    measure "$label:grep:ref" job_grep "$raw" "$NEEDLE"
    check "$label: raw grep matches" "$hits" "$(warm_lines)"

    unmount_mailfs || die "mailfs (IMAP) exited with an error; see $IMAP_DIR/mailfs.log"
    if grep -q 'ERROR\|panicked' "$IMAP_DIR/mailfs.log" 2>/dev/null; then
        WARNINGS+=("$label: mailfs logged errors: $(grep -m1 'ERROR\|panicked' "$IMAP_DIR/mailfs.log")")
    fi
}

# imap_rows: the IMAP measurements (key|title|unit|reference|target ratio).
imap_measurements=(
    "ls_first|first \`ls -l\` INBOX, fresh mount, empty cache ⁵|s|Python imaplib: LOGIN, EXAMINE, \`UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)\` (whole run) ⁵|1.3"
    "fetch_only|first \`ls -l\` (as above)|s|the \`UID FETCH\` alone, timed inside the Python script ⁵|"
    "cat_cold|\`cat\` all, fresh mount, empty cache ⁶|s|\`mbsync\` (isync) of INBOX into a fresh Maildir ⁶|1.0"
    "cat_warm|\`cat\` all, warm|s|\`cat\` all of the raw Maildir \`cur/\`|1.3"
    "grep|\`grep -rl\` (1 % match), warm|s|\`grep -rl\` on the raw Maildir \`cur/\`|1.3"
)

imap_table() {
    local label=$1 m key title unit refname target r verdict
    echo "| measurement | mailfs \`imap://\` | reference | reference | mailfs/reference | target |"
    echo "|---|---:|---|---:|---:|---|"
    for m in "${imap_measurements[@]}"; do
        IFS='|' read -r key title unit refname target <<<"$m"
        [ -n "${R[$label:$key:mailfs]:-}" ] || continue
        r=$(ratio "$label:$key:mailfs" "$label:$key:ref")
        verdict=""
        if [ -n "$target" ] && [ "$r" != "—" ]; then
            verdict="≤ $target: $(awk -v r="$r" -v t="$target" 'BEGIN { print (r <= t) ? "met" : "**not met**" }')"
        fi
        printf '| %s (%s) | %s | %s | %s | %s | %s |\n' "$title" "$unit" \
            "$(val "$label:$key:mailfs" "$unit")" "$refname" "$(val "$label:$key:ref" "$unit")" "$r" "$verdict"
    done
    printf '| daemon RSS after the first `ls -l` (MiB) | %s | | | | |\n' "$(val "$label:rss_ls" MiB)"
    printf '| daemon RSS after the cold `cat` (MiB) | %s | | | | |\n' "$(val "$label:rss_cat" MiB)"
    printf '| `--cache-dir` after the cold `cat` (MiB, `du -sk`) | %s | messages with CRLF (MiB) | %s | %s | |\n' \
        "$(val "$label:cache" MiB)" "$(awk -v b="${R[$label:vbytes]}" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        "$(awk -v c="${R[$label:cache]}" -v b="${R[$label:vbytes]}" 'BEGIN { printf "%.2f", c * 1024 / b }')"
}

# ----------------------------------------------------------------------------------------
# Writes: rm, mv, setfattr and cp of $write_messages messages through a --rw mount (one
# process, and xargs -P 8), beside doveadm with one command per message and with one command
# for the whole set. One timed run each (every run changes the store); each result is
# checked with doveadm.

# box_count USER BOX: the messages in BOX, as doveadm counts them.
box_count() { dovecot_adm mailbox status -u "$1" messages "$2" | sed -n 's/.*messages=//p'; }

# flagged_count USER BOX: the flagged messages in BOX.
flagged_count() { dovecot_adm search -u "$1" mailbox "$2" FLAGGED | wc -l | tr -d ' '; }

# new_box USER MP BOX [empty]: creates BOX with doveadm, copies Src's messages into it
# (UIDs 1..N) unless "empty", and waits until the mount at MP lists them.
new_box() {
    local user=$1 mp=$2 box=$3 want=$write_messages i
    dovecot_adm mailbox create -u "$user" "$box"
    if [ "${4:-}" = empty ]; then
        want=0
    else
        dovecot_adm copy -u "$user" "$box" mailbox Src all
    fi
    for ((i = 0; i < 1000; i++)); do
        [ "$(find "$mp/$box" -maxdepth 1 -name '*.eml' 2>/dev/null | wc -l)" = "$want" ] && return 0
        sleep 0.01
    done
    die "$mp/$box does not list $want messages 10 s after doveadm made them"
}

# timed KEY CMD ARGS...: R[KEY] = the wall-clock time of one run of CMD ARGS.
timed() {
    local key=$1 t0
    shift
    t0=${EPOCHREALTIME/./}
    "$@"
    R[$key]=$((${EPOCHREALTIME/./} - t0))
}

# each_eml DIR CMD ARGS...: CMD ARGS with every *.eml in DIR appended, 25 at a time by 8
# processes at once.
each_eml() {
    local dir=$1
    shift
    find "$dir" -maxdepth 1 -name '*.eml' -print0 | xargs -0 -P 8 -n 25 "$@"
}

wjob_rm() { rm "$1"/*.eml; }
wjob_rm_par() { each_eml "$1" rm; }
wjob_dv_rm_each() {
    local u
    for ((u = 1; u <= write_messages; u++)); do dovecot_adm expunge -u "$1" mailbox "$2" uid "$u"; done
}
wjob_dv_rm_one() { dovecot_adm expunge -u "$1" mailbox "$2" all; }
wjob_mv() { mv "$1"/*.eml "$2"/; }
wjob_mv_par() { each_eml "$1" mv -t "$2"; }
wjob_dv_mv_each() {
    local u
    for ((u = 1; u <= write_messages; u++)); do dovecot_adm move -u "$1" "$3" mailbox "$2" uid "$u"; done
}
wjob_dv_mv_one() { dovecot_adm move -u "$1" "$3" mailbox "$2" all; }
wjob_flag() { setfattr -n user.mail.flags.add -v '\Flagged' "$1"/*.eml; }
wjob_flag_par() { each_eml "$1" setfattr -n user.mail.flags.add -v '\Flagged'; }
wjob_dv_flag_each() {
    local u
    for ((u = 1; u <= write_messages; u++)); do
        dovecot_adm flags add -u "$1" '\Flagged' mailbox "$2" uid "$u"
    done
}
wjob_dv_flag_one() { dovecot_adm flags add -u "$1" '\Flagged' mailbox "$2" all; }
wjob_cp() { cp "$1"/*.eml "$2"/; }
wjob_cp_par() { each_eml "$1" cp -t "$2"; }
wjob_dv_cp_each() {
    local f
    for f in "$1"/*.eml; do dovecot_adm save -u "$2" -m "$3" <"$f"; done
}
# doveadm import puts the source's INBOX under DEST/INBOX.
wjob_dv_cp_one() { dovecot_adm import -u "$2" -s "maildir:$1:INDEX=MEMORY" "$3" mailbox INBOX all; }

# bench_writes LABEL FORMAT: the four operations on the user FORMAT's store.
bench_writes() {
    local label=$1 fmt=$2 n=$write_messages location mp=$RUN_DIR/mnt-$fmt-rw
    local src=$RUN_DIR/w-src md=$RUN_DIR/w-maildir f i=0 k
    location=$(location_of "$fmt")
    log "$label: writes of $n messages through mailfs mount --rw"
    dovecot_adm mailbox create -u "$fmt" Src
    dovecot_adm copy -u "$fmt" Src mailbox INBOX uid "1:$n"
    [ "$(box_count "$fmt" Src)" = "$n" ] || die "$fmt: Src does not hold $n messages"
    mount_mailfs "$location" "$mp" --rw --user "$fmt" --doveadm "$DOVECOT_DIR/run/doveadm-server"
    # The messages to copy in: as files (for cp) and as a Maildir (for doveadm import).
    rm -rf "$src" "$md"
    mkdir -p "$src" "$md/cur" "$md/new" "$md/tmp"
    # Named apart from UID names: a saved message takes the next UID as its name, and a
    # source file of that name would then meet an existing (immutable) message.
    for f in "$mp/Src/"*.eml; do
        i=$((i + 1))
        cp "$f" "$src/restored-$i.eml"
        cp "$f" "$md/cur/$i.bench.$fmt:2,"
    done
    chown -R "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$md"

    log "  rm"
    new_box "$fmt" "$mp" R1 && timed "$label:rm:seq" wjob_rm "$mp/R1"
    new_box "$fmt" "$mp" R2 && timed "$label:rm:par" wjob_rm_par "$mp/R2"
    new_box "$fmt" "$mp" R3 && timed "$label:rm:each" wjob_dv_rm_each "$fmt" R3
    new_box "$fmt" "$mp" R4 && timed "$label:rm:one" wjob_dv_rm_one "$fmt" R4
    for k in R1 R2 R3 R4; do check "$label: messages left in $k after rm" 0 "$(box_count "$fmt" $k)"; done

    log "  mv to another mailbox"
    for k in 1 2 3 4; do new_box "$fmt" "$mp" "M$k" && new_box "$fmt" "$mp" "D$k" empty; done
    timed "$label:mv:seq" wjob_mv "$mp/M1" "$mp/D1"
    timed "$label:mv:par" wjob_mv_par "$mp/M2" "$mp/D2"
    timed "$label:mv:each" wjob_dv_mv_each "$fmt" M3 D3
    timed "$label:mv:one" wjob_dv_mv_one "$fmt" M4 D4
    for k in 1 2 3 4; do
        check "$label: messages left in M$k after mv" 0 "$(box_count "$fmt" "M$k")"
        check "$label: messages in D$k after mv" "$n" "$(box_count "$fmt" "D$k")"
    done

    log "  setfattr user.mail.flags.add"
    for k in 1 2 3 4; do new_box "$fmt" "$mp" "F$k"; done
    timed "$label:flag:seq" wjob_flag "$mp/F1"
    timed "$label:flag:par" wjob_flag_par "$mp/F2"
    timed "$label:flag:each" wjob_dv_flag_each "$fmt" F3
    timed "$label:flag:one" wjob_dv_flag_one "$fmt" F4
    for k in 1 2 3 4; do check "$label: flagged in F$k" "$n" "$(flagged_count "$fmt" "F$k")"; done

    log "  cp in"
    for k in 1 2 3; do new_box "$fmt" "$mp" "C$k" empty; done
    timed "$label:cp:seq" wjob_cp "$src" "$mp/C1"
    timed "$label:cp:par" wjob_cp_par "$src" "$mp/C2"
    timed "$label:cp:each" wjob_dv_cp_each "$src" "$fmt" C3
    timed "$label:cp:one" wjob_dv_cp_one "$md" "$fmt" C4
    for k in C1 C2 C3 C4/INBOX; do check "$label: messages in $k after cp" "$n" "$(box_count "$fmt" "$k")"; done
    check "$label: C1 lists its messages through the mount" "$n" \
        "$(find "$mp/C1" -maxdepth 1 -name '*.eml' | wc -l | tr -d ' ')"

    unmount_mailfs || die "mailfs exited with an error; see $RUN_DIR/mailfs.log"
    if grep -q 'ERROR\|panicked' "$RUN_DIR/mailfs.log" 2>/dev/null; then
        WARNINGS+=("$label writes: mailfs logged errors: $(grep -m1 'ERROR\|panicked' "$RUN_DIR/mailfs.log")")
    fi
    rm -rf "$src" "$md"
}

write_ops=(
    "rm|\`rm\` (expunge)"
    "mv|\`mv\` to another mailbox"
    "flag|\`setfattr -n user.mail.flags.add -v '\\Flagged'\`"
    "cp|\`cp\` in (save)"
)

write_table() {
    local labels=("$@") op key title label
    echo "| operation | store | mailfs, one process | mailfs, \`xargs -P 8\` | doveadm, a command per message | doveadm, one command | per-message doveadm ÷ mailfs | mailfs ÷ one command |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for op in "${write_ops[@]}"; do
        IFS='|' read -r key title <<<"$op"
        for label in "${labels[@]}"; do
            [ -n "${R[$label:$key:seq]:-}" ] || continue
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$title" "$label" \
                "$(val "$label:$key:seq" s)" "$(val "$label:$key:par" s)" \
                "$(val "$label:$key:each" s)" "$(val "$label:$key:one" s)" \
                "$(ratio "$label:$key:each" "$label:$key:seq")" \
                "$(ratio "$label:$key:seq" "$label:$key:one")"
        done
    done
}

# ----------------------------------------------------------------------------------------
# The report.

# val KEY UNIT: R[KEY] formatted (s, ms, MiB, B/msg), or an em dash.
val() {
    local v=${R[$1]:-}
    [ -n "$v" ] || { echo "—"; return; }
    case $2 in
    s) awk -v v="$v" 'BEGIN { printf "%.3f", v / 1e6 }' ;;
    ms) awk -v v="$v" 'BEGIN { printf "%.2f", v / 1e3 }' ;;
    MiB) awk -v v="$v" 'BEGIN { printf "%.1f", v / 1024 }' ;;
    esac
}

# ratio A B: R[A]/R[B], or an em dash.
ratio() {
    local a=${R[$1]:-} b=${R[$2]:-}
    if [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt 0 ]; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
    else
        echo "—"
    fi
}

# table_rows LABEL N: the rows of one store.
measurements=(
    "ls_first|first \`ls -l\` after mount ³|s"
    "ls|\`ls -l\`|s"
    "find|\`find -printf\` over all ³|s"
    "cat|\`cat\` all messages|s"
    "cat_first|\`cat\` all, first pass after mount ⁴|s"
    "grep_first|\`grep -rl\` (1 %), first pass after mount ⁴|s"
    "cat_first_np|\`cat\` all, first pass, \`--prefetch 0\` ⁴|s"
    "grep_first_np|\`grep -rl\` (1 %), first pass, \`--prefetch 0\` ⁴|s"
    "cat_cold|\`cat\` all, cold page cache ⁷|s"
    "grep_cold|\`grep -rl\` (1 %), cold page cache ⁷|s"
    "cat_held|\`cat\` all, \`--open-mode held\`|s"
    "cat_passthrough|\`cat\` all, \`--open-mode passthrough\`|s"
    "grep_hit|\`grep -rl\` (1 % match)|s"
    "grep_miss|\`grep -rl\` (no match)|s"
    "grep_held|\`grep -rl\` (1 %), \`--open-mode held\`|s"
    "grep_passthrough|\`grep -rl\` (1 %), \`--open-mode passthrough\`|s"
    "cat1|\`cat\` one message (median)|ms"
    "refresh|refresh after one delivery ¹|ms"
)

table() {
    local labels=("$@") m key title unit label
    echo "| measurement | store | mailfs | raw store | mailfs/raw | doveadm | mailfs/doveadm |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for m in "${measurements[@]}"; do
        IFS='|' read -r key title unit <<<"$m"
        for label in "${labels[@]}"; do
            [ -n "${R[$label:$key:mailfs]:-}" ] || continue
            printf '| %s (%s) | %s | %s | %s | %s | %s | %s |\n' "$title" "$unit" "$label" \
                "$(val "$label:$key:mailfs" "$unit")" "$(val "$label:$key:raw" "$unit")" \
                "$(ratio "$label:$key:mailfs" "$label:$key:raw")" \
                "$(val "$label:$key:doveadm" "$unit")" \
                "$(ratio "$label:$key:mailfs" "$label:$key:doveadm")"
        done
    done
    for label in "${labels[@]}"; do
        printf '| daemon RSS ² (MiB) | %s | %s (peak %s, at mount %s) | — | — | — | — |\n' "$label" \
            "$(val "$label:rss" MiB)" "$(val "$label:hwm" MiB)" "$(val "$label:rss0" MiB)"
    done
    for label in "${labels[@]}"; do
        printf '| RSS per message ² (bytes) | %s | %s | — | — | — | — |\n' "$label" "$(per_message "$label" rss)"
    done
    for label in "${labels[@]}"; do
        printf '| RSS growth per message, first `ls -l` ⁸ (bytes) | %s | %s | — | — | — | — |\n' \
            "$label" "$(per_message "$label" rss_ls)"
    done
}

# per_message LABEL KEY: (R[LABEL:KEY] - R[LABEL:rss0]) in bytes per message of LABEL.
per_message() {
    awk -v r="${R[$1:$2]}" -v r0="${R[$1:rss0]}" -v n="${R[$1:n]}" \
        'BEGIN { printf "%.0f", (r - r0) * 1024 / n }'
}

# targets LABEL...: issue 19's targets for the large stores, met or not.
targets() {
    local label fmt ref r v
    echo "| target (issue 19) | store | figure | target | |"
    echo "|---|---|---:|---:|---|"
    for label in "$@"; do
        fmt=${label%% *}
        if [ "$fmt" = Maildir ]; then ref=raw; else ref=doveadm; fi
        r=$(ratio "$label:ls_first:mailfs" "$label:ls_first:$ref")
        printf '| first `ls -l` after mount ÷ %s | %s | %s | ≤ 1.00 | %s |\n' \
            "$([ "$ref" = raw ] && echo 'raw `ls -l cur/`' || echo 'doveadm fetch')" "$label" "$r" "$(verdict "$r" 1.0)"
        v=$(per_message "$label" rss_ls)
        printf '| RSS growth per message, first `ls -l` (bytes) | %s | %s | ≤ 64 | %s |\n' "$label" "$v" "$(verdict "$v" 64)"
        v=$(val "$label:refresh:mailfs" ms)
        printf '| refresh after one delivery (ms) | %s | %s | ≤ 1.00 | %s |\n' "$label" "$v" "$(verdict "$v" 1.0)"
    done
}

# verdict VALUE LIMIT: met, **not met** or — (no value).
verdict() {
    case $1 in
    — | "") echo "—" ;;
    *) awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "**not met**" }' ;;
    esac
}

report() {
    local cpu mem
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "## Latest run"
    echo
    echo "Generated by \`scripts/bench.sh${*:+ $*}\`."
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); mailfs commit $commit"
    echo "- kernel $(uname -r); CPU: $cpu × $(nproc); RAM $mem; load average at start $load"
    echo "- Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1); stores on $(df -T "$store_dir" | awk 'NR == 2 { print $2 }') ($store_dir)"
    echo "- INBOX: $messages messages, $(awk -v b="$total_bytes" 'BEGIN { printf "%.1f MB", b / 1e6 }') ($hits contain \`$NEEDLE\`), seed $seed"
    echo "- median of $runs timed runs after one untimed warm-up, warm page cache; $samples messages for \`cat\` one message"
    echo
    table "${main_labels[@]}"
    if [ -n "$large" ]; then
        echo
        echo "Large stores: one Maildir and one mdbox INBOX of $large_messages messages each,"
        echo "$(awk -v b="$large_total" 'BEGIN { printf "%.1f MB", b / 1e6 }') (the Maildir written by the generator and indexed by Dovecot,"
        echo "the mdbox imported from it; message files hard-linked from the cache)${large_full:+ (--large-full)}:"
        echo
        table "${large_labels[@]}"
        echo
        targets "${large_labels[@]}"
    fi
    if [ -n "${R[$zstd_label:cat:mailfs]:-}" ]; then
        zstd_report "$zstd_label" mdbox
    fi
    if [ -n "${R[IMAP:ls_first:mailfs]:-}" ]; then
        imap_report IMAP
    elif [ -n "$IMAP_SKIP" ]; then
        echo
        echo "IMAP rows skipped: $IMAP_SKIP."
    fi
    echo
    if [ "$write_messages" != 0 ]; then
        echo
        echo "Writes: $write_messages messages per operation, one timed run each, through \`mailfs mount --rw\`"
        echo "(the doveadm server's unix socket) and by \`doveadm\` (a process per command):"
        echo
        write_table "${main_labels[@]}"
        echo
        echo "mailfs, one process: \`rm MP/box/*.eml\`, \`mv MP/a/*.eml MP/b/\`, \`setfattr ... MP/box/*.eml\`,"
        echo "\`cp dir/*.eml MP/box/\`; \`xargs -P 8\`: the same, 25 files per process, 8 processes at once."
        echo "doveadm per message: \`expunge\`, \`move\`, \`flags add\` with \`uid N\`, \`save\` of one file;"
        echo "one command: the same with \`all\`, and for \`cp\` \`doveadm import\` of a Maildir of the files."
        echo "Every call through the mount returns after Dovecot confirmed its change."
    fi
    echo
    echo "¹ mounted with \`--attr-timeout 0 --entry-timeout 0\`, so this measures mailfs and not the"
    echo "kernel's cache (with the default watcher the notifier drops the kernel's cached negative"
    echo "entry as soon as mailfs sees the change). Time from \`doveadm save\` returning until \`stat\`"
    echo "(polled in a tight loop) finds it."
    echo
    echo "² VmRSS of the daemon (/proc/PID/status) after the measurements above it (the cat/grep"
    echo "runs when they were made); peak is VmHWM; at mount is VmRSS right after mounting. Per"
    echo "message: (RSS - RSS at mount) / messages."
    echo
    echo "³ The raw store has no mount and doveadm no view to build: the first-\`ls\` row repeats"
    echo "their \`ls -l\` figures, and doveadm's \`find\` figure is its \`ls -l\` one (the same fetch)."
    echo
    echo "⁴ Each run right after a remount: mailfs builds its view from nothing and the kernel's"
    echo "FUSE page cache is empty (the store's files are in the page cache, read just before each"
    echo "run, as for the raw row, which is the warm \`cat\`/\`grep\` of the raw store). mailfs reads ahead across files"
    echo "(\`--prefetch\`, on by default); the \`--prefetch 0\` rows show the first pass without it."
    echo
    echo "⁷ Each run after \`sync; echo 3 > /proc/sys/vm/drop_caches\` (mailfs: right after a remount):"
    echo "the store's files come from the disk, for mailfs and for the raw row alike."
    echo
    echo "⁸ (VmRSS right after the first \`ls -l\` of a fresh mount - VmRSS right after that mount)"
    echo "/ messages: the view and an inode-table entry for every message the kernel now holds."
    echo
    echo "Commands (MP: the mount point; Maildir: the raw INBOX; USER: maildir, sdbox or mdbox):"
    echo
    echo "| measurement | mailfs | raw store (Maildir only) | doveadm |"
    echo "|---|---|---|---|"
    echo "| \`ls -l\` | \`ls -l MP/INBOX\` (first: right after a remount) | \`ls -l Maildir/cur\` | \`doveadm fetch -u USER 'uid size.physical date.received' mailbox INBOX all\` |"
    printf '%s\n' "| \`find\` | \`find MP -type f -printf '%s %T@ %p\\n'\` | \`find Maildir/cur -type f -printf ...\` | (as \`ls -l\`) |"
    echo "| \`cat\` all | \`find MP/INBOX -type f -exec cat {} +\` | \`find Maildir/cur -type f -exec cat {} +\` | \`doveadm fetch -u USER text mailbox INBOX all\` |"
    echo "| \`grep\` | \`grep -rlF PATTERN MP/INBOX\` | \`grep -rlF PATTERN Maildir/cur\` | \`doveadm search -u USER mailbox INBOX body PATTERN\` |"
    echo "| \`cat\` one | \`cat MP/INBOX/UID.eml\` | \`cat Maildir/cur/FILE\` | \`doveadm fetch -u USER text mailbox INBOX uid UID\` |"
    echo
    echo "Output goes to /dev/null. \`cat\` one: $samples random UIDs, one untimed pass, then the"
    echo "median over $runs passes (doveadm: one pass). Timing: bash \`\$EPOCHREALTIME\` around the command."
    echo
    if [ ${#WARNINGS[@]} -eq 0 ]; then
        echo "Checks: every warm-up output had the expected line count, byte total and matches."
    else
        echo "Checks FAILED:"
        echo
        printf -- '- %s\n' "${WARNINGS[@]}"
    fi
    echo
    echo "Duration: cargo build ${cargo_s} s; stores ${build_s} s$([ -z "$build_cached" ] || echo " (cached; the first build took $(meta_get "$main_store/meta" build_seconds) s)"); measurements ${measure_s} s."
}

imap_report() {
    local label=$1
    echo
    echo "IMAP (Dovecot on loopback): the Maildir user's INBOX ($messages messages, $(awk -v b="${R[$label:vbytes]}" 'BEGIN { printf "%.1f MB", b / 1e6 }') with CRLF line ends)"
    echo "served by the same Dovecot's IMAP service on 127.0.0.1 (no TLS, LOGIN), mounted as"
    echo "\`mailfs mount imap://maildir@127.0.0.1:PORT MP --password-file F --cache-dir D\`:"
    echo
    imap_table "$label"
    echo
    echo "⁵ Each mailfs run on a fresh mount with an empty \`--cache-dir\` (the mount logs in"
    echo "before it appears; the \`ls -l\` runs EXAMINE and the UID FETCH of the listing). The"
    echo "reference is one run of a Python $("$PYTHON" -c 'import platform; print(platform.python_version())' 2>/dev/null) script (imaplib; connect, LOGIN, EXAMINE, the"
    echo "FETCH, LOGOUT; Python's start-up included); the second row is its FETCH alone, timed inside"
    echo "the script with \`time.perf_counter()\`."
    echo
    echo "⁶ \`find MP/INBOX -type f -exec cat {} +\` on a fresh mount with an empty \`--cache-dir\`:"
    echo "every byte comes over IMAP (\`BODY.PEEK[]\`) and is written to the cache. mbsync"
    echo "$(mbsync --version 2>/dev/null | awk '{ print $2 }'): \`Sync Pull\`, \`Create Near\`, \`FSync no\` (the cache does not fsync either), into an"
    echo "empty Maildir each run (its own login included; the mount's login is not)."
    echo "Warm rows: after the cold \`cat\` (the cache and the page cache are warm), median of"
    echo "the runs after a checked warm-up, as above; the raw Maildir's files have LF line ends."
}

# write_doc FILE: replaces the "## Latest run" section (to the next "## " or the end).
write_doc() {
    local file=$1 section=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    if [ -f "$file" ] && grep -q '^## Latest run' "$file"; then
        awk -v sec="$section" '
            /^## Latest run/ { while ((getline line < sec) > 0) print line; skip = 1; next }
            skip && /^## / { skip = 0; print ""; }
            !skip { print }' "$file" >"$tmp"
    else
        { [ ! -f "$file" ] || { cat "$file" && echo; }; cat "$section"; } >"$tmp"
    fi
    mv "$tmp" "$file"
}

# ----------------------------------------------------------------------------------------
# Main

load=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)

started=$(now_us)
log "cargo build --release"
cargo build --release >&2
# Where cargo put it (CARGO_TARGET_DIR, build.target-dir or ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$target_dir" ]; then
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$repo/$target_dir
fi
bin=$target_dir/release/mailfs
[ -x "$bin" ] || die "no mailfs binary at $bin after cargo build"
cargo_s=$((($(now_us) - started) / 1000000))

t=$(now_us)
ensure_store "$messages" "${FORMATS[@]}"
main_store=$STORE
build_cached=$STORE_CACHED
if [ -n "$large" ]; then
    STORE_DIRECT=1 ensure_store "$large_messages" maildir mdbox
    large_store=$STORE
    [ -n "$STORE_CACHED" ] || build_cached=""
fi
if [ -n "$zstd" ]; then
    STORE_ZLIB=zstd ensure_store "$messages" mdbox
    zstd_store=$STORE
    [ -n "$STORE_CACHED" ] || build_cached=""
fi
build_s=$((($(now_us) - t) / 1000000))

t=$(now_us)
total_bytes=$(meta_get "$main_store/meta" total_bytes)
hits=$(meta_get "$main_store/meta" hits)
[ -z "$imap" ] || imap_config
start_run "$main_store"
imap_unconfig
if [ -n "$imap" ]; then
    # In a subshell, so that a failure skips the IMAP rows instead of ending the run
    # (unless --imap); its results come back through a file. First, while the Maildir
    # INBOX holds exactly the generated messages (the refresh rows add some).
    set +e
    (
        set -e
        trap 'unmount_mailfs >/dev/null 2>&1' EXIT
        bench_imap IMAP "$messages" "$hits"
        declare -p R WARNINGS >"$RUN_DIR/imap/results"
    )
    status=$?
    set -e
    if [ "$status" = 0 ]; then
        # shellcheck disable=SC1091
        . "$RUN_DIR/imap/results"
    else
        [ "$imap" = auto ] || die "the IMAP measurements failed (--imap); see above"
        IMAP_SKIP="the IMAP measurements failed (exit status $status; see the progress output)"
        log "skipping the IMAP rows: $IMAP_SKIP"
    fi
fi
main_labels=()
for fmt in "${FORMATS[@]}"; do
    label=$fmt
    [ "$fmt" = maildir ] && label=Maildir
    main_labels+=("$label")
    R[$label:n]=$messages
    bench_format "$label" "$fmt" "$messages" "$total_bytes" "$hits" 1
    [ "$write_messages" = 0 ] || bench_writes "$label" "$fmt"
done
end_run

zstd_label="mdbox zstd"
if [ -n "$zstd" ]; then
    DOVECOT_EXTRA=$ZLIB_PLUGIN start_run "$zstd_store"
    bench_zstd "$zstd_label" "$messages" "$total_bytes" "$hits"
    end_run
fi

large_labels=("Maildir $large_messages" "mdbox $large_messages")
if [ -n "$large" ]; then
    large_total=$(meta_get "$large_store/meta" total_bytes)
    start_run "$large_store" link
    WARM_STORES=""
    for label in "${large_labels[@]}"; do
        fmt=${label%% *}
        [ "$fmt" = Maildir ] && fmt=maildir
        R[$label:n]=$large_messages
        bench_format "$label" "$fmt" "$large_messages" "$large_total" \
            "$(meta_get "$large_store/meta" hits)" "$large_full"
    done
    end_run
fi
measure_s=$((($(now_us) - t) / 1000000))

section=$(mktemp "${TMPDIR:-/tmp}/mailfs-bench-report.XXXXXX")
report "$args" >"$section"
cat "$section"
if [ -n "$write" ]; then
    write_doc docs/benchmarks.md "$section"
    log "wrote docs/benchmarks.md"
fi
rm -f "$section"
