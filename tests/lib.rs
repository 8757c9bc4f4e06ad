//! extdrop's integration tests: one binary, one module per feature, all driving the real
//! `extdrop` binary against the loopback stand-in through the harness.

mod harness;

mod agency;
mod backlog;
mod changing;
mod cli;
mod crash;
mod credentials;
mod faults;
mod filesystems;
mod idle;
mod io_faults;
mod lifecycle;
mod monitoring;
mod naming;
mod newcomer;
mod packaging;
mod release;
mod server;
mod service;
mod standby;
mod watching;
