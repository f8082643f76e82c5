//! The IMAP client (`mailfs::imap::Session`) against a private Dovecot's real IMAP
//! listener (127.0.0.1, a free port), with doveadm as the oracle; and against tiny
//! misbehaving servers (a greeting then a hang-up, silence, a remote host without TLS).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mailfs::imap::{Credentials, Endpoint, Event, ImapError, Qresync, Security, Session, StoreOp};

use crate::util::corpus::crlf_form;
use crate::util::dovecot::{Config, Dovecot, Layout};
use crate::util::pki::Pki;
use crate::util::{TestDir, free_port};

const PASSWORD: &str = "secret";
const MASTER_PASSWORD: &str = "masterpw";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A private Dovecot with an IMAP listener on 127.0.0.1 (and imaps when `tls` is given).
struct Server {
    dovecot: Dovecot,
    port: u16,
    imaps_port: u16,
}

/// The test's TLS material, with this machine's non-loopback address (Dovecot listens
/// on it too) in the certificate if it has one.
fn make_pki(dir: &TestDir) -> Pki {
    Pki::make(&dir.mkdir("pki"), non_loopback_ip())
}

fn start(dir: &TestDir, extra: &[&str], pki: Option<&Pki>) -> Server {
    let port = free_port();
    let imaps_port = free_port();
    let mut settings = vec![
        "protocols = imap",
        "auth_master_user_separator = *",
        "imap_idle_notify_interval = 1 secs",
    ];
    settings.extend_from_slice(extra);
    let ssl;
    if let Some(p) = pki {
        ssl = [
            "ssl = yes".to_string(),
            format!("ssl_cert = <{}", p.cert.display()),
            format!("ssl_key = <{}", p.key.display()),
        ];
        settings.extend(ssl.iter().map(String::as_str));
    }
    let address = match pki.and_then(|p| p.extra_ip.as_ref()) {
        Some(ip) => format!("127.0.0.1, {ip}"),
        None => "127.0.0.1".to_string(),
    };
    let listener = crate::util::imap::listener_section(
        &address,
        port,
        if pki.is_some() { imaps_port } else { 0 },
    );
    let master = format!(
        "passdb {{\n  driver = static\n  args = password={MASTER_PASSWORD}\n  master = yes\n}}"
    );
    let passdb = format!("password={PASSWORD}");
    let dovecot = Dovecot::start_with_config(
        dir,
        Layout::Mdbox,
        Config {
            settings: &settings,
            passdb_args: Some(&passdb),
            sections: &[&listener, &master],
        },
    );
    crate::util::imap::wait_until_listening(port, false);
    Server {
        dovecot,
        port,
        imaps_port,
    }
}

impl Server {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            security: Security::Plain,
            ca_file: None,
            allow_plaintext: false,
        }
    }

    fn connect(&self, user: &str) -> Session {
        // Creates the user's home, owned by the mail user.
        self.dovecot.user(user);
        Session::connect(&self.endpoint(), &creds(user, PASSWORD), TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting as {user}: {e}"))
    }
}

fn creds(user: &str, password: &str) -> Credentials {
    Credentials {
        user: user.into(),
        authzid: None,
        password: password.into(),
    }
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: a@example.org\nTo: b@example.org\nSubject: message {n}\n\
         Date: Mon, 7 Dec 2026 04:00:00 +0000\n\nbody {n}\n"
    )
    .into_bytes()
}

/// doveadm's flags of `uid` (without `\Recent`).
fn flags_of(user: &crate::util::dovecot::User<'_>, mailbox: &str, uid: u32) -> Vec<String> {
    user.fetch_flags(mailbox)
        .into_iter()
        .find(|(u, _)| *u == uid)
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no uid {uid} in {mailbox}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.retain(|f| f != "\\Recent");
    v.sort();
    v
}

