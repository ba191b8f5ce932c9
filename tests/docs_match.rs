//! Docs that match the binary (issue 13): every long flag of every command (from the clap
//! definitions, `Cli::command()`) and every `WALRS_*` variable (those clap reads and the string
//! literals of `src/`) is documented in docs/ (configuration.md or the command's page), and every
//! `--flag` and `WALRS_*` variable the docs name exists. Names that are not walrs's (other
//! programs' flags in the docs, variables only the tests or benchmarks read) are listed below
//! with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use regex::Regex;

/// Flags the docs name that belong to other programs.
const OTHER_PROGRAMS_FLAGS: &[(&str, &str)] = &[
    ("--raw", "mariadb-binlog's, the reference client binlog.md compares with"),
    ("--start-position", "mariadb-binlog's, in binlog.md's replay example"),
    ("--stop-datetime", "mariadb-binlog's, in binlog.md's replay example"),
    ("--now", "systemctl's, in deploy/README.md"),
    ("--failed", "systemctl's, in deploy/README.md"),
    ("--since", "journalctl's, in deploy/README.md"),
    ("--format", "pg_dump's, the command line walrs dump runs (dump.md, format/dump.md)"),
    ("--section", "pg_dump's and pg_restore's, the command lines walrs dump and load run"),
    ("--snapshot", "pg_dump's, the command line walrs dump runs"),
    ("--globals-only", "pg_dumpall's, the command line walrs dump --all runs (dump.md)"),
    ("--create", "pg_dump's and pg_restore's, run by dump --all and load --all"),
    ("--list", "pg_restore's, which load runs to split post-data from its foreign keys"),
    ("--exit-on-error", "pg_restore's, the command line walrs load runs (load.md)"),
    ("--if-exists", "pg_restore's, the command line walrs load --clean runs (load.md)"),
];

