#!/usr/bin/env python3
"""Staleness benchmark driver for mailfs (python3.11, standard library only).

Used by scripts/staleness-bench.sh and scripts/glusterfs-coherence.sh; not a test.

  staleness_bench.py seed   --conf C --user U [--messages N] [--seed S]
  staleness_bench.py run    --conf C --user U --mount M --label L --out FILE.json
                            --bound-ms B [--changes N] [--seed S] [--cap-s S]
                            [--probe-sleep-ms P] [--linger-ms L] [--raw-a A --raw-b B]
  staleness_bench.py report --title T [--write docs/benchmarks.md] FILE.json...

Changes are made by ONE long-lived IMAP session, `doveadm -c C exec imap -u U`, which is
pre-authenticated and speaks IMAP on stdin/stdout (one doveadm process per change would cost
10-40 ms each). One change at a time:

  1. the reader observes through the mount the state the change will alter (stat of the
     names, listing of the directories, `user.mail.flags`), so the kernel has it cached;
  2. the change is sent; t0 is taken when its tagged OK arrives;
  3. the reader probes the same observations (sleeping --probe-sleep-ms between probes)
     until all show the new state: time-to-visible = t1 - t0;
  4. it keeps probing until the bound has passed (and --linger-ms more); every probe after
     the bound in which any observation still shows the old state is a "stale read after
     the bound". If nothing is visible after --cap-s, the change is counted as never visible.

With --raw-a/--raw-b (scripts/glusterfs-coherence.sh: a Maildir++ store on a shared
filesystem, Dovecot writing through client A, mailfs reading through client B), each change
is also observed on the raw files through B, in the same probe loop: `stat` of the message
file Dovecot created, renamed (flags) or unlinked, or of the mailbox directory, with the
names taken from A. Its time-to-visible (the shared filesystem's own staleness) is
reported beside mailfs's.

What each kind measures: the kernel caches entries, negative entries, attributes and
directory listings (60 s), so append, expunge and the mailbox operations show the
watcher's invalidations. It never caches xattrs: `user.mail.flags` always reaches mailfs,
so flags and keywords measure how soon mailfs's own store view sees the change.

STL_TRACE=1 prints the wall-clock time of each change (observed, OK) on stderr, to line up
with a mailfs debug log or strace.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

now_ns = time.monotonic_ns
TRACE = os.environ.get("STL_TRACE") == "1"   # wall-clock times of each change, on stderr

SYSTEM_FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft"]
KEYWORDS = ["$Label1", "$Label2", "$Label3", "$Label4", "$Label5", "Junk", "NonJunk", "todo"]
# Mailboxes the workload may append to and change; created by `seed` if missing.
BASE_MAILBOXES = ["INBOX", "Archive", "Lists", "Work", "Work/Projects"]
# Parents for mailboxes the workload creates, renames and deletes (B<n>).
PARENTS = ["", "Lists/", "Archive/", "Work/Projects/"]
# Change kinds and their weights: mostly saves, flag changes and expunges.
MIX = [
    ("append", 30),
    ("flags", 24),
    ("keywords", 12),
    ("expunge", 22),
    ("create", 4),
    ("rename", 4),
    ("delete", 4),
]
KIND_ORDER = [k for k, _ in MIX]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- IMAP session ---

class ImapError(Exception):
    pass


class Imap:
    """One pre-authenticated IMAP session through `doveadm exec imap`."""

    def __init__(self, conf, user, errlog):
        self.err = open(errlog, "ab")
        self.p = subprocess.Popen(
            ["doveadm", "-c", conf, "exec", "imap", "-u", user],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, bufsize=0)
        self.r = self.p.stdout
        self.n = 0
        greeting = self._line()
        if not greeting.startswith(b"* PREAUTH"):
            raise ImapError("no PREAUTH greeting: %r" % greeting)
        if b"UIDPLUS" not in greeting or b"LITERAL+" not in greeting:
            raise ImapError("server lacks UIDPLUS or LITERAL+: %r" % greeting)
        self.selected = None

    def _line(self):
        """One response line, literals included inline."""
        buf = b""
        while True:
            line = self.r.readline()
            if not line:
                raise ImapError("IMAP session closed (see the doveadm log)")
            buf += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return buf
            buf += self._read(int(m.group(1)))

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.r.read(n - len(out))
            if not chunk:
                raise ImapError("IMAP session closed inside a literal")
            out += chunk
        return out

    def cmd(self, text, literal=None):
        """Sends one command (with an optional LITERAL+ literal); returns (tagged line,
        untagged lines) once the tagged response arrives. Raises unless it is OK."""
        self.n += 1
        tag = b"t%d" % self.n
        data = tag + b" " + text.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.p.stdin.write(data + b"\r\n")
        self.p.stdin.flush()
        untagged = []
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1:].startswith(b"OK"):
                    raise ImapError("%s -> %s" % (text, line.decode(errors="replace").strip()))
                return line, untagged
            if line.startswith(b"* BYE"):
                raise ImapError("server said BYE: %r" % line)
            untagged.append(line)

    def select(self, mailbox):
        if self.selected == mailbox:
            return []
        _, untagged = self.cmd('SELECT "%s"' % mailbox)
        self.selected = mailbox
        return untagged

    def unselect(self):
        if self.selected is not None:
            self.cmd("UNSELECT")
            self.selected = None

    def close(self):
        try:
            self.cmd("LOGOUT")
        except (ImapError, OSError):
            pass
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def parse_flags(line):
    m = re.search(rb"FLAGS \(([^)]*)\)", line)
    if not m:
        return None
    return frozenset(f for f in m.group(1).decode().split() if f != "\\Recent")


def discover(imap):
    """The mailboxes (selectable ones) with UIDNEXT and each message's flags."""
    _, lines = imap.cmd('LIST "" "*"')
    boxes = {}
    for line in lines:
        m = re.match(rb'\* LIST \(([^)]*)\) "[^"]*" (.*)\r\n$', line)
        if not m:
            continue
        attrs, name = m.group(1).decode(), m.group(2).decode()
        if name.startswith('"'):
            name = name[1:-1]
        if "\\Noselect" in attrs or "\\NonExistent" in attrs:
            continue
        boxes[name] = None
    for name in sorted(boxes):
        untagged = imap.select(name)
        uidnext = 1
        for line in untagged:
            m = re.search(rb"\[UIDNEXT (\d+)\]", line)
            if m:
                uidnext = int(m.group(1))
        msgs = {}
        _, lines = imap.cmd("UID FETCH 1:* (FLAGS)")
        for line in lines:
            m = re.search(rb"UID (\d+)", line)
            fl = parse_flags(line)
            if m and fl is not None:
                msgs[int(m.group(1))] = fl
        boxes[name] = {"uidnext": uidnext, "msgs": msgs}
    imap.unselect()
    return boxes