#[test]
fn connect_authenticate_and_capabilities() {
    require!(Dovecot);
    let dir = TestDir::new("imap-connect");
    let server = start(&dir, &[], None);
    let s = server.connect("bob");
    let caps = s.capabilities();
    for c in [
        "IMAP4rev1",
        "IDLE",
        "UIDPLUS",
        "QRESYNC",
        "CONDSTORE",
        "MOVE",
        "ENABLE",
    ] {
        assert!(
            caps.has(c),
            "no {c} in {:?}",
            caps.iter().collect::<Vec<_>>()
        );
    }
    assert!(!s.is_tls());
    s.logout();

    // A wrong password is an authentication error, promptly (Dovecot delays it ~2 s).
    let t = Instant::now();
    match Session::connect(&server.endpoint(), &creds("bob", "wrong"), TIMEOUT) {
        Err(ImapError::Auth(text)) => assert!(!text.contains("wrong"), "{text}"),
        Err(e) => panic!("wrong password gave {e}"),
        Ok(_) => panic!("wrong password accepted"),
    }
    assert!(t.elapsed() < TIMEOUT, "took {:?}", t.elapsed());

    // A master user acting for bob: SASL PLAIN authzid, and `bob*admin` as the login.
    let bob = server.dovecot.user("bob");
    let mut master = creds("admin", MASTER_PASSWORD);
    master.authzid = Some("bob".into());
    let mut s = Session::connect(&server.endpoint(), &master, TIMEOUT).expect("master login");
    s.append("INBOX", &[], &message(1)).expect("append as bob");
    s.logout();
    let s = Session::connect(
        &server.endpoint(),
        &creds("bob*admin", MASTER_PASSWORD),
        TIMEOUT,
    )
    .expect("bob*admin login");
    s.logout();
    assert_eq!(
        bob.uids("INBOX"),
        [1],
        "the master session did not act for bob"
    );
    assert!(server.dovecot.user("admin").uids("INBOX").is_empty());
    // The master password is not bob's password.
    assert!(matches!(
        Session::connect(&server.endpoint(), &creds("bob", MASTER_PASSWORD), TIMEOUT),
        Err(ImapError::Auth(_))
    ));
}

/// LOGIN (RFC 3501 section 6.2.3) when the server has no AUTH=PLAIN. Dovecot cannot be
/// made to offer LOGIN without PLAIN (its LOGIN command is PLAIN inside), so a scripted
/// server checks the quoting: a quoted string, or a literal for 8-bit bytes.
#[test]
fn login_without_auth_plain() {
    let (port, h) = fake_server(
        "127.0.0.1:0",
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n",
        |c| {
            let _ = c.write_all(b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
        },
    );
    let ep = Endpoint {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        ca_file: None,
        allow_plaintext: false,
    };
    let s = Session::connect(&ep, &creds("c\"l\\", "p\u{e4}ss"), TIMEOUT).expect("LOGIN");
    assert!(
        s.capabilities().has("IDLE"),
        "capabilities of the tagged OK not recorded"
    );
    s.logout();
    let sent = h.join().expect("server");
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "a1 LOGIN \"c\\\"l\\\\\" {5+}\r\np\u{e4}ss\r\n"
    );

    // Without LITERAL+ the literal waits for the server's continuation request.
    let (port, h) = fake_server("127.0.0.1:0", b"* OK [CAPABILITY IMAP4rev1] hi\r\n", |c| {
        let _ = c.write_all(b"+ go ahead\r\n");
        let mut rest = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = c.read(&mut buf) {
            rest.extend_from_slice(&buf[..n]);
        }
        let answer: &[u8] = if rest == "p\u{e4}ss\r\n".as_bytes() {
            b"* CAPABILITY IMAP4rev1 IDLE\r\na1 OK Logged in\r\n"
        } else {
            b"a1 NO [AUTHENTICATIONFAILED] the literal was wrong\r\n"
        };
        let _ = c.write_all(answer);
    });
    let ep = Endpoint { port, ..ep };
    let s = Session::connect(&ep, &creds("carol", "p\u{e4}ss"), TIMEOUT).expect("LOGIN");
    assert!(s.capabilities().has("IDLE"));
    s.logout();
    let sent = h.join().expect("server");
    assert_eq!(String::from_utf8_lossy(&sent), "a1 LOGIN \"carol\" {5}\r\n");

    // A login whose OK carries no capabilities: the client asks for them (they may differ
    // after authentication, RFC 3501 section 6.2.3).
    let (port, h) = fake_server(
        "127.0.0.1:0",
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        |c| {
            let _ = c.write_all(b"a1 OK Logged in\r\n");
            let mut line = [0u8; 64];
            let n = c.read(&mut line).unwrap_or(0);
            if &line[..n] == b"a2 CAPABILITY\r\n" {
                let _ = c.write_all(b"* CAPABILITY IMAP4rev1 MOVE\r\na2 OK done\r\n");
            }
        },
    );
    let ep = Endpoint { port, ..ep };
    let s = Session::connect(&ep, &creds("carol", "pw"), TIMEOUT).expect("PLAIN");
    assert!(
        s.capabilities().has("MOVE"),
        "capabilities not asked for after login"
    );
    assert!(!s.capabilities().has("AUTH=PLAIN"));
    s.logout();
    let sent = h.join().expect("server");
    assert!(sent.starts_with(b"a1 AUTHENTICATE PLAIN "), "{sent:?}");
}