/// `WALRS_*` names in src/ or the docs that are not settings of the walrs binary.
const NOT_SETTINGS: &[(&str, &str)] = &[
    ("WALRS_COMMIT", "set by build.rs at compile time for --version"),
    ("WALRS_BUILD_DATE", "set by build.rs at compile time for --version"),
    ("WALRS_LOG_LEVEL", "configuration.md names it to say that the variable is WALRS_LOG"),
    ("WALRS_BIN", "read by the benchmark scripts (benches/), not by walrs"),
    ("WALRS_BASE_BIN", "read by the benchmark scripts (benches/), not by walrs"),
    ("WALRS_BENCH_DIR", "read by the benchmarks (benches/), not by walrs"),
    ("WALRS_BENCH_SEGMENT", "read by the benchmarks (benches/), not by walrs"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.md` file under docs/ except the benchmarks (which quote other programs' command lines
/// throughout), with its text.
fn docs() -> BTreeMap<PathBuf, String> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.insert(p.clone(), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&root().join("docs"), &mut out);
    out
}

/// (command words, long flags, env names) for every command, the root first.
fn cli() -> Vec<(Vec<String>, BTreeSet<String>, BTreeSet<String>)> {
    fn walk(
        c: &clap::Command,
        path: &[String],
        out: &mut Vec<(Vec<String>, BTreeSet<String>, BTreeSet<String>)>,
    ) {
        let mut flags = BTreeSet::new();
        let mut envs = BTreeSet::new();
        for a in c.get_arguments() {
            if a.is_hide_set() {
                continue;
            }
            if let Some(l) = a.get_long()
                && l != "help"
                && l != "version"
            {
                flags.insert(format!("--{l}"));
            }
            if let Some(e) = a.get_env() {
                envs.insert(e.to_string_lossy().into_owned());
            }
        }
        out.push((path.to_vec(), flags, envs));
        for s in c.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(s.get_name().to_string());
            walk(s, &p, out);
        }
    }
    let mut out = Vec::new();
    let mut cmd = walrs::cli::Cli::command();
    cmd.build();
    walk(&cmd, &[], &mut out);
    out
}

/// The `WALRS_*` names in string literals of src/.
fn src_variables() -> BTreeSet<String> {
    fn walk(d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut texts = Vec::new();
    walk(&root().join("src"), &mut texts);
    let literal = Regex::new(r#""(?:[^"\\\n]|\\.)*""#).unwrap();
    let var = Regex::new(r"\bWALRS_[A-Z0-9_]*[A-Z0-9]\b").unwrap();
    let mut out = BTreeSet::new();
    for t in &texts {
        for l in literal.find_iter(t) {
            out.extend(var.find_iter(l.as_str()).map(|m| m.as_str().to_string()));
        }
    }
    out
}

#[test]
fn docs_name_every_flag_and_variable_and_only_real_ones() {
    let docs = docs();
    let doc = |rel: &str| docs.get(&root().join("docs").join(rel)).cloned().unwrap_or_default();
    let configuration = doc("configuration.md");
    let commands = cli();
    let mut missing = Vec::new();

    // 1. Every flag is on its command's page (or, for the global options, configuration.md).
    let globals = &commands[0].1;
    let mut all_flags: BTreeSet<String> = ["--help", "--version"].map(String::from).into();
    for (path, flags, _) in &commands {
        all_flags.extend(flags.iter().cloned());
        let Some(top) = path.first() else { continue };
        let page = doc(&format!("commands/{top}.md"));
        for f in flags {
            let named = format!("`{f}");
            let documented = page.contains(&named)
                || (globals.contains(f) || f == "--compression" || f == "--spool-dir")
                    && configuration.contains(&named);
            if !documented {
                missing.push(format!(
                    "walrs {} {f}: not in docs/commands/{top}.md{}",
                    path.join(" "),
                    if globals.contains(f) { " nor docs/configuration.md" } else { "" }
                ));
            }
        }
    }
    for f in globals {
        if !configuration.contains(&format!("`{f}")) {
            missing.push(format!("global option {f}: not in docs/configuration.md"));
        }
    }

    // 2. Every variable walrs reads is in configuration.md.
    let clap_vars: BTreeSet<String> = commands.iter().flat_map(|c| c.2.iter().cloned()).collect();
    let src_vars = src_variables();
    let not_settings: BTreeSet<&str> = NOT_SETTINGS.iter().map(|(n, _)| *n).collect();
    for v in clap_vars.union(&src_vars) {
        if !configuration.contains(&format!("`{v}`")) && !not_settings.contains(v.as_str()) {
            missing.push(format!("variable {v}: not in docs/configuration.md"));
        }
    }

    // 3. Every flag and variable the docs name exists.
    // `--s3-*` names a family of flags, checked one by one above.
    let flag_re = Regex::new(r"(?:^|[\s`(\[|])(--[a-z][a-z0-9-]*[a-z0-9])(-\*)?").unwrap();
    let var_re = Regex::new(r"\bWALRS_[A-Z0-9_]*[A-Z0-9]\b").unwrap();
    let other: BTreeSet<&str> = OTHER_PROGRAMS_FLAGS.iter().map(|(f, _)| *f).collect();
    let known_vars: BTreeSet<&String> = clap_vars.union(&src_vars).collect();
    for (path, text) in &docs {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let benchmarks = rel.ends_with("benchmarks.md") || rel.ends_with("benchmarks-log.md");
        for c in flag_re.captures_iter(text) {
            let f = &c[1];
            let family = c.get(2).is_some() && all_flags.iter().any(|a| a.starts_with(f));
            if !benchmarks && !family && !all_flags.contains(f) && !other.contains(f) {
                missing.push(format!("{rel}: names {f}, which no walrs command has"));
            }
        }
        for m in var_re.find_iter(text) {
            let v = m.as_str().to_string();
            if !known_vars.contains(&v) && !not_settings.contains(v.as_str()) {
                missing.push(format!("{rel}: names {v}, which walrs does not read"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "docs and binary disagree:\n{}", missing.join("\n"));
}