def make_message(rng, n):
    words = ["mail", "store", "index", "flag", "cache", "dovecot", "kernel", "fuse",
             "invalidate", "stale", "entry", "inode", "quota", "report", "meeting"]
    lines = ["From: Sender %d <s%d@example.org>" % (n, rng.randrange(1000)),
             "To: bench@example.com",
             "Subject: staleness %d %s" % (n, rng.choice(words)),
             "Message-ID: <%d.%d@staleness.bench>" % (n, rng.randrange(1 << 30)),
             "Date: Mon, 1 Jan 2024 00:00:00 +0000",
             ""]
    for _ in range(rng.randrange(2, 40)):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randrange(3, 14))))
    return ("\r\n".join(lines) + "\r\n").encode()


def imap_flags(flags):
    return "(" + " ".join(sorted(flags)) + ")"


# ---------------------------------------------------------------- observations ---
# An observation is (kind, path[, name]) evaluated to a hashable state through the mount.

def observe(o):
    kind, path = o[0], o[1]
    try:
        if kind == "exists":          # stat(path): does the name exist?
            os.stat(path)
            return True
        if kind == "isdir":
            return os.path.isdir(path) if os.path.lexists(path) else False
        if kind == "listed":          # is o[2] in listdir(path)?
            return o[2] in os.listdir(path)
        if kind == "flags":           # user.mail.flags as a set
            v = os.getxattr(path, "user.mail.flags").decode()
            return frozenset(v.split())
    except FileNotFoundError:
        return None if kind == "flags" else False
    except OSError as e:
        return "error:%s" % (e.strerror or e.errno)
    raise ValueError(kind)