#[test]
fn list_decodes_modified_utf7() {
    require!(Dovecot);
    let dir = TestDir::new("imap-list");
    let server = start(&dir, &[], None);
    let bob = server.dovecot.user("bob");
    for name in ["Entwürfe", "Sub/日本語", "A & B"] {
        bob.create_mailbox(name);
    }
    let mut s = server.connect("bob");
    let list = s.list().expect("list");
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    for name in ["INBOX", "Entwürfe", "Sub", "Sub/日本語", "A & B"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(list.iter().all(|e| e.separator == Some('/')), "{list:?}");
    let sub = list.iter().find(|e| e.name == "Sub").expect("Sub");
    assert!(
        sub.attributes.iter().any(|a| a == "\\HasChildren"),
        "{sub:?}"
    );
    // Names go back out encoded: status and create of non-ASCII names.
    assert_eq!(s.status("Entwürfe").expect("status").messages, 0);
    s.create("Grüße/Ünter").expect("create");
    s.logout();
    assert!(
        bob.list().contains(&"Grüße/Ünter".to_string()),
        "{:?}",
        bob.list()
    );
}

#[test]
fn fetch_meta_and_body_match_doveadm() {
    require!(Dovecot);
    let dir = TestDir::new("imap-fetch");
    let server = start(&dir, &[], None);
    let bob = server.dovecot.user("bob");
    bob.save("INBOX", &message(1));
    bob.save_crlf("INBOX", b"Subject: crlf\r\n\r\nline one\r\nline two\r\n");
    bob.save("INBOX", b"Subject: no final newline\n\nlast line");
    let mut big = b"Subject: big\n\n".to_vec();
    let mut i = 0u64;
    while big.len() < 3 << 20 {
        big.extend_from_slice(format!("{i:08} {}\n", "x".repeat(70)).as_bytes());
        i += 1;
    }
    bob.save("INBOX", &big);
    // 8-bit bytes and literal-like text inside a literal. (Not NUL: Dovecot sends NUL as
    // 0x80 in BODY[], RFC 3501 section 4.3 forbids it in a literal.)
    bob.save(
        "INBOX",
        b"Subject: binary-ish\n\n\x01\xff\xfe {5}\r\n)\r\n* 1 EXISTS\n",
    );
    bob.flags_add("INBOX", 1, "\\Flagged $Label1");
    bob.flags_add("INBOX", 2, "\\Answered");

    let mut s = server.connect("bob");
    assert!(s.select("INBOX", true, None).expect("examine").read_only);
    // Read-write, so that a fetch that is not a PEEK would set \Seen.
    let sel = s.select("INBOX", false, None).expect("select");
    assert_eq!(sel.exists, 5);
    assert!(!sel.read_only);
    let status = bob.status("INBOX");
    assert_eq!(sel.uid_validity, status.uidvalidity);
    assert_eq!(sel.uid_next, Some(status.uidnext));
    assert!(sel.highest_modseq.is_some());

    let meta = s.fetch_meta("1:*", None).expect("fetch_meta");
    let mut bodies = Vec::new();
    for m in &meta {
        let mut body = Vec::new();
        let n = s.fetch_body(m.uid, &mut body).expect("fetch_body");
        assert_eq!(n, body.len() as u64);
        bodies.push(body);
    }
    s.logout();
    let want = bob.fetch("INBOX");
    assert_eq!(meta.len(), want.len());
    for ((m, body), w) in meta.iter().zip(&bodies).zip(&want) {
        assert_eq!(m.uid, w.uid);
        assert_eq!(
            m.size, w.vsize,
            "RFC822.SIZE is the virtual (CRLF) size, uid {}",
            w.uid
        );
        assert_eq!(m.internal_date, w.received, "uid {}", w.uid);
        assert_eq!(m.guid.as_deref(), Some(w.guid.as_str()), "uid {}", w.uid);
        assert!(m.modseq.is_some());
        let mut want_flags: Vec<String> = w
            .flags
            .split(' ')
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect();
        want_flags.sort();
        assert_eq!(sorted(m.flags.clone()), want_flags, "uid {}", w.uid);
        // IMAP sends the stored text with bare LFs as CRLF (RFC 3501 section 2.3.1.1 is
        // about lines ending in CRLF); a message stored with CRLF comes byte for byte.
        crate::util::assert_bytes_eq(body, &crlf_form(&bob.text("INBOX", w.uid)), "fetch_body");
        assert_eq!(body.len() as u64, w.vsize);
    }
    assert_eq!(bodies[1], b"Subject: crlf\r\n\r\nline one\r\nline two\r\n");
    assert!(
        bodies[2].ends_with(b"\r\n\r\nlast line"),
        "a final newline was added"
    );
    assert!(bodies[3].len() > 3 << 20);
    // BODY.PEEK[] did not set \Seen.
    for (uid, flags) in bob.fetch_flags("INBOX") {
        assert!(!flags.iter().any(|f| f == "\\Seen"), "uid {uid}: {flags:?}");
    }
    // An expunged UID has no body.
    let mut s = server.connect("bob");
    s.select("INBOX", true, None).expect("examine");
    bob.expunge("INBOX", 1);
    // (Until the session learns of the expunge, Dovecot may still serve the message.)
    assert!(s.noop().expect("noop").contains(&Event::Expunge(1)));
    let mut sink = Vec::new();
    match s.fetch_body(1, &mut sink) {
        Err(ImapError::NotFound(_)) => assert!(sink.is_empty()),
        r => panic!("fetch of an expunged message gave {r:?}"),
    }
    // The session goes on.
    let mut sink = Vec::new();
    assert_eq!(
        s.fetch_body(2, &mut sink).expect("uid 2"),
        bodies[1].len() as u64
    );
    s.logout();
}

#[test]
fn idle_reports_changes_and_stops() {
    require!(Dovecot);
    let dir = TestDir::new("imap-idle");
    let server = start(&dir, &[], None);
    let bob = server.dovecot.user("bob");
    bob.save("INBOX", &message(1));
    bob.save("INBOX", &message(2));
    let mut s = server.connect("bob");
    s.select("INBOX", false, None).expect("select");

    let idle_until =
        |s: &mut Session, what: &str, change: &(dyn Fn() + Sync)| -> (Vec<Event>, Duration) {
            thread::scope(|scope| {
                let h = scope.spawn(|| {
                    thread::sleep(Duration::from_millis(300));
                    change();
                });
                let t = Instant::now();
                let events = s
                    .idle(Duration::from_secs(8), &|| false)
                    .unwrap_or_else(|e| panic!("idle ({what}): {e}"));
                let took = t.elapsed();
                h.join().expect("change thread");
                (events, took)
            })
        };
    // Dovecot notices changes by inotify or its imap_idle_notify_interval (1 s here):
    // allow up to 1.5 s after the change for its notification.
    let (ev, took) = idle_until(&mut s, "save", &|| {
        bob.save("INBOX", &message(3));
    });
    assert!(ev.contains(&Event::Exists(3)), "{ev:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");

    let (ev, took) = idle_until(&mut s, "flags", &|| bob.flags_add("INBOX", 2, "\\Flagged"));
    let fetch = ev.iter().find_map(|e| match e {
        Event::Fetch(f) => Some(f.clone()),
        _ => None,
    });
    let fetch = fetch.unwrap_or_else(|| panic!("no FETCH in {ev:?}"));
    assert_eq!(fetch.seq, 2);
    assert!(
        fetch
            .flags
            .unwrap_or_default()
            .iter()
            .any(|f| f == "\\Flagged")
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");

    let (ev, took) = idle_until(&mut s, "expunge", &|| bob.expunge("INBOX", 1));
    assert!(ev.contains(&Event::Expunge(1)), "{ev:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");

    // stop ends it within a slice; nothing happened.
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let ev = thread::scope(|scope| {
        let st = stop.clone();
        scope.spawn(move || {
            thread::sleep(Duration::from_millis(300));
            st.store(true, Ordering::SeqCst);
        });
        s.idle(Duration::from_secs(30), &|| stop.load(Ordering::SeqCst))
            .expect("idle with stop")
    });
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(900),
        "{took:?}"
    );
    assert!(!ev.iter().any(|e| !matches!(e, Event::Other)), "{ev:?}");
    // A plain timeout.
    let t = Instant::now();
    s.idle(Duration::from_millis(500), &|| false)
        .expect("idle timeout");
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    // The session is still in step.
    assert_eq!(s.noop().expect("noop"), vec![]);
    s.logout();
}

#[test]
fn qresync_reports_vanished_and_changed() {
    require!(Dovecot);
    let dir = TestDir::new("imap-qresync");
    let server = start(&dir, &[], None);
    let bob = server.dovecot.user("bob");
    for n in 1..=4 {
        bob.save("INBOX", &message(n));
    }
    let mut s = server.connect("bob");
    let enabled = s.enable(&["QRESYNC"]).expect("enable");
    assert_eq!(enabled, ["QRESYNC"]);
    let first = s.select("INBOX", true, None).expect("select");
    let modseq = first.highest_modseq.expect("HIGHESTMODSEQ");
    let status = s.status("INBOX").expect("status");
    assert_eq!((status.messages, status.uid_next), (4, 5));
    assert_eq!(status.highest_modseq, Some(modseq));
    s.logout();

    bob.expunge("INBOX", 2);
    bob.flags_add("INBOX", 3, "\\Flagged");

    let mut s = server.connect("bob");
    s.enable(&["QRESYNC"]).expect("enable");
    let sel = s
        .select(
            "INBOX",
            true,
            Some(Qresync {
                uid_validity: first.uid_validity,
                modseq,
            }),
        )
        .expect("select qresync");
    assert!(sel.vanished.contains(&2), "{sel:?}");
    assert!(
        !sel.vanished.iter().any(|u| [1, 3, 4].contains(u)),
        "{sel:?}"
    );
    let changed: Vec<u32> = sel.changed.iter().map(|m| m.uid).collect();
    assert_eq!(changed, [3], "{sel:?}");
    assert!(sel.changed[0].flags.iter().any(|f| f == "\\Flagged"));
    assert!(sel.highest_modseq.unwrap_or(0) > modseq);
    assert_eq!(sel.exists, 3);
    // CHANGEDSINCE: only uid 3 changed since `modseq`; with VANISHED, uid 2 went away.
    let changed = s.fetch_meta("1:*", Some(modseq)).expect("changedsince");
    assert_eq!(changed.iter().map(|m| m.uid).collect::<Vec<_>>(), [3]);
    let (changed, gone) = s.fetch_changes("1:*", modseq).expect("fetch_changes");
    assert_eq!(changed.iter().map(|m| m.uid).collect::<Vec<_>>(), [3]);
    assert!(
        gone.contains(&2) && !gone.iter().any(|u| [1, 3, 4].contains(u)),
        "{gone:?}"
    );

    // Changes reported during other commands are queued, not lost; under QRESYNC an
    // expunge is VANISHED (RFC 7162 section 3.2.10).
    s.select("INBOX", false, None).expect("select");
    bob.expunge("INBOX", 4);
    bob.flags_add("INBOX", 1, "\\Answered");
    s.fetch_meta("1", None).expect("fetch");
    let mut events = s.take_events();
    events.extend(s.noop().expect("noop"));
    assert!(events.contains(&Event::Vanished(vec![4])), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Fetch(f) if f.uid == Some(1) && f.modseq.is_some())),
        "{events:?}"
    );
    let events = thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(Duration::from_millis(300));
            bob.expunge("INBOX", 3);
        });
        s.idle(Duration::from_secs(8), &|| false).expect("idle")
    });
    assert!(events.contains(&Event::Vanished(vec![3])), "{events:?}");
    s.logout();
}

