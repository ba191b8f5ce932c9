//! Issue 16, fitting the ecosystem: the shell completions and man pages walrs generates from its
//! own command definitions name every command and flag, and docs/walrs.example.toml, the
//! commented example config, parses and names every key the config file accepts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use clap::CommandFactory;

use crate::util::{Walrs, walrs_bin};

/// Every visible command path (`["wal", "list"]`) and the long flags of each.
fn commands() -> Vec<(Vec<String>, Vec<String>)> {
    fn walk(c: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, Vec<String>)>) {
        let flags = c
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        out.push((path.to_vec(), flags));
        for s in c.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(s.get_name().to_string());
            walk(s, &p, out);
        }
    }
    let mut cmd = walrs::cli::Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &[], &mut out);
    out
}

/// bash, zsh and fish completions: generated, syntactically valid where the shell is here
/// (bash always), naming every command and every long flag; man pages: one per command, each
/// with the command's flags, and `walrs.1` on stdout.
#[test]
fn completions_and_man_pages_name_every_command() {
    let cmds = commands();
    for shell in ["bash", "zsh", "fish"] {
        let out = Walrs::new(&walrs_bin()).args(["completions", shell]).run();
        out.expect_code(0);
        for (path, flags) in &cmds {
            if let Some(last) = path.last() {
                assert!(out.stdout.contains(last.as_str()), "{shell}: no {last}");
            }
            for f in flags {
                // fish spells flags without their dashes (`-l timeout`).
                let bare = f.trim_start_matches('-');
                assert!(out.stdout.contains(bare), "{shell}: no {f} of {path:?}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("walrs.completion");
        std::fs::write(&script, &out.stdout).unwrap();
        let checker = Command::new(shell).arg("-n").arg(&script).output();
        match checker {
            Ok(o) => assert!(
                o.status.success(),
                "{shell} -n refused the script: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) if shell == "bash" => panic!("bash: {e}"),
            Err(_) => {} // zsh or fish not installed here
        }
    }
    let out = Walrs::new(&walrs_bin()).args(["completions", "tcsh"]).run();
    out.expect_code(2);

    // Man pages.
    let out = Walrs::new(&walrs_bin()).arg("man").run();
    out.expect_code(0);
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH walrs 1"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    let dir = tempfile::tempdir().unwrap();
    let mandir = dir.path().join("man1");
    Walrs::new(&walrs_bin()).args(["man", "--dir"]).arg(&mandir).run().expect_code(0);
    // One page per visible command, readable by all, nothing else left in the directory (each
    // page goes through a temporary file and a rename).
    let mut files: Vec<(String, u32)> = std::fs::read_dir(&mandir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&e.metadata().unwrap().permissions());
            (e.file_name().to_string_lossy().into_owned(), mode & 0o777)
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), cmds.len(), "{files:?}");
    for (name, mode) in &files {
        assert!(name.starts_with("walrs") && name.ends_with(".1"), "{name}");
        assert_eq!(*mode, 0o644, "{name}");
    }
    // Written again over the same pages: replaced. A page's name taken by a directory: exit 4,
    // named, and no temporary file left.
    Walrs::new(&walrs_bin()).args(["man", "--dir"]).arg(&mandir).run().expect_code(0);
    std::fs::remove_file(mandir.join("walrs-status.1")).unwrap();
    std::fs::create_dir(mandir.join("walrs-status.1")).unwrap();
    let out = Walrs::new(&walrs_bin()).args(["man", "--dir"]).arg(&mandir).run();
    out.expect_code(4);
    assert!(out.stderr.contains("walrs-status.1"), "{}", out.stderr);
    let left = std::fs::read_dir(&mandir).unwrap().count();
    assert_eq!(left, cmds.len(), "a temporary file was left behind");
    std::fs::remove_dir(mandir.join("walrs-status.1")).unwrap();
    Walrs::new(&walrs_bin()).args(["man", "--dir"]).arg(&mandir).run().expect_code(0);
    for (path, flags) in &cmds {
        let mut name = vec!["walrs".to_string()];
        name.extend(path.iter().cloned());
        let page = mandir.join(format!("{}.1", name.join("-")));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH "), "{}", page.display());
        for f in flags {
            // roff escapes the dashes: \-\-timeout.
            let roff = f.replace('-', "\\-");
            assert!(text.contains(&roff), "{}: no {f}", page.display());
        }
    }
}

/// The keys `FileConfig` accepts, as serde asks for them: a deserializer that records the
/// field list `deserialize_struct` is given, then stops.
fn config_keys() -> Vec<&'static str> {
    use serde::de::{self, Deserializer, Visitor};
    struct Fields(std::cell::Cell<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &Fields {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.set(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let f = Fields(std::cell::Cell::new(&[]));
    let _ = <walrs::config::FileConfig as serde::Deserialize>::deserialize(&f);
    let keys = f.0.get().to_vec();
    assert!(keys.len() > 10, "{keys:?}");
    keys
}

/// docs/walrs.example.toml parses as walrs reads a config file (the active lines), each
/// commented-out setting parses too when it is the only one uncommented, and together they name
/// every key the file accepts, each once.
#[test]
fn the_example_config_parses_and_names_every_key() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/walrs.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let over = walrs::config::Overrides::default();
    walrs::config::Settings::resolve(Some(&path), &over, &|_| None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let assignment = |l: &str| -> Option<String> {
        let (k, _) = l.split_once(" = ")?;
        let k = k.trim();
        (!k.is_empty()
            && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()))
        .then(|| k.to_owned())
    };
    // A `[table]` header (commented or not) names the table's key; the settings after it are
    // the table's, each checked inside the table.
    let table = |l: &str| -> Option<String> {
        let t = l.trim().strip_prefix('[')?.strip_suffix(']')?;
        t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_').then(|| t.to_owned())
    };
    let mut named = Vec::new();
    let mut section: Option<String> = None;
    let dir = tempfile::tempdir().unwrap();
    for line in text.lines() {
        let uncommented = line.strip_prefix("# ").unwrap_or(line);
        if let Some(t) = table(uncommented) {
            named.push(t.clone());
            section = Some(t);
        } else if let Some(k) = assignment(uncommented) {
            // The commented setting alone, uncommented (inside its table): a valid file.
            let one = dir.path().join(format!("{k}.toml"));
            let head = section.as_ref().map(|t| format!("[{t}]\n")).unwrap_or_default();
            std::fs::write(&one, format!("{head}{uncommented}\n")).unwrap();
            walrs::config::FileConfig::load(&one).unwrap_or_else(|e| panic!("{line}: {e}"));
            if section.is_none() {
                named.push(k);
            }
        }
    }
    let named_set: BTreeSet<&str> = named.iter().map(String::as_str).collect();
    assert_eq!(named_set.len(), named.len(), "a key named twice: {named:?}");
    let keys: BTreeSet<&str> = config_keys().into_iter().collect();
    assert_eq!(named_set, keys, "docs/walrs.example.toml and FileConfig disagree");
}
