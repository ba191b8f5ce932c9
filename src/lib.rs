//! walrs: continuous archiving and point-in-time recovery for PostgreSQL.
//!
//! The library holds everything; the `walrs` binary only parses arguments, dispatches to
//! `commands` and maps errors to exit codes. Layers, each importing only those below it:
//! `commands` → `archive` → `repo` → (`codec`, `storage`) → `pg`; `cli` and `config` resolve
//! arguments, files and environment into a validated context. See docs/ for the formats.

pub mod archive;
pub mod backup;
pub mod bytes;
pub mod cleanup;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod durable;
pub mod error;
pub mod follow;
pub mod index;
pub mod mysql;
pub mod net;
pub mod output;
pub mod pg;
pub mod pgwire;
pub mod progress;
pub mod recovery;
pub mod replication;
pub mod repo;
pub mod storage;
pub mod timefmt;
pub mod users;
