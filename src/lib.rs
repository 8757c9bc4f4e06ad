//! extdrop: a Linux daemon that turns folders into a reliable upload queue for CodeArts
//! Pipeline extensions.
//!
//! A file's life, and the module for each stage: found and judged ready in an inbox
//! ([`watch`]), claimed into the inbox's work folder ([`store`]), named by the watch's rules
//! ([`rules`]), checked ([`package`]), uploaded with credentials ([`upload`], [`auth`]) and
//! retried ([`retry`]), then filed into `done` or `failed` with its report ([`store`],
//! [`outcome`]). [`daemon`] wires these together; [`daemon::run`] is the place to start
//! reading. [`config`] turns the TOML into checked types, [`cli`] and [`service`] are the
//! command line and the process around the daemon, [`stub`] is the loopback stand-in of the
//! CodeArts endpoint used by tests and by [`demo`].

#![warn(missing_docs, clippy::unwrap_used)]

pub mod accept;
pub mod auth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod direct;
pub mod metrics;
pub mod outcome;
pub mod package;
pub mod progress;
pub mod release;
pub mod retry;
pub mod rules;
pub mod say;
pub mod service;
pub mod shown;
pub mod standby;
pub mod store;
pub mod stub;
pub mod systemd;
pub mod upload;
pub mod watch;
