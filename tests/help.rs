//! Help that teaches (issue 13): examples in every command's `--help`, the global options under
//! their own heading and only on the commands they apply to (`--compression` where objects are
//! written, `--spool-dir` on `push` and `fetch`), the encryption variables named, `--repo`
//! naming `s3://`, `--target-time` saying that a time without a zone is UTC, `--jobs` refused
//! outside 1..16, and `--version` with the commit and the build date.

use clap::CommandFactory;
use regex::Regex;

use crate::util::wal::SegSpec;
use crate::util::{Out, Walrs, short_tempdir, walrs_bin};

fn walrs() -> Walrs {
    Walrs::new(&walrs_bin())
}

fn help(path: &[&str]) -> String {
    let out = walrs().args(path).arg("--help").run();
    out.expect_code(0);
    out.stdout
}

/// Every visible command, as the words that name it (`["binlog", "tail"]`).
fn commands() -> Vec<Vec<String>> {
    fn walk(c: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for s in c.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(s.get_name().to_string());
            out.push(p.clone());
            walk(s, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&walrs::cli::Cli::command(), &[], &mut out);
    out
}

#[test]
fn every_command_help_has_examples_and_a_global_options_heading() {
    let all = commands();
    assert!(all.len() >= 16, "{all:?}");
    for path in std::iter::once(Vec::new()).chain(all) {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&words);
        let what = format!("walrs {} --help", words.join(" "));
        assert!(text.contains("\nExamples:\n"), "{what}: no examples:\n{text}");
        assert!(text.contains("\nGlobal options:\n"), "{what}: no global options heading:\n{text}");
        for var in ["WALRS_ENCRYPTION_KEY_FILE", "WALRS_ENCRYPTION_KEY="] {
            assert!(text.contains(var), "{what}: {var} is not named:\n{text}");
        }
        assert!(
            text.contains("--repo <PATH|URL>") && text.contains("s3://bucket/prefix"),
            "{what}: --repo does not name s3://:\n{text}"
        );
        // The global options are listed under their heading, not among the command's own.
        let own = text.split("\nGlobal options:\n").next().unwrap_or_default();
        assert!(!own.contains("--log-level"), "{what}: --log-level among the options:\n{text}");
    }
}

/// The options of the command at `path` as its help lists them.
fn flags(path: &[&str]) -> Vec<String> {
    let re = Regex::new(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)").unwrap();
    re.captures_iter(&help(path)).map(|c| c[1].to_string()).collect()
}

#[test]
fn compression_and_spool_dir_only_where_they_apply() {
    let with = |path: &[&str], flag: &str| flags(path).iter().any(|f| f == flag);
    for path in [&["push"][..], &["basebackup"], &["binlog", "tail"], &["repo", "init"]] {
        assert!(with(path, "--compression"), "{path:?} lacks --compression");
    }
    for path in [&["push"][..], &["fetch"]] {
        assert!(with(path, "--spool-dir"), "{path:?} lacks --spool-dir");
    }
    for path in [
        &["fetch"][..],
        &["wal", "list"],
        &["wal", "verify"],
        &["timeline"],
        &["backup", "list"],
        &["restore"],
        &["binlog", "list"],
        &["binlog", "fetch"],
    ] {
        assert!(!with(path, "--compression"), "{path:?} shows --compression");
    }
    for path in [&["binlog", "tail"][..], &["basebackup"], &["restore"], &["wal", "list"]] {
        assert!(!with(path, "--spool-dir"), "{path:?} shows --spool-dir");
    }
    // Given to a command they do not apply to, after or before its name: a command-line error.
    let tmp = short_tempdir("whlp");
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let dest = tmp.path().join("x");
    let fetch = |args: &[&str]| -> Out {
        walrs()
            .env("WALRS_REPO", &repo)
            .args(args)
            .args(["000000010000000000000001"])
            .arg(&dest)
            .run()
    };
    fetch(&["fetch", "--compression", "lz4"]).expect_code(2);
    fetch(&["--compression", "lz4", "fetch"]).expect_code(2);
    walrs()
        .env("WALRS_REPO", &repo)
        .args(["binlog", "tail", "--user", "u", "--server-id", "9", "--spool-dir", "/tmp"])
        .run()
        .expect_code(2);
    walrs()
        .env("WALRS_REPO", &repo)
        .args(["--spool-dir", "/tmp", "wal", "list"])
        .run()
        .expect_code(2);
    // An irrelevant variable is no error: fetch never reads WALRS_COMPRESSION (the repository
    // has no config yet: exit 14, not 3).
    let out = walrs()
        .env("WALRS_REPO", &repo)
        .env("WALRS_COMPRESSION", "gzip")
        .args(["fetch", "000000010000000000000001"])
        .arg(&dest)
        .run();
    out.expect_code(14);
    // Where it applies, it is read and checked.
    let wal = tmp.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    let seg = SegSpec::new(1).write(&wal);
    walrs()
        .env("WALRS_REPO", &repo)
        .env("WALRS_COMPRESSION", "gzip")
        .arg("push")
        .arg(&seg)
        .run()
        .expect_code(3);
    // Before the command name, as earlier versions accepted: still works for push.
    walrs()
        .env("WALRS_REPO", &repo)
        .args(["--compression", "lz4", "--spool-dir"])
        .arg(tmp.path().join("spool"))
        .arg("push")
        .arg(&seg)
        .run()
        .expect_code(0);
    walrs()
        .env("WALRS_REPO", &repo)
        .args(["fetch", "000000010000000000000001"])
        .arg(&dest)
        .run()
        .expect_code(0);
    assert!(std::fs::read(&dest).unwrap() == SegSpec::new(1).bytes());
}

