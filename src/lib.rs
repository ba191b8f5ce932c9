//! walrs: continuous archiving and point-in-time recovery for PostgreSQL.
//!
//! The library holds everything; the `walrs` binary only parses arguments, dispatches to
//! `commands` and maps errors to exit codes. The layers, top to bottom, each meant to import only
//! those below it:
//!
//! - `cli` (arguments, the context, exit codes) and `commands` (one file per subcommand);
//! - `backup` (base backups, restoring a data directory) and `mysql` (binlog streaming);
//! - `recovery` (targets, the planner, the recovery settings);
//! - `archive` (push and fetch of WAL, look-ahead, prefetch, the spool);
//! - `replication` (the PostgreSQL replication client) over `net` (TLS, sockets);
//! - `index` (the WAL index: summaries, roll-ups, verification);
//! - `repo` (the repository: every object kind as a type, the key layout, the config);
//! - `codec` (envelopes: compression, encryption, digests), `storage` (file system, S3, memory)
//!   and `config` (files and environment into settings);
//! - `pg` (PostgreSQL's formats, no I/O);
//! - beside them all: `error`, `output`, `progress`, `cleanup`, `users`, `timefmt`.
//!
//! See docs/ for the formats.

pub mod archive;
pub mod backup;
pub mod bytes;
pub mod cleanup;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod error;
pub mod index;
pub mod mysql;
pub mod net;
pub mod output;
pub mod pg;
pub mod progress;
pub mod recovery;
pub mod replication;
pub mod repo;
pub mod retention;
pub mod storage;
pub mod timefmt;
pub mod users;
