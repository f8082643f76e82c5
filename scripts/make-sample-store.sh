#!/usr/bin/env bash
# Builds a small, varied Maildir++ store with a private Dovecot and writes it to
# tests/fixtures/sample-maildir.tar (or $1). Used by scripts/demo.sh and the tests.
#
# The store: INBOX, Work, Work/Projects, Archive/2023 (Archive itself is no mailbox),
# "Ünïcode & more", Drafts, Spam and an empty "Later"; ~20 realistic messages with fixed
# received dates, system flags and keywords, one Latin-1 message, one without a final
# newline, one stored with CRLF, one expunged. Files are in new/ and cur/ as Dovecot left
# them, with its index, uidlist and keyword files.
#
# tar keeps mtimes, which are the messages' received dates. Owner is normalised to 0.
# Needs dovecot-core and dovecot-imapd (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/dovecot.sh
. scripts/lib/dovecot.sh

out=${1:-tests/fixtures/sample-maildir.tar}
case $out in /*) ;; *) out=$PWD/$out ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/mailfs-sample.XXXXXX")
chmod 755 "$work"
trap 'dovecot_stop; rm -rf "$work"' EXIT

dovecot_start "$work/dovecot"
dovecot_user sample
src=$work/src

# add MAILBOX FLAGS EPOCH < message   (MAILBOX "" is INBOX; FLAGS are Maildir letters)
add() {
    local dir=$src${1:+/$1}
    mkdir -p "$dir/cur" "$dir/new" "$dir/tmp"
    printf '0 $Label1\n1 work\n2 $Forwarded\n3 $Junk\n4 invoice\n' >"$dir/dovecot-keywords"
    # (runs in a pipeline subshell: keep the counter in a file)
    local n=$(($(cat "$work/n" 2>/dev/null || echo 0) + 1))
    echo "$n" >"$work/n"
    local f="$dir/cur/$3.M${n}P1.sample:2,$2"
    cat >"$f"
    touch -d "@$3" "$f"
}

# mail EPOCH FROM SUBJECT BODY
mail() {
    printf 'Return-Path: <%s>\nFrom: %s\nTo: Sam Sample <sam@example.com>\nSubject: %s\n' "$2" "$2" "$3"
    printf 'Date: %s\nMessage-ID: <%s.sample@example.org>\nMIME-Version: 1.0\n' \
        "$(date -u -R -d "@$1")" "$1"
    printf 'Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n' "$4"
}

t=1704103200 # 2024-01-01 10:00 UTC
mail $t alice@example.org "Welcome to the team" "Hi Sam,

welcome aboard! Your desk is next to the window.

Alice" | add "" S $t
mail $((t + 3600)) billing@example.net "Invoice 2024-001" "Please find invoice 2024-001 for January attached.
Amount due: 120.00 EUR" | add "" Sae $((t + 3600))
mail $((t + 7200)) bob@example.org "Lunch on Friday?" "Pizza or sushi?" | add "" RS $((t + 7200))
mail $((t + 86400)) news@example.com "Weekly digest" "Top stories this week: ..." | add "" "" $((t + 86400))
mail $((t + 90000)) carol@example.org "Re: project kickoff" "> Can we meet on Monday?
Monday works for me." | add "" FSb $((t + 90000))
mail $((t + 93600)) dave@example.org "Photos from the trip" "Here are the photos I promised." | add "" Sc $((t + 93600))
mail $((t + 97200)) erin@example.org "Please delete me" "This one gets expunged." | add "" S $((t + 97200))
printf 'From: Ren\xe9 <rene@example.fr>\nTo: sam@example.com\nSubject: caf\xe9 cr\xe8me\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\nNa\xefve fa\xe7ade, \xa3100.\n' |
    add "" "" $((t + 100800))
mail $((t + 172800)) noreply@example.net "No final newline" "This body ends without a newline." |
    head -c -1 | add "" "" $((t + 172800))

mail $((t + 200000)) boss@example.com "Q1 planning" "Agenda attached. Please review before Thursday." | add Work Sb $((t + 200000))
mail $((t + 210000)) hr@example.com "Holiday calendar" "The 2024 holiday calendar is now online." | add Work S $((t + 210000))
mail $((t + 220000)) boss@example.com "Re: Q1 planning" "Thanks, looks good." | add Work RSb $((t + 220000))
mail $((t + 300000)) ci@example.com "Build #42 failed" "test maildir::flags failed" | add Work/Projects "" $((t + 300000))
mail $((t + 310000)) ci@example.com "Build #43 passed" "All green." | add Work/Projects S $((t + 310000))
mail $((t + 320000)) frank@example.org "Design review notes" "See the notes in the wiki." | add Work/Projects FSbc $((t + 320000))
mail 1672567200 bank@example.com "Statement December 2022" "Your statement is ready." | add Archive/2023 Se 1672567200
mail 1675245600 bank@example.com "Statement January 2023" "Your statement is ready." | add Archive/2023 Se 1675245600
mail $((t + 400000)) jürgen@example.de "Grüße aus Köln" "Schöne Grüße und bis bald! ✉" | add "Ünïcode & more" S $((t + 400000))
mail $((t + 410000)) yuki@example.jp "こんにちは" "日本語のメールです。🎉" | add "Ünïcode & more" "" $((t + 410000))
mail $((t + 500000)) sam@example.com "Draft: reply to Alice" "Thanks Alice, ..." | add Drafts DS $((t + 500000))
mail $((t + 600000)) winner@example.biz "You have won!!!" "Claim your prize now." | add Spam Sd $((t + 600000))

chown -R "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$src"
dovecot_adm import -u sample -s "maildir:$src:LAYOUT=fs:UTF-8" "" all
dovecot_adm mailbox create -u sample Later
printf 'From: ops@example.com\r\nTo: sam@example.com\r\nSubject: Stored with CRLF\r\n\r\nLine one\r\nLine two\r\n' |
    dovecot_adm -o mail_save_crlf=yes save -u sample -m INBOX
doomed=$(dovecot_adm fetch -u sample uid mailbox INBOX header Subject "Please delete me" | sed -n 's/^uid: //p')
dovecot_adm expunge -u sample mailbox INBOX uid "$doomed"
dovecot_adm flags add -u sample '\Flagged' mailbox INBOX header Subject "Weekly digest"

echo "mailboxes:"
dovecot_adm mailbox status -u sample 'messages uidnext' '*' | sed 's/^/  /'
dovecot_stop
mkdir -p "$(dirname "$out")"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$DOVECOT_DIR/home/sample" -cf "$out" Maildir
echo "wrote $out ($(wc -c <"$out") bytes)"