#[test]
fn append_store_move_expunge_mailboxes() {
    require!(Dovecot);
    let dir = TestDir::new("imap-write");
    let server = start(&dir, &[], None);
    let bob = server.dovecot.user("bob");
    let keep = bob.save("INBOX", &message(1));
    let mut s = server.connect("bob");
    let uid = s
        .append(
            "INBOX",
            &["\\Seen", "$Label1"],
            b"Subject: appended\r\n\r\nhello\r\n",
        )
        .expect("append")
        .expect("APPENDUID");
    assert_eq!(bob.uids("INBOX"), [keep, uid]);
    assert_eq!(bob.text("INBOX", uid), b"Subject: appended\n\nhello\n");
    assert_eq!(sorted(flags_of(&bob, "INBOX", uid)), ["$Label1", "\\Seen"]);

    s.select("INBOX", false, None).expect("select");
    s.uid_store(&uid.to_string(), StoreOp::Add, &["\\Flagged"])
        .expect("add");
    assert_eq!(
        sorted(flags_of(&bob, "INBOX", uid)),
        ["$Label1", "\\Flagged", "\\Seen"]
    );
    s.uid_store(&uid.to_string(), StoreOp::Remove, &["\\Seen", "$Label1"])
        .expect("remove");
    assert_eq!(sorted(flags_of(&bob, "INBOX", uid)), ["\\Flagged"]);
    s.uid_store(&uid.to_string(), StoreOp::Replace, &["\\Answered"])
        .expect("replace");
    assert_eq!(sorted(flags_of(&bob, "INBOX", uid)), ["\\Answered"]);

    // Move to a new mailbox: COPYUID gives the new UID.
    s.create("Archive").expect("create");
    let moved = s
        .uid_move(&uid.to_string(), "Archive")
        .expect("move")
        .expect("COPYUID");
    assert_eq!(bob.uids("Archive"), [moved]);
    assert_eq!(bob.uids("INBOX"), [keep]);
    assert_eq!(bob.text("Archive", moved), b"Subject: appended\n\nhello\n");

    // uid_expunge removes only its UID, not another message flagged \Deleted.
    let gone = bob.save("INBOX", &message(2));
    bob.flags_add("INBOX", keep, "\\Deleted");
    s.noop().expect("noop");
    s.uid_expunge(&gone.to_string()).expect("uid expunge");
    assert_eq!(bob.uids("INBOX"), [keep]);

    // Refusals before anything is sent.
    assert!(matches!(
        s.uid_store("1 2", StoreOp::Add, &["\\Seen"]),
        Err(ImapError::Refused(_))
    ));
    assert!(matches!(
        s.uid_store("1", StoreOp::Add, &["a)b"]),
        Err(ImapError::Refused(_))
    ));
    // A NO carries its code.
    match s.create("Archive") {
        Err(ImapError::No { code, .. }) => assert_eq!(code.as_deref(), Some("ALREADYEXISTS")),
        r => panic!("second create gave {r:?}"),
    }
    match s.select("Nope", false, None) {
        // Dovecot 2.3 sends no [NONEXISTENT] here.
        Err(ImapError::No { command, text, .. }) => {
            assert_eq!(command, "SELECT");
            assert!(text.contains("doesn't exist"), "{text}");
        }
        r => panic!("select of a missing mailbox gave {r:?}"),
    }

    s.rename("Archive", "Old/Archive").expect("rename");
    let list = bob.list();
    assert!(
        list.contains(&"Old/Archive".to_string()) && !list.contains(&"Archive".to_string()),
        "{list:?}"
    );
    assert_eq!(bob.uids("Old/Archive"), [moved]);
    s.delete("Old/Archive").expect("delete");
    assert!(!bob.list().contains(&"Old/Archive".to_string()));
    s.logout();
}

