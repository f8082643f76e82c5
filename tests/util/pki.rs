//! TLS material made with `openssl` for tests: a CA, a server certificate it signed (for
//! `localhost`, 127.0.0.1 and optionally another address) and an unrelated second CA, to
//! show a client trusts the first and refuses the second.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files [`Pki::make`] wrote.
pub struct Pki {
    /// The address also in the certificate, if one was given.
    pub extra_ip: Option<String>,
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The server's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// P-256 keys: quick to make.
const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

impl Pki {
    /// Writes the CA (`ca.pem`), the server's certificate (`server.pem`, `server.key`:
    /// DNS `localhost`, IP 127.0.0.1 and `extra_ip`) and `other-ca.pem` into `dir`.
    pub fn make(dir: &Path, extra_ip: Option<String>) -> Pki {
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend(EC);
            let subject = format!("/CN=mailfs test {ca}");
            let key = format!("{ca}.key");
            let pem = format!("{ca}.pem");
            args.extend([
                "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
            ]);
            openssl(dir, &args);
        }
        let mut req = vec!["req"];
        req.extend(EC);
        req.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(dir, &req);
        std::fs::write(
            dir.join("ext.cnf"),
            format!(
                "subjectAltName=DNS:localhost,IP:127.0.0.1{}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth\n",
                extra_ip
                    .as_ref()
                    .map_or(String::new(), |ip| format!(",IP:{ip}"))
            ),
        )
        .expect("writing ext.cnf");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        Pki {
            extra_ip,
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// Dovecot settings for its mail_crypt plugin with global EC keys made in `keys` (a
/// prime256v1 key pair): messages saved with them are encrypted (`CRYPTED` streams).
pub fn mail_crypt_settings(keys: &Path) -> Vec<String> {
    for args in [
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ][..],
        &["pkey", "-in", "ec.key", "-out", "private.pem"],
        &["pkey", "-in", "ec.key", "-pubout", "-out", "public.pem"],
    ] {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(keys)
            .output()
            .expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}");
    }
    vec![
        "mail_plugins = $mail_plugins mail_crypt".to_string(),
        format!(
            "plugin/mail_crypt_global_private_key = <{}",
            keys.join("private.pem").display()
        ),
        format!(
            "plugin/mail_crypt_global_public_key = <{}",
            keys.join("public.pem").display()
        ),
        "plugin/mail_crypt_save_version = 2".to_string(),
    ]
}
