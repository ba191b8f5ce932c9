//! The one integration-test binary (ripgrep's layout): helpers in `util`, one module per area.
//! Tests start real servers themselves (PostgreSQL via initdb/pg_ctl as a non-root user); a missing
//! server binary is a loud failure, never a skip: the README's test command installs them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod util;

mod binlog;
mod block_map;
mod check;
mod cli;
mod docs_match;
mod drill;
mod dump;
mod expire;
mod faults;
mod fixture_repo;
mod foreign_objects;
mod guard_rails;
mod help;
mod incremental;
mod json_output;
mod lookahead;
mod majors;
mod mysql_wire;
mod operator;
mod operator_guards;
mod operator_view;
mod pg_archive;
mod pgwire;
mod pitr;
mod prefetch;
mod repo_objects;
mod s3;
mod s3_integrity;
mod status;
#[path = "storage/conformance.rs"]
mod storage_conformance;
mod temporaries;
mod tls;
mod wal_decode;
mod wal_index;