#[test]
fn quota_error_has_its_code() {
    require!(Dovecot);
    let dir = TestDir::new("imap-quota");
    let server = start(
        &dir,
        &[
            "mail_plugins = $mail_plugins quota",
            "plugin/quota = count:User quota",
            "plugin/quota_rule = *:storage=1k",
            "plugin/quota_vsizes = yes",
        ],
        None,
    );
    let mut s = server.connect("bob");
    let big = vec![b'x'; 4096];
    match s.append("INBOX", &[], &big) {
        Err(ImapError::No { code, text, .. }) => {
            assert_eq!(code.as_deref(), Some("OVERQUOTA"), "{text}")
        }
        r => panic!("an append over quota gave {r:?}"),
    }
    // The session goes on.
    s.append("INBOX", &[], b"Subject: small\r\n\r\nx\r\n")
        .expect("small append");
    s.logout();
}

#[test]
fn tls_and_starttls() {
    require!(Dovecot);
    let dir = TestDir::new("imap-tls");
    let pki = make_pki(&dir);
    let server = start(&dir, &[], Some(&pki));
    server.dovecot.user("bob");
    let mut ep = server.endpoint();
    ep.host = "localhost".into();
    ep.port = server.imaps_port;
    ep.security = Security::Tls;
    ep.ca_file = Some(pki.ca.clone());
    let mut s = Session::connect(&ep, &creds("bob", PASSWORD), TIMEOUT).expect("imaps");
    assert!(s.is_tls());
    s.append("INBOX", &[], &message(1))
        .expect("append over TLS");
    let mut body = Vec::new();
    s.select("INBOX", true, None).expect("examine");
    s.fetch_body(1, &mut body).expect("fetch over TLS");
    assert_eq!(body, crlf_form(&message(1)));
    s.logout();

    // STARTTLS on the plain port.
    let mut st = ep.clone();
    st.port = server.port;
    st.security = Security::StartTls;
    let s = Session::connect(&st, &creds("bob", PASSWORD), TIMEOUT).expect("starttls");
    assert!(s.is_tls());
    assert!(
        !s.capabilities().has("STARTTLS"),
        "capabilities not renewed after STARTTLS"
    );
    s.logout();

    // Security::Plain to a non-loopback host upgrades with STARTTLS when offered.
    if let Some(ip) = &pki.extra_ip {
        let mut remote = st.clone();
        remote.host = ip.clone();
        remote.security = Security::Plain;
        let s = Session::connect(&remote, &creds("bob", PASSWORD), TIMEOUT).expect("remote");
        assert!(s.is_tls(), "a password went to {ip} without TLS");
        s.logout();
    } else {
        eprintln!("note: no non-loopback address; the remote STARTTLS case was not run");
    }

    // Not trusted: the system roots do not know the test CA.
    let mut untrusted = ep.clone();
    untrusted.ca_file = None;
    match Session::connect(&untrusted, &creds("bob", PASSWORD), TIMEOUT) {
        Err(ImapError::Tls(_)) => {}
        r => panic!("an untrusted certificate gave {:?}", r.map(|_| ())),
    }
    // A CA file that is not PEM.
    let mut bad = ep.clone();
    bad.ca_file = Some(pki.key.with_file_name("ext.cnf"));
    assert!(matches!(
        Session::connect(&bad, &creds("bob", PASSWORD), TIMEOUT),
        Err(ImapError::Tls(_))
    ));
}

