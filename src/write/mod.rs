//! The write path: changes made through the mount, carried out by Dovecot itself. This
//! layer sits beside the read engine (`store`), implements `store::MailWriter`, and reads
//! nothing of the store: nothing in `format/`, `index/` or the store readers writes.
//!
//! - `doveadm`: Dovecot's doveadm server over its unix socket or TCP (the doveadm
//!   protocol, as `doveadm -S` and directors speak it);
//! - `http`: the doveadm HTTP API.

pub mod doveadm;
pub mod http;

pub use doveadm::{DoveadmWriter, Endpoint, Users};