#[test]
fn restore_options_say_how_they_behave() {
    let text = help(&["restore"]);
    assert!(text.contains("A time without a zone is UTC"), "{text}");
    assert!(text.contains("--jobs <N>") && text.contains("1 to 16"), "{text}");
    let tmp = short_tempdir("whlp");
    let restore = |jobs: &str| -> Out {
        walrs()
            .env("WALRS_REPO", tmp.path().join("no-such-repo"))
            .args(["restore", "--dry-run", "--pgdata"])
            .arg(tmp.path().join("r"))
            .args(["--jobs", jobs])
            .run()
    };
    for bad in ["0", "17", "1000"] {
        let out = restore(bad);
        out.expect_code(2);
        assert!(out.stderr.contains("--jobs"), "{}", out.stderr);
    }
    restore("-1").expect_code(2);
    // In range: on to the repository, which does not exist (exit 3).
    restore("16").expect_code(3);
    restore("1").expect_code(3);
}

/// The other counts say their ranges in the help, and a value outside is refused before any work
/// (exit 3, as configuration.md says for the flag, the variable and the config key alike).
#[test]
fn push_and_fetch_counts_say_and_enforce_their_ranges() {
    let push = help(&["push"]);
    assert!(push.contains("--parallel <N>") && push.contains("1 to 64"), "{push}");
    let fetch = help(&["fetch"]);
    assert!(fetch.contains("0 to 64") && fetch.contains("1 to 64"), "{fetch}");
    let tmp = short_tempdir("whlp");
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let wal = tmp.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    let seg = SegSpec::new(1).write(&wal);
    for n in ["0", "65"] {
        let out = walrs().env("WALRS_REPO", &repo).args(["push", "--parallel", n]).arg(&seg).run();
        out.expect_code(3);
        assert!(out.stderr.contains("between 1 and 64"), "{}", out.stderr);
    }
    let dest = tmp.path().join("x");
    for (flag, n) in [("--prefetch", "65"), ("--prefetch-parallel", "0")] {
        let out = walrs()
            .env("WALRS_REPO", &repo)
            .args(["fetch", flag, n, "000000010000000000000001"])
            .arg(&dest)
            .run();
        out.expect_code(3);
        assert!(out.stderr.contains("and 64"), "{}", out.stderr);
    }
    assert!(!repo.join("wal").exists(), "a refused push stored something");
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let re =
        Regex::new(r"^walrs(-[a-z]+)* \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown), built \d{4}-\d\d-\d\d\)\n$")
            .unwrap();
    for args in [&["--version"][..], &["push", "--version"], &["binlog", "tail", "--version"]] {
        let out = walrs().args(args).run();
        out.expect_code(0);
        assert!(re.is_match(&out.stdout), "{args:?}: {:?}", out.stdout);
    }
    // In a git checkout (the tests run in one), the commit is known.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Ok(h) = head
        && h.status.success()
    {
        let out = walrs().arg("--version").run();
        let commit = String::from_utf8_lossy(&h.stdout).trim().to_string();
        assert!(out.stdout.contains(&format!("commit {commit}")), "{}", out.stdout);
    }
}