def fmt_state(s):
    if isinstance(s, frozenset):
        return " ".join(sorted(s))
    return str(s)


# ---------------------------------------------------------------------- workload ---

class Workload:
    def __init__(self, imap, boxes, rng, mount, mix=MIX):
        self.imap, self.boxes, self.rng, self.mount = imap, boxes, rng, mount
        self.mix = mix
        self.counter = 0
        for name in boxes:
            m = re.search(r"(?:^|/)B(\d+)$", name)
            if m:
                self.counter = max(self.counter, int(m.group(1)))

    # -- paths in the mount
    def mbox_dir(self, name):
        return os.path.join(self.mount, *name.split("/"))

    def msg_path(self, name, uid):
        return os.path.join(self.mbox_dir(name), "%d.eml" % uid)

    def parent_and_leaf(self, name):
        parts = name.split("/")
        return os.path.join(self.mount, *parts[:-1]), parts[-1]

    # -- choices
    def bench_leaves(self):
        """Mailboxes the workload created that have no children."""
        out = []
        for n in self.boxes:
            if not re.search(r"(?:^|/)B\d+$", n):
                continue
            if any(o.startswith(n + "/") for o in self.boxes):
                continue
            out.append(n)
        return sorted(out)

    def pick_mailbox(self, need_messages=False):
        names = sorted(n for n in self.boxes if not need_messages or self.boxes[n]["msgs"])
        if not names:
            return None
        weights = [6 if n == "INBOX" else 1 for n in names]
        return self.rng.choices(names, weights)[0]

    def new_name(self):
        self.counter += 1
        return self.rng.choice(PARENTS) + "B%d" % self.counter

    def pick_kind(self):
        total_msgs = sum(len(b["msgs"]) for b in self.boxes.values())
        leaves = self.bench_leaves()
        while True:
            kind = self.rng.choices([k for k, _ in self.mix], [w for _, w in self.mix])[0]
            if kind == "expunge" and total_msgs < 20 and "append" in dict(self.mix):
                kind = "append"
            if kind in ("flags", "keywords", "expunge") and total_msgs == 0:
                continue
            if kind in ("rename", "delete") and not leaves:
                kind = "create"
            if kind == "create" and len(leaves) >= 12:
                kind = "delete"
            return kind

    # -- one change: returns (kind, detail, pre-observations [(obs, new_state)], send())
    def plan(self, kind):
        rng, imap = self.rng, self.imap
        if kind == "append":
            box = self.pick_mailbox()
            b = self.boxes[box]
            flags = set()
            for f in SYSTEM_FLAGS:
                if rng.random() < 0.2:
                    flags.add(f)
            if rng.random() < 0.15:
                flags.add(rng.choice(KEYWORDS))
            body = make_message(rng, self.counter * 100000 + b["uidnext"])
            guess = b["uidnext"]
            name = "%d.eml" % guess
            obs = [(("exists", self.msg_path(box, guess)), True),
                   (("listed", self.mbox_dir(box), name), True),
                   (("flags", self.msg_path(box, guess)), frozenset(flags))]

            def send():
                tagged, _ = imap.cmd('APPEND "%s" %s' % (box, imap_flags(flags)), body)
                m = re.search(rb"APPENDUID \d+ (\d+)", tagged)
                if not m:
                    raise ImapError("no APPENDUID: %r" % tagged)
                uid = int(m.group(1))
                b["msgs"][uid] = frozenset(flags)
                b["uidnext"] = uid + 1
                if uid != guess:   # another UID than predicted: observe the real one
                    return [(("exists", self.msg_path(box, uid)), True),
                            (("listed", self.mbox_dir(box), "%d.eml" % uid), True),
                            (("flags", self.msg_path(box, uid)), frozenset(flags))]
                return None
            return "%s +%d" % (box, guess), obs, send, (box, guess)

        if kind in ("flags", "keywords"):
            box = self.pick_mailbox(need_messages=True)
            b = self.boxes[box]
            uid = rng.choice(sorted(b["msgs"]))
            cur = b["msgs"][uid]
            pool = SYSTEM_FLAGS if kind == "flags" else KEYWORDS
            f = rng.choice(pool)
            op = "-FLAGS" if f in cur else "+FLAGS"
            imap.select(box)
            path = self.msg_path(box, uid)
            expect = (cur - {f}) if op == "-FLAGS" else (cur | {f})
            obs = [(("flags", path), frozenset(expect))]

            def send():
                _, lines = imap.cmd("UID STORE %d %s (%s)" % (uid, op, f))
                got = None
                for line in lines:
                    if re.search(rb"UID %d\b" % uid, line):
                        got = parse_flags(line)
                if got is None:
                    raise ImapError("no FETCH FLAGS for UID %d after STORE" % uid)
                b["msgs"][uid] = got
                if got != expect:
                    return [(("flags", path), got)]
                return None
            return "%s %d %s%s" % (box, uid, op[0], f), obs, send, (box, uid)

        if kind == "expunge":
            box = self.pick_mailbox(need_messages=True)
            b = self.boxes[box]
            uid = rng.choice(sorted(b["msgs"]))
            imap.select(box)
            imap.cmd("UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            b["msgs"][uid] = b["msgs"][uid] | {"\\Deleted"}
            obs = [(("exists", self.msg_path(box, uid)), False),
                   (("listed", self.mbox_dir(box), "%d.eml" % uid), False)]

            def send():
                imap.cmd("UID EXPUNGE %d" % uid)
                del b["msgs"][uid]
                return None
            return "%s %d" % (box, uid), obs, send, (box, uid)

        if kind == "create":
            name = self.new_name()
            parent, leaf = self.parent_and_leaf(name)
            obs = [(("isdir", self.mbox_dir(name)), True),
                   (("listed", parent, leaf), True)]

            def send():
                imap.cmd('CREATE "%s"' % name)
                self.boxes[name] = {"uidnext": 1, "msgs": {}}
                return None
            return name, obs, send, (name, None)

        if kind == "delete":
            name = rng.choice(self.bench_leaves())
            if imap.selected == name:
                imap.unselect()
            parent, leaf = self.parent_and_leaf(name)
            obs = [(("isdir", self.mbox_dir(name)), False),
                   (("listed", parent, leaf), False)]

            def send():
                imap.cmd('DELETE "%s"' % name)
                del self.boxes[name]
                return None
            return "%s (%d msgs)" % (name, len(self.boxes[name]["msgs"])), obs, send, (name, None)

        if kind == "rename":
            old = rng.choice(self.bench_leaves())
            new = self.new_name()
            if imap.selected == old:
                imap.unselect()
            op_, ol = self.parent_and_leaf(old)
            np_, nl = self.parent_and_leaf(new)
            obs = [(("isdir", self.mbox_dir(old)), False),
                   (("listed", op_, ol), False),
                   (("isdir", self.mbox_dir(new)), True),
                   (("listed", np_, nl), True)]

            def send():
                imap.cmd('RENAME "%s" "%s"' % (old, new))
                self.boxes[new] = self.boxes.pop(old)
                return None
            return "%s -> %s" % (old, new), obs, send, (new, None, old)
        raise ValueError(kind)


# ------------------------------------------------------------------ raw-store view ---

class RawStore:
    """The Maildir++ store as two clients of a shared filesystem see it: `a`, through which
    Dovecot writes (authoritative for file names), and `b`, the client mailfs reads through.
    For each change, the observation of the raw files on `b` that corresponds to it (plain
    stat of the message file or mailbox directory Dovecot changed), to measure the shared
    filesystem's own staleness beside mailfs's."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    @staticmethod
    def rel(box):
        return "" if box == "INBOX" else "." + box.replace("/", ".")

    def file_of(self, box, uid):
        """`cur/<name>` or `new/<name>` of `uid`, as client A sees it (Dovecot wrote it
        through A before its OK): dovecot-uidlist gives the base name, the listing the
        current name."""
        d = os.path.join(self.a, self.rel(box))
        try:
            with open(os.path.join(d, "dovecot-uidlist"), "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()[1:]
        except OSError:
            return None
        base = None
        for line in lines:
            head, _, rest = line.partition(" ")
            if head == str(uid):
                base = rest.split(":", 1)[1] if ":" in rest else rest.split()[-1]
                break
        if base is None:
            return None
        for sub in ("cur", "new"):
            try:
                for n in os.listdir(os.path.join(d, sub)):
                    if n == base or n.startswith(base + ":"):
                        return os.path.join(self.rel(box), sub, n)
            except OSError:
                pass
        return None

    def before(self, kind, where):
        """Caches the old state on B (as a reader of B would have it); returns a context."""
        box, uid = where[0], where[1]
        ctx = {"kind": kind, "box": box, "uid": uid}
        if kind in ("create", "delete", "rename"):
            ctx["old_dir"] = self.rel(box) if kind == "delete" else None
            if kind == "rename":
                ctx["old_dir"] = self.rel(where[2])
            for rel in filter(None, [self.rel(box), ctx["old_dir"]]):
                os.path.isdir(os.path.join(self.b, rel))
            return ctx
        if kind == "append":
            for sub in ("new", "cur"):
                try:
                    os.listdir(os.path.join(self.b, self.rel(box), sub))
                except OSError:
                    pass
            return ctx
        ctx["old_file"] = self.file_of(box, uid)
        if ctx["old_file"]:
            try:
                os.stat(os.path.join(self.b, ctx["old_file"]))
            except OSError:
                pass
        return ctx

    def after(self, ctx):
        """After the change: a list of (path on B, should exist) that B must show."""
        kind, box, uid = ctx["kind"], ctx["box"], ctx["uid"]
        B = lambda rel: os.path.join(self.b, rel)
        if kind == "create":
            return [(B(self.rel(box)), True)]
        if kind == "delete":
            return [(B(ctx["old_dir"]), False)]
        if kind == "rename":
            return [(B(ctx["old_dir"]), False), (B(self.rel(box)), True)]
        if kind == "append":
            f = self.file_of(box, uid)
            return [(B(f), True)] if f else []
        if kind == "expunge":
            return [(B(ctx["old_file"]), False)] if ctx["old_file"] else []
        # flags, keywords: the file is renamed (old name gone, new name there); a change
        # that left the name alone (e.g. a keyword beyond the file name's 26) has nothing.
        new = self.file_of(box, uid)
        old = ctx["old_file"]
        if not old or not new or old == new:
            return []
        return [(B(old), False), (B(new), True)]


def raw_done(checks):
    for path, want in checks:
        try:
            os.stat(path)
            there = True
        except FileNotFoundError:
            there = False
        except OSError:
            return False
        if there != want:
            return False
    return True


# ------------------------------------------------------------------------- run ---

def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


MOUNT_PREFIX = [""]


def short(path):
    """`path` relative to the mount, for reports."""
    p = MOUNT_PREFIX[0]
    return "MOUNT/" + path[len(p):].lstrip("/") if p and path.startswith(p) else path


def diagnose(obs):
    """For a change never seen: what mailfs itself answers (getxattr always reaches the
    daemon; the kernel does not cache xattrs), to tell a stale kernel cache (mailfs knows,
    the kernel was not told) from a stale store view in mailfs."""
    out = []
    for o, want in obs:
        if o[0] == "exists":
            try:
                uid = os.getxattr(o[1], "user.mail.uid").decode()
                out.append("getxattr(%s, user.mail.uid) = %s" % (short(o[1]), uid))
            except OSError as e:
                out.append("getxattr(%s, user.mail.uid): %s" % (short(o[1]), e.strerror))
            d = os.path.dirname(o[1])
            try:
                nxt = os.getxattr(d, "user.mailbox.uidnext").decode()
                out.append("getxattr(%s, user.mailbox.uidnext) = %s" % (short(d), nxt))
            except OSError as e:
                out.append("getxattr(%s, user.mailbox.uidnext): %s" % (short(d), e.strerror))
    return " [mailfs now: " + "; ".join(out) + "]" if out else ""


def probe_until(obs, bound_ns, cap_ns, linger_ns, sleep_s, t0, raw=None):
    """Probes `obs` [(observation, wanted)] from t0 on. Returns (visible_ns or None,
    stale probes after the bound, probes, first stale detail, raw_ns). `raw`, if given,
    is a list of (path, should exist) checked on the shared filesystem's client B in the
    same loop (raw_ns: when all first held)."""
    visible = None
    stale = 0
    probes = 0
    detail = None
    raw_ns = None
    while True:
        t = now_ns()
        if raw is not None and raw_ns is None and raw_done(raw):
            raw_ns = t - t0
        states = [observe(o) for o, _ in obs]
        probes += 1
        ok = all(s == want for s, (_, want) in zip(states, obs))
        el = t - t0
        if ok and visible is None:
            visible = el
        if not ok and el > bound_ns:
            stale += 1
            if detail is None:
                detail = "; ".join("%s %s: %s (want %s)" % (o[0], short(o[1]), fmt_state(s),
                                                            fmt_state(w))
                                   for s, (o, w) in zip(states, obs) if s != w)
        end_ok = (visible is not None and el > bound_ns + linger_ns
                  and (raw is None or raw_ns is not None))
        if end_ok or el > cap_ns:
            if visible is None:
                detail = (detail or "") + diagnose(obs)
            return visible, stale, probes, detail, raw_ns
        time.sleep(sleep_s)


def parse_mix(text):
    """`append=30,expunge=20,...` -> [(kind, weight)]."""
    mix = []
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in KIND_ORDER:
            sys.exit("--mix: unknown change kind %r (%s)" % (kind, ", ".join(KIND_ORDER)))
        mix.append((kind, float(weight or 1)))
    return mix


def cmd_seed(a):
    rng = random.Random(a.seed)
    imap = Imap(a.conf, a.user, a.imap_log)
    boxes = discover(imap)
    for name in BASE_MAILBOXES:
        if name not in boxes:
            if name != "INBOX":
                imap.cmd('CREATE "%s"' % name)
            boxes[name] = {"uidnext": 1, "msgs": {}}
    n = 0
    for i in range(a.messages):
        box = BASE_MAILBOXES[0] if i % 3 == 0 else rng.choice(BASE_MAILBOXES)
        flags = {f for f in SYSTEM_FLAGS if rng.random() < 0.3}
        imap.cmd('APPEND "%s" %s' % (box, imap_flags(flags)), make_message(rng, i))
        n += 1
    # SELECT each once: Maildir moves new/ to cur/, as a client's first look would.
    for name in BASE_MAILBOXES:
        imap.select(name)
    imap.unselect()
    imap.close()
    log("seeded %d messages in %d mailboxes" % (n, len(BASE_MAILBOXES)))


def cmd_run(a):
    rng = random.Random(a.seed)
    imap = Imap(a.conf, a.user, a.imap_log)
    boxes = discover(imap)
    if not boxes:
        sys.exit("no mailboxes: run `seed` first")
    w = Workload(imap, boxes, rng, a.mount, parse_mix(a.mix) if a.mix else MIX)
    MOUNT_PREFIX[0] = a.mount
    raw = RawStore(a.raw_a, a.raw_b) if a.raw_b else None
    bound_ns = int(a.bound_ms * 1e6)
    cap_ns = int(a.cap_s * 1e9)
    linger_ns = int(a.linger_ms * 1e6)
    sleep_s = a.probe_sleep_ms / 1000.0
    results = []
    started = time.time()
    last_report = started
    for i in range(a.changes):
        kind = w.pick_kind()
        detail, obs, send, where = w.plan(kind)
        # 1. the reader caches the old state
        for o, _ in obs:
            observe(o)
        ctx = raw.before(kind, where) if raw is not None else None
        # 2. the change
        if TRACE:
            log("trace #%d %s %s: observed by %.6f" % (i, kind, detail, time.time()))
        replaced = send()
        t0 = now_ns()
        if TRACE:
            log("trace #%d: OK at %.6f" % (i, time.time()))
        if replaced is not None:
            obs = replaced
        checks = raw.after(ctx) if raw is not None else None
        # 3-4. probe
        vis, stale, probes, sdetail, raw_ns = probe_until(obs, bound_ns, cap_ns, linger_ns,
                                                          sleep_s, t0, checks)
        raw_ms = None if raw_ns is None else raw_ns / 1e6
        r = {"kind": kind, "what": detail,
             "ms": None if vis is None else vis / 1e6, "stale": stale, "probes": probes}
        if raw is not None:
            r["raw_ms"] = raw_ms if checks else "n/a"
        if vis is None or stale:
            r["detail"] = sdetail
            log("%s #%d %s %s: %s" % (a.label, i, kind, detail,
                                      "NEVER visible within %.1f s" % a.cap_s if vis is None
                                      else "%d stale probes after the bound" % stale))
            log("    %s" % sdetail)
        results.append(r)
        if time.time() - last_report > 30:
            last_report = time.time()
            log("%s: %d/%d changes (%.0f s)" % (a.label, i + 1, a.changes, time.time() - started))
    imap.close()
    out = {"label": a.label, "bound_ms": a.bound_ms, "cap_s": a.cap_s, "seed": a.seed,
           "probe_sleep_ms": a.probe_sleep_ms, "seconds": time.time() - started,
           "results": results}
    if a.meta:
        out.update(json.loads(a.meta))
    with open(a.out, "w") as f:
        json.dump(out, f)
    log("%s: %d changes in %.0f s" % (a.label, len(results), out["seconds"]))


# ---------------------------------------------------------------------- report ---

def ms(v):
    if v is None:
        return "-"
    return "%.1f" % v if v < 100 else "%.0f" % v


def rows_for(results, key="ms"):
    """Sorted times of the results that have one, and how many never became visible
    (results whose value is a string, "n/a", are in neither)."""
    vals = sorted(r[key] for r in results if isinstance(r.get(key), (int, float)))
    never = sum(1 for r in results if key in r and r[key] is None)
    return vals, never


def table(run):
    res = run["results"]
    lines = ["| change | count | p50 ms | p99 ms | max ms | never visible | stale reads after bound |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    kinds = [k for k in KIND_ORDER if any(r["kind"] == k for r in res)]
    for k in kinds + ["all"]:
        sub = res if k == "all" else [r for r in res if r["kind"] == k]
        vals, never = rows_for(sub)
        stale = sum(r["stale"] for r in sub)
        stale_changes = sum(1 for r in sub if r["stale"])
        name = "**all**" if k == "all" else k
        lines.append("| %s | %d | %s | %s | %s | %d | %d%s |" % (
            name, len(sub), ms(percentile(vals, 50)), ms(percentile(vals, 99)),
            ms(vals[-1] if vals else None), never, stale,
            " (%d changes)" % stale_changes if stale else ""))
    return "\n".join(lines)


def raw_table(run):
    res = run["results"]
    lines = ["| change | count | mailfs p50 | mailfs p99 | mailfs max | mailfs never | "
             "mailfs stale after bound | raw client B p50 | raw p99 | raw max | raw never |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    kinds = [k for k in KIND_ORDER if any(r["kind"] == k for r in res)]
    for k in kinds + ["all"]:
        sub = res if k == "all" else [r for r in res if r["kind"] == k]
        vals, never = rows_for(sub)
        rvals, rnever = rows_for(sub, "raw_ms")
        stale = sum(r["stale"] for r in sub)
        name = "**all**" if k == "all" else k
        lines.append("| %s | %d | %s | %s | %s | %d | %d | %s | %s | %s | %d |" % (
            name, len(sub), ms(percentile(vals, 50)), ms(percentile(vals, 99)),
            ms(vals[-1] if vals else None), never, stale,
            ms(percentile(rvals, 50)), ms(percentile(rvals, 99)),
            ms(rvals[-1] if rvals else None), rnever))
    return "\n".join(lines)


def summary_table(runs):
    lines = ["| mode | bound ms | changes | p50 ms | p99 ms | max ms | never visible | "
             "stale reads after bound | run time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        res = run["results"]
        vals, never = rows_for(res)
        stale = sum(r["stale"] for r in res)
        lines.append("| %s | %g | %d | %s | %s | %s | %d | %d | %.0f s |" % (
            run["label"], run["bound_ms"], len(res), ms(percentile(vals, 50)),
            ms(percentile(vals, 99)), ms(vals[-1] if vals else None), never, stale,
            run["seconds"]))
    return "\n".join(lines)


def markers(section, script):
    return ("<!-- %s:begin (%s writes this section) -->" % (section, script),
            "<!-- %s:end -->" % section)


def cmd_report(a):
    runs = []
    for p in a.files:
        with open(p) as f:
            runs.append(json.load(f))
    parts = []
    parts.append(summary_table(runs))
    for run in runs:
        head = "### %s (bound %g ms)" % (run["label"], run["bound_ms"])
        if any("raw_ms" in r for r in run["results"]):
            parts.append(head + "\n\n" + raw_table(run))
        else:
            parts.append(head + "\n\n" + table(run))
    for run in runs:
        never = [r for r in run["results"] if r["ms"] is None]
        if never:
            note = ["%s: changes never visible within the cap (%s%d):" % (
                run["label"], "first 8 of " if len(never) > 8 else "", len(never)), ""]
            for r in never[:8]:
                note.append("- %s `%s`: %s" % (r["kind"], r["what"], (r.get("detail") or "")[:300]))
            parts.append("\n".join(note))
    text = "\n\n".join(parts)
    if a.title:
        print(a.title)
        print()
    print(text)
    if a.write:
        begin, end = markers(a.section, a.script)
        section = "%s\n## %s\n\n%s\n\n%s\n%s\n" % (begin, a.heading, a.preamble.strip(), text, end)
        write_section(a.write, section, begin.split(" ")[1], end)
        log("wrote the %r section of %s" % (a.heading, a.write))


def write_section(path, section, begin_key, end):
    """Replaces the section between the markers (found by `begin_key`, e.g.
    "staleness:begin") in `path`, or appends it; everything else is kept."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = "# mailfs benchmarks\n\nEach section is written by the script it names; re-run " \
              "the script to refresh it.\n"
    at = old.find("<!-- " + begin_key)
    if at >= 0 and end in old[at:]:
        pre, rest = old[:at], old[at:]
        _, post = rest.split(end, 1)
        post = post.lstrip("\n")
        new = pre + section + ("\n" + post if post else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--conf", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--messages", type=int, default=150)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--imap-log", default="/dev/null")
    r = sub.add_parser("run")
    r.add_argument("--conf", required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--mount", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--changes", type=int, default=10000)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--bound-ms", type=float, required=True)
    r.add_argument("--cap-s", type=float, default=3.0)
    r.add_argument("--linger-ms", type=float, default=5.0)
    r.add_argument("--probe-sleep-ms", type=float, default=0.5)
    r.add_argument("--raw-a", help="the Maildir through the shared fs client Dovecot uses")
    r.add_argument("--raw-b", help="the same Maildir through the client mailfs reads")
    r.add_argument("--imap-log", default="/dev/null")
    r.add_argument("--meta", help="JSON object merged into the output")
    r.add_argument("--mix", help="change kinds and weights, e.g. expunge=2,delete=1 "
                   "(default: %s)" % ",".join("%s=%d" % kw for kw in MIX))
    p = sub.add_parser("report")
    p.add_argument("--title", default="")
    p.add_argument("--heading", default="Staleness")
    p.add_argument("--section", default="staleness", help="marker name of the section")
    p.add_argument("--script", default="scripts/staleness-bench.sh")
    p.add_argument("--preamble", default="")
    p.add_argument("--write")
    p.add_argument("files", nargs="+")
    a = ap.parse_args()
    {"seed": cmd_seed, "run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