/// A one-connection server: sends `greeting`, reads what the client sends, then does
/// `then`; returns what it read.
fn fake_server(
    addr: &str,
    greeting: &'static [u8],
    then: fn(&mut TcpStream),
) -> (u16, thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind(addr).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else {
            return Vec::new();
        };
        let _ = c.write_all(greeting);
        // Everything the client sends until it closes or pauses for 500 ms (a command and
        // its literal may come in several segments).
        c.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = c.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        then(&mut c);
        got
    });
    (port, h)
}

#[test]
fn misbehaving_servers_give_errors() {
    let ep = |port| Endpoint {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        ca_file: None,
        allow_plaintext: false,
    };
    // A greeting, then the connection closes in the middle of a response.
    let (port, h) = fake_server(
        "127.0.0.1:0",
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        |c| {
            let _ = c.write_all(b"* 1 FETCH (UID 1 BODY[] {20}\r\nabc");
        },
    );
    let t = Instant::now();
    match Session::connect(&ep(port), &creds("bob", PASSWORD), TIMEOUT) {
        Err(ImapError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        r => panic!("a hang-up gave {:?}", r.map(|_| ())),
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    let sent = h.join().expect("server");
    assert!(
        sent.starts_with(b"a1 AUTHENTICATE PLAIN "),
        "{}",
        String::from_utf8_lossy(&sent)
    );

    // Silence after the greeting: the read timeout ends it.
    let (port, h) = fake_server(
        "127.0.0.1:0",
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        |_| thread::sleep(Duration::from_secs(2)),
    );
    let t = Instant::now();
    match Session::connect(
        &ep(port),
        &creds("bob", PASSWORD),
        Duration::from_millis(500),
    ) {
        Err(ImapError::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        r => panic!("silence gave {:?}", r.map(|_| ())),
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    h.join().expect("server");

    // A garbage greeting is a protocol error that quotes a little of it.
    let (port, h) = fake_server("127.0.0.1:0", b"HTTP/1.1 400 Bad Request\r\n\r\n", |_| {});
    match Session::connect(&ep(port), &creds("bob", PASSWORD), TIMEOUT) {
        Err(ImapError::Protocol(m)) => assert!(m.len() < 200, "{m}"),
        r => panic!("garbage gave {:?}", r.map(|_| ())),
    }
    drop(h);

    // BYE as a greeting.
    let (port, h) = fake_server("127.0.0.1:0", b"* BYE too busy\r\n", |_| {});
    match Session::connect(&ep(port), &creds("bob", PASSWORD), TIMEOUT) {
        Err(ImapError::Bye(t)) => assert_eq!(t, "too busy"),
        r => panic!("BYE gave {:?}", r.map(|_| ())),
    }
    drop(h);
}

/// This machine's address on its default route, if it has one (no packet is sent).
fn non_loopback_ip() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

#[test]
fn no_password_in_clear_to_a_remote_host() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: no non-loopback address");
        return;
    };
    let (port, h) = fake_server(
        &format!("{ip}:0"),
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        |_| {},
    );
    let ep = Endpoint {
        host: ip.clone(),
        port,
        security: Security::Plain,
        ca_file: None,
        allow_plaintext: false,
    };
    match Session::connect(&ep, &creds("bob", "hunter2"), TIMEOUT) {
        Err(ImapError::Refused(m)) => assert!(!m.contains("hunter2") && m.contains(&ip), "{m}"),
        r => panic!("a clear-text password to {ip} gave {:?}", r.map(|_| ())),
    }
    let sent = h.join().expect("server");
    assert!(sent.is_empty(), "sent {:?}", String::from_utf8_lossy(&sent));

    // With allow_plaintext the same server gets the login.
    let (port, h) = fake_server(
        &format!("{ip}:0"),
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        |c| {
            let _ = c.write_all(b"a1 NO [AUTHENTICATIONFAILED] nope\r\n");
        },
    );
    let ep = Endpoint {
        port,
        allow_plaintext: true,
        ..ep
    };
    match Session::connect(&ep, &creds("bob", "hunter2"), TIMEOUT) {
        Err(ImapError::Auth(t)) => assert_eq!(t, "nope"),
        r => panic!("{:?}", r.map(|_| ())),
    }
    let sent = h.join().expect("server");
    assert!(
        sent.starts_with(b"a1 AUTHENTICATE PLAIN "),
        "{}",
        String::from_utf8_lossy(&sent)
    );

    // StartTls required but not offered: refused before any password.
    let (port, h) = fake_server(
        "127.0.0.1:0",
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n",
        |_| {},
    );
    let ep = Endpoint {
        host: "127.0.0.1".into(),
        port,
        security: Security::StartTls,
        ca_file: None,
        allow_plaintext: false,
    };
    assert!(matches!(
        Session::connect(&ep, &creds("bob", "hunter2"), TIMEOUT),
        Err(ImapError::Refused(_))
    ));
    assert!(h.join().expect("server").is_empty());
}

/// NOTIFY (RFC 5465): with nothing selected and no command running, Dovecot reports a
/// STATUS of each mailbox whose messages or flags change and a LIST of a new mailbox;
/// `listen` returns them with the names decoded. A STATUS command meanwhile takes only
/// its own mailbox's answer, even when a NOTIFY report of another arrives with it.
#[test]
fn notify_reports_every_mailbox() {
    require!(Dovecot);
    let dir = TestDir::new("imap-notify");
    let server = start(&dir, &[], None);
    let bob = server.dovecot.user("bob");
    bob.create_mailbox("Work");
    bob.create_mailbox("R&D \u{e4}");
    let mut s = server.connect("bob");
    assert!(s.capabilities().has("NOTIFY"));
    assert_eq!(
        s.other_namespaces().expect("NAMESPACE"),
        Vec::<String>::new()
    );
    s.notify_set().expect("NOTIFY SET");

    // Listens until `want` arrives (other reports may come first), at most 5 s.
    let listen_for = |s: &mut Session, want: Event, change: &(dyn Fn() + Sync)| -> Vec<Event> {
        thread::scope(|scope| {
            let h = scope.spawn(|| {
                thread::sleep(Duration::from_millis(200));
                change();
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut events = Vec::new();
            while !events.contains(&want) && Instant::now() < deadline {
                let wait = deadline.saturating_duration_since(Instant::now());
                events.extend(
                    s.listen(wait, &|| false)
                        .unwrap_or_else(|e| panic!("listen ({want:?}): {e}")),
                );
            }
            h.join().expect("change thread");
            assert!(events.contains(&want), "{want:?} not in {events:?}");
            events
        })
    };
    listen_for(&mut s, Event::MailboxStatus("Work".into()), &|| {
        bob.save("Work", &message(1));
    });
    listen_for(&mut s, Event::MailboxStatus("Work".into()), &|| {
        bob.flags_add("Work", 1, "\\Flagged")
    });
    listen_for(&mut s, Event::MailboxStatus("R&D \u{e4}".into()), &|| {
        bob.save("R&D \u{e4}", &message(2));
    });
    listen_for(&mut s, Event::MailboxListed("Fresh".into()), &|| {
        bob.create_mailbox("Fresh")
    });

    // A report of Work arriving while STATUS of INBOX runs is not taken as INBOX's.
    bob.save("INBOX", &message(3));
    bob.save("Work", &message(4));
    thread::sleep(Duration::from_millis(800));
    let status = s.status("INBOX").expect("STATUS INBOX");
    assert_eq!(status.messages, 1, "{status:?}");
    let work = s.status("Work").expect("STATUS Work");
    assert_eq!(work.messages, 2, "{work:?}");

    // Silence: listen returns after its wait with nothing.
    let _ = s
        .listen(Duration::from_millis(50), &|| false)
        .expect("drain");
    let t = Instant::now();
    let ev = s
        .listen(Duration::from_millis(700), &|| false)
        .expect("listen");
    assert!(ev.is_empty(), "{ev:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(650),
        "{:?}",
        t.elapsed()
    );
}
