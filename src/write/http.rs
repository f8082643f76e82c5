//! The doveadm HTTP API (`POST /doveadm/v1`, Dovecot's `doveadm_api_key` or
//! `doveadm_password`): each command a JSON call `[["name", {parameters}, "tag"]]`,
//! answered `[["doveadmResponse", [rows], "tag"]]` or `[["error", {"exitCode": N}, "tag"]]`
//! (`admin_manual/doveadm_http_api.rst`). Command and parameter names are the doveadm
//! ones in camel case (`mailbox create` -> `mailboxCreate`, `destination-mailbox` ->
//! `destinationMailbox`).

use std::io;
use std::time::Duration;

use serde_json::{Value, json};

use super::doveadm::Cmd;
use super::doveadm::Reply;
use super::doveadm::protocol::{LogLine, Outcome};
use crate::error::{Error, Result};

/// A doveadm HTTP API endpoint.
pub struct HttpApi {
    url: String,
    /// The `Authorization` header value.
    auth: Option<String>,
    agent: ureq::Agent,
}

impl HttpApi {
    /// An API at `url`; `secret` is the API key (`X-Dovecot-API`), or `password:PASS`
    /// for `doveadm_password` (HTTP basic auth as user `doveadm`).
    pub fn new(url: &str, secret: Option<String>) -> Result<HttpApi> {
        let auth = secret.map(|s| match s.strip_prefix("password:") {
            Some(pass) => format!(
                "Basic {}",
                super::doveadm::base64(format!("doveadm:{pass}").as_bytes())
            ),
            None => format!("X-Dovecot-API {}", super::doveadm::base64(s.as_bytes())),
        });
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Location {
                location: url.to_string(),
                what: "not an http(s) URL".into(),
            });
        }
        Ok(HttpApi {
            url: url.to_string(),
            auth,
            agent,
        })
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `cmd` for `user`; an HTTP-level failure is an I/O error.
    pub(super) fn run(&self, user: &str, cmd: &Cmd, body: Option<&[u8]>) -> io::Result<Reply> {
        let (name, params) = call(user, cmd, body);
        let request = json!([[name, params, "m"]]);
        let mut req = self.agent.post(&self.url);
        if let Some(auth) = &self.auth {
            req = req.set("Authorization", auth);
        }
        let answer = match req.send_json(request) {
            Ok(r) => r,
            // 4xx/5xx with a body is still an answer when it is doveadm's JSON.
            Err(ureq::Error::Status(code, r)) if code != 401 && code != 403 => r,
            Err(ureq::Error::Status(code, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the doveadm HTTP API refused the login (HTTP {code})"),
                ));
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        let value: Value = answer
            .into_json()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        parse_answer(&value)
    }
}

/// The JSON call for `cmd`.
fn call(user: &str, cmd: &Cmd, body: Option<&[u8]>) -> (&'static str, Value) {
    let query = |mailbox: &str, uids: &str| json!(["mailbox", mailbox, "uid", uids]);
    match cmd {
        Cmd::List => ("mailboxList", json!({ "user": user })),
        Cmd::Expunge { mailbox, uids } => (
            "expunge",
            json!({ "user": user, "query": query(mailbox, uids) }),
        ),
        Cmd::Move { from, to, uids } => (
            "move",
            json!({ "user": user, "destinationMailbox": to, "query": query(from, uids) }),
        ),
        Cmd::Flags {
            verb,
            flags,
            mailbox,
            uids,
        } => (
            match *verb {
                "add" => "flagsAdd",
                "remove" => "flagsRemove",
                _ => "flagsReplace",
            },
            json!({ "user": user, "flag": flags, "query": query(mailbox, uids) }),
        ),
        Cmd::FetchFlags { mailbox, uids } => (
            "fetch",
            json!({ "user": user, "field": ["flags"], "query": query(mailbox, uids) }),
        ),
        Cmd::Save { mailbox } => (
            "save",
            json!({
                "user": user,
                "mailbox": mailbox,
                "file": String::from_utf8_lossy(body.unwrap_or_default()),
            }),
        ),
        Cmd::Create { mailbox } => (
            "mailboxCreate",
            json!({ "user": user, "mailbox": [mailbox] }),
        ),
        Cmd::Delete { mailbox } => (
            "mailboxDelete",
            json!({ "user": user, "mailbox": [mailbox], "requireEmpty": true }),
        ),
        Cmd::Rename { from, to } => (
            "mailboxRename",
            json!({ "user": user, "mailbox": from, "newName": to }),
        ),
    }
}

/// A doveadm exit code as the doveadm protocol names it (`doveadm-cmd.c`).
fn exit_code_name(code: i64) -> &'static str {
    match code {
        75 => "TEMPFAIL",
        64 => "USAGE",
        67 => "NOUSER",
        77 => "NOPERM",
        76 => "PROTOCOL",
        65 => "DATAERR",
        1001 => "NOREPLICATE",
        68 => "NOTFOUND",
        73 => "UNKNOWN quota or create failure (exit code 73)",
        _ => "UNKNOWN",
    }
}

/// The rows (each row's values in order) or the failure of an answer.
fn parse_answer(value: &Value) -> io::Result<Reply> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer {value}"),
        )
    };
    let first = value.get(0).ok_or_else(bad)?;
    let kind = first.get(0).and_then(Value::as_str).ok_or_else(bad)?;
    match kind {
        "doveadmResponse" => {
            let mut values = Vec::new();
            for row in first.get(1).and_then(Value::as_array).into_iter().flatten() {
                if let Some(obj) = row.as_object() {
                    for v in obj.values() {
                        values.push(match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                    }
                }
            }
            Ok(Reply {
                values,
                outcome: Outcome::Ok,
                log: Vec::new(),
            })
        }
        "error" => {
            let code = first
                .get(1)
                .and_then(|e| e.get("exitCode"))
                .and_then(Value::as_i64)
                .unwrap_or(-1);
            Ok(Reply {
                values: Vec::new(),
                outcome: Outcome::Failed(exit_code_name(code).to_string()),
                log: vec![LogLine {
                    level: 4,
                    text: format!("doveadm HTTP API: exit code {code}"),
                }],
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_use_the_camel_case_names() {
        let (name, params) = call(
            "bob",
            &Cmd::Move {
                from: "INBOX".into(),
                to: "Work/Sub".into(),
                uids: "7".into(),
            },
            None,
        );
        assert_eq!(name, "move");
        assert_eq!(
            params,
            json!({"user": "bob", "destinationMailbox": "Work/Sub",
                   "query": ["mailbox", "INBOX", "uid", "7"]})
        );
        let (name, params) = call(
            "bob",
            &Cmd::Delete {
                mailbox: "A".into(),
            },
            None,
        );
        assert_eq!(name, "mailboxDelete");
        assert_eq!(params["requireEmpty"], json!(true));
    }

    #[test]
    fn answers_are_rows_or_exit_codes() {
        let ok = json!([["doveadmResponse", [{"mailbox": "INBOX"}, {"mailbox": "Work"}], "m"]]);
        let r = parse_answer(&ok).unwrap();
        assert_eq!(r.values, vec!["INBOX", "Work"]);
        assert_eq!(r.outcome, Outcome::Ok);
        let err = json!([["error", {"type": "exitCode", "exitCode": 68}, "m"]]);
        assert_eq!(
            parse_answer(&err).unwrap().outcome,
            Outcome::Failed("NOTFOUND".into())
        );
        assert!(parse_answer(&json!({})).is_err());
    }
}
