//! An IMAP mount of a server that is not Dovecot: a private Cyrus IMAP 3.6 (Debian's
//! `cyrus-imapd`), seeded and read back with Python's `imaplib` (nobody here wrote either).
//! The mount equals what a plain `UID FETCH` returns: the mailboxes, UIDs, bytes, sizes,
//! INTERNALDATEs and flags; `user.mail.guid` is Cyrus's `EMAILID` (RFC 8474).
//!
//! Cyrus refuses to run as root: the test needs root (to start it as the `cyrus` user
//! cyrus-common makes) and skips without it, like the other root tests. Its imapd comes
//! from the cyrus-imapd package unpacked by `scripts/test.sh` (installing it would remove
//! dovecot-imapd: both provide "imap-server").

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::TestDir;
use crate::util::fsx::xattr_string;
use crate::util::json::Json;
use crate::util::mount::Mount;

const MASTER: &str = "/usr/lib/cyrus/bin/master";
/// Cyrus's imapd, unpacked (not installed: its package conflicts with dovecot-imapd) by
/// `scripts/test.sh`.
const IMAPD: &str = "/var/cache/mailfs-tests/cyrus-imapd/usr/lib/cyrus/bin/imapd";
const PASSWORD: &str = "cyrus-test-secret";
const ADMIN_PASSWORD: &str = "cyrus-admin-secret";

/// A private Cyrus master serving IMAP on a loopback port.
struct Cyrus {
    dir: PathBuf,
    port: u16,
    master: Child,
}

