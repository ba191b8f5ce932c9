//! walrs: continuous archiving and point-in-time recovery for PostgreSQL.
//!
//! The library holds everything; the `walrs` binary only parses arguments, dispatches to
//! `commands` and maps errors to exit codes. The layers, top to bottom, each meant to import only
//! those below it:
//!
//! - `cli` (arguments, one match over the commands, printing their outcome, exit codes);
//! - `commands` (one file per subcommand; the context and outcome they share);
//! - `status` (the operator's view: `status`, `metrics`, `check`, from the catalogue, the index
//!   and the drill records);
//! - `drill` (restore drills: scratch directory, the drill's server, checks, records);
//! - `retention` (the retention planner: keep or drop, with the rule that decided; its property
//!   test checks plans against the recovery planner);
//! - `recovery` (targets, the planner and its input, the recovery settings);
//! - `archive` (push and fetch of WAL, look-ahead, prefetch, the spool), `backup` (base backups,
//!   restoring a data directory) and `mysql` (binlog streaming);
//! - `index` (the WAL index: summaries, roll-ups, verification);
//! - `replication` (PostgreSQL replication commands) over `pgwire` (the PostgreSQL client);
//! - `repo` (the repository: every object kind as a type, the key layout, the config) and
//!   `config` (files and environment into settings);
//! - `codec` (envelopes: compression, encryption, digests) and `storage` (file system, S3, memory);
//! - `pg` (PostgreSQL's formats, no I/O);
//! - beside them all: `error`, `output`, `progress`, `cleanup`, `durable` (the one durable local
//!   write), `follow` (the loop of a command that follows a server), `net` (sockets, TLS),
//!   `bytes`, `users`, `timefmt`.
//!
//! docs/architecture.md describes each layer.
//! See docs/ for the formats.

pub mod archive;
pub mod backup;
pub mod bytes;
pub mod cleanup;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod drill;
pub mod dump;
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
pub mod retention;
pub mod status;
pub mod storage;
pub mod timefmt;
pub mod users;

#[cfg(test)]
mod tests {
    /// The row of each top-level module in the layer picture of docs/architecture.md: a module
    /// may import only modules on a lower row (the shared helpers, row 0, also each other).
    const ROWS: &[(usize, &[&str])] = &[
        (
            0,
            &[
                "error", "output", "cleanup", "durable", "follow", "net", "bytes", "progress",
                "timefmt", "users", "outln", "textln",
            ],
        ),
        (1, &["pg"]),
        (2, &["codec", "storage"]),
        (3, &["repo", "config"]),
        (4, &["pgwire"]),
        (5, &["replication"]),
        (6, &["index"]),
        (7, &["archive", "backup", "mysql", "dump"]),
        (8, &["recovery"]),
        (9, &["retention", "drill"]),
        (10, &["status"]),
        (11, &["commands"]),
        (12, &["cli"]),
    ];

    fn row(module: &str) -> Option<usize> {
        ROWS.iter().find(|(_, ms)| ms.contains(&module)).map(|(r, _)| *r)
    }

    /// The top-level modules `code` names as `crate::x`, also inside `use crate::{x, y::z}`.
    fn named(code: &str) -> Vec<String> {
        let mut out = Vec::new();
        let ident = |s: &str| -> String {
            s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
        };
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Top-level items of the group: split at commas outside nested braces.
                let mut depth = 0;
                let mut start = 0;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            out.push(ident(&group[start..j]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.push(ident(&group[start..j]));
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                out.push(ident(rest));
            }
        }
        out.retain(|m| !m.is_empty() && m != "self");
        out
    }

    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, root, out);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let top = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let from = row(&top).unwrap_or_else(|| panic!("{rel}: module {top} has no row"));
            let text = std::fs::read_to_string(&p).unwrap();
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            for m in named(&code) {
                if m == top {
                    continue;
                }
                let Some(to) = row(&m) else {
                    out.push(format!("{rel}: crate::{m} has no row"));
                    continue;
                };
                if to > from || (to == from && from != 0) {
                    out.push(format!("{rel} (row {from}) imports {m} (row {to})"));
                }
            }
        }
    }

    /// No file imports a layer above its own, nor a folder on its own row (docs/architecture.md).
    #[test]
    fn no_file_imports_a_layer_above_it() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut bad = Vec::new();
        walk(&root, &root, &mut bad);
        assert!(bad.is_empty(), "imports against the layers:\n{}", bad.join("\n"));
        assert_eq!(
            named("use crate::{a, b::{c, d}, e::f};\nlet x = crate::g::h();"),
            ["a", "b", "e", "g"]
        );
    }
}