impl Cyrus {
    /// Configures and starts Cyrus below `dir` with users `bob` (password [`PASSWORD`])
    /// and the admin `cyrus`, and creates bob's mailbox.
    fn start(dir: &Path) -> Cyrus {
        let port = crate::util::free_port();
        for sub in ["conf", "spool", "run"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        fs::write(
            dir.join("imapd.conf"),
            format!(
                "configdirectory: {d}/conf\npartition-default: {d}/spool\nadmins: cyrus\n\
                 sasl_pwcheck_method: auxprop\nsasl_auxprop_plugin: sasldb\n\
                 sasl_sasldb_path: {d}/sasldb2\nallowplaintext: yes\n\
                 sasl_mech_list: PLAIN LOGIN\nunixhierarchysep: yes\n\
                 idlesocket: {d}/run/idle\nnotifysocket: {d}/run/notify\n\
                 lmtpsocket: {d}/run/lmtp\nmboxname_lockpath: {d}/run/lock\n\
                 proc_path: {d}/run/proc\n"
            ),
        )
        .unwrap();
        fs::write(
            dir.join("cyrus.conf"),
            format!(
                "START {{\n  recover cmd=\"/usr/lib/cyrus/bin/ctl_cyrusdb -r -C {d}/imapd.conf\"\n}}\n\
                 SERVICES {{\n  imap cmd=\"{IMAPD} -C {d}/imapd.conf\" \
                 listen=\"127.0.0.1:{port}\" prefork=0\n}}\nEVENTS {{\n}}\nDAEMON {{\n}}\n"
            ),
        )
        .unwrap();
        for (user, password) in [("bob", PASSWORD), ("cyrus", ADMIN_PASSWORD)] {
            run_with_input(
                "saslpasswd2",
                &["-c", "-p", "-f", &format!("{d}/sasldb2"), user],
                password.as_bytes(),
            );
        }
        run_with_input("chown", &["-R", "cyrus:mail", &d.to_string()], b"");
        let log = fs::File::create(dir.join("master.log")).unwrap();
        let master = Command::new("runuser")
            .args(["-u", "cyrus", "--", MASTER, "-C"])
            .arg(dir.join("imapd.conf"))
            .arg("-M")
            .arg(dir.join("cyrus.conf"))
            .arg("-p")
            .arg(dir.join("run/master.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting Cyrus's master");
        let cyrus = Cyrus {
            dir: dir.to_path_buf(),
            port,
            master,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Cyrus did not listen on {port}:\n{}",
                fs::read_to_string(dir.join("master.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cyrus
    }

    /// Runs a Python imaplib script with `port` and the passwords defined; its stdout.
    fn python(&self, script: &str) -> String {
        let prelude = format!(
            "import imaplib, json, time\nPORT = {}\nPASSWORD = {PASSWORD:?}\n\
             ADMIN = {ADMIN_PASSWORD:?}\n",
            self.port
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "python3 failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(self.dir.join("master.log")).unwrap_or_default()
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.dir.join("run/master.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

fn run_with_input(program: &str, args: &[&str], input: &[u8]) {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Seeds bob's mailboxes through IMAP (the admin creates them).
const SEED: &str = r#"
A = imaplib.IMAP4("127.0.0.1", PORT); A.login("cyrus", ADMIN)
for box in ["user/bob", "user/bob/Work", "user/bob/Work/Sub"]:
    typ, _ = A.create(box); assert typ == "OK", box
A.logout()
B = imaplib.IMAP4("127.0.0.1", PORT); B.login("bob", PASSWORD)
msgs = [
    ("INBOX", r"(\Seen)", b"Subject: one\r\nFrom: a@example.com\r\n\r\nfirst body\r\n"),
    ("INBOX", r"(\Flagged $Label1)", b"Subject: two\r\n\r\nsecond\r\nno final line break"),
    ("INBOX", None, b"Subject: three\r\n\r\n" + b"x" * 200000 + b"\r\n"),
    ("Work", r"(\Answered work)", b"Subject: work\r\n\r\nat work\r\n"),
    ("Work/Sub", None, b"Subject: deep\r\n\r\ndeeper\r\n"),
]
for i, (box, flags, body) in enumerate(msgs):
    when = imaplib.Time2Internaldate(int(time.time()) - 86400 * (i + 1) - 37 * i)
    typ, _ = B.append(box, flags, when, body); assert typ == "OK", box
B.logout()
"#;

/// What a plain UID FETCH returns for every mailbox: name -> [{uid, flags, date, size,
/// body (hex)}].
const FETCH_ALL: &str = r#"
import email.utils
B = imaplib.IMAP4("127.0.0.1", PORT); B.login("bob", PASSWORD)
out = {}
typ, lines = B.list()
for line in lines:
    name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
    B.select('"%s"' % name, readonly=True)
    typ, data = B.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    msgs = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        head = head.decode()
        uid = int(head.split("UID ")[1].split()[0].rstrip(")"))
        flags = imaplib.ParseFlags(head.encode())
        date = imaplib.Internaldate2tuple(head.encode())
        size = int(head.split("RFC822.SIZE ")[1].split()[0].rstrip(")"))
        msgs.append({"uid": uid, "flags": [f.decode() for f in flags],
                     "date": int(time.mktime(date)), "size": size, "body": body.hex()})
    out[name] = msgs
B.logout()
print(json.dumps(out))
"#;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn an_imap_mount_of_cyrus_equals_a_plain_fetch() {
    require!(Fuse, Root);
    for (path, how) in [
        (MASTER, "apt-get install cyrus-common sasl2-bin"),
        (IMAPD, "scripts/test.sh unpacks it"),
    ] {
        assert!(Path::new(path).exists(), "{path} not found ({how})");
    }
    let dir = TestDir::new("imap_cyrus");
    let cyrus = Cyrus::start(&dir.join("cyrus"));
    cyrus.python(SEED);
    let expected = Json::parse(cyrus.python(FETCH_ALL).trim()).expect("the script's JSON");
    let Json::Obj(boxes) = &expected else {
        panic!("not an object: {expected:?}")
    };
    assert_eq!(
        boxes.keys().cloned().collect::<BTreeSet<_>>(),
        ["INBOX", "Work", "Work/Sub"].map(String::from).into(),
        "what Cyrus lists for bob"
    );

    let secret = dir.join("password");
    fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let mount = Mount::start(
        &format!("imap://bob@127.0.0.1:{}", cyrus.port),
        &dir.join("mnt"),
        &[
            "--password-file",
            secret.to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ],
    );
    let mut compared = 0;
    for (name, messages) in boxes {
        let folder = mount.mailbox(name);
        let listed: BTreeSet<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        let want: BTreeSet<String> = messages
            .list()
            .iter()
            .map(|m| format!("{}.eml", m.get("uid").num()))
            .collect();
        assert_eq!(listed, want, "the messages of {name}");
        for m in messages.list() {
            let uid = m.get("uid").num() as u32;
            let path = mount.message(name, uid);
            let what = format!("{name}/{uid}");
            let body = unhex(m.get("body").str());
            assert_eq!(fs::read(&path).unwrap(), body, "bytes of {what}");
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(meta.len() as i128, m.get("size").num(), "st_size of {what}");
            assert_eq!(
                meta.len(),
                body.len() as u64,
                "RFC822.SIZE is the BODY[] length"
            );
            assert_eq!(
                meta.mtime() as i128,
                m.get("date").num(),
                "st_mtime of {what}"
            );
            let shown: BTreeSet<String> = xattr_string(&path, "user.mail.flags")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let fetched: BTreeSet<String> = m
                .get("flags")
                .list()
                .iter()
                .map(|f| f.str().to_string())
                .filter(|f| f != "\\Recent")
                .collect();
            assert_eq!(shown, fetched, "flags of {what}");
            let guid = xattr_string(&path, "user.mail.guid");
            assert!(!guid.is_empty(), "{what}: Cyrus's EMAILID as the GUID");
            compared += 1;
        }
    }
    assert_eq!(compared, 5);
    // Every GUID is the message's own.
    let guids: BTreeMap<String, String> = boxes
        .iter()
        .flat_map(|(name, ms)| {
            ms.list().iter().map(|m| {
                let path = mount.message(name, m.get("uid").num() as u32);
                (xattr_string(&path, "user.mail.guid"), name.clone())
            })
        })
        .collect();
    assert_eq!(guids.len(), 5, "distinct GUIDs: {guids:?}");
    mount.stop();
}
