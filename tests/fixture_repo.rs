//! Issue 14 (https://github.com/walrs/walrs/issues/14): repositories written by the previous
//! release are read, verified and restored by this build, unchanged. The fixture
//! `tests/fixtures/repo-015181a/` was written by walrs at commit 015181a with
//! `tests/fixtures/make-fixture.sh` (a PostgreSQL 15 cluster with 1 MiB segments: WAL on timelines 1
//! and 2, a `.history` file, `.backup` files, the WAL index with its roll-ups, one base backup per
//! repository; a plain and an encrypted variant). Each test copies one variant into a temporary
//! directory (the committed files are never touched) and runs `wal list`, `timeline`, `wal verify`,
//! `backup list`, `backup verify`, `fetch` of every archived file against the SHA-256 the script
//! recorded, `push` of already archived files, and real restores with a PostgreSQL 15 started on
//! them, checking the table against the checksums the script recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::util::pg::{PgCluster, PgWorld};
use crate::util::{Out, Walrs, chown_to_test_user};

/// The fixture of the previous release (walrs at 015181a).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/repo-015181a");

/// What `make-fixture.sh` recorded: `facts.txt` (key=value) and `wal-sha256.txt`.
struct Facts {
    facts: HashMap<String, String>,
    /// Every file PostgreSQL archived, by name, with the hex SHA-256 of its content.
    wal: BTreeMap<String, String>,
}

impl Facts {
    fn load() -> Facts {
        let dir = Path::new(FIXTURE);
        let text = std::fs::read_to_string(dir.join("facts.txt")).unwrap();
        let facts = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let text = std::fs::read_to_string(dir.join("wal-sha256.txt")).unwrap();
        let wal = text
            .lines()
            .map(|l| {
                let (sum, name) = l.split_once("  ").unwrap();
                (name.to_string(), sum.to_string())
            })
            .collect();
        Facts { facts, wal }
    }

    fn get(&self, key: &str) -> &str {
        self.facts.get(key).unwrap_or_else(|| panic!("facts.txt has no {key}"))
    }

    /// The full segments archived on each timeline, in order.
    fn segments(&self) -> BTreeMap<u32, Vec<&str>> {
        let mut by_tli: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for name in self.wal.keys().filter(|n| n.len() == 24) {
            let tli = u32::from_str_radix(&name[..8], 16).unwrap();
            by_tli.entry(tli).or_default().push(name);
        }
        by_tli
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::util::files(dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect()
}

/// One variant of the fixture, copied into a world of its own and owned by the test user, as the
/// repository of an archive_command is.
struct FixtureCopy {
    world: PgWorld,
    repo: PathBuf,
    key: Option<PathBuf>,
}

impl FixtureCopy {
    fn new(variant: &str) -> FixtureCopy {
        let world = PgWorld::new();
        let repo = world.path("repo");
        copy_tree(&Path::new(FIXTURE).join(variant), &repo);
        let key = (variant == "encrypted").then(|| {
            let text = std::fs::read_to_string(Path::new(FIXTURE).join("test-encryption-key.txt"))
                .unwrap();
            let line = text.lines().rfind(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
            let k = world.path("key");
            std::fs::write(&k, format!("{line}\n")).unwrap();
            std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            k
        });
        chown_to_test_user(world.dir.path());
        FixtureCopy { world, repo, key }
    }

    fn walrs(&self) -> Walrs {
        let mut w = Walrs::new(&self.world.walrs).env("WALRS_REPO", &self.repo);
        if let Some(k) = &self.key {
            w = w.env("WALRS_ENCRYPTION_KEY_FILE", k);
        }
        w
    }

    fn run(&self, args: &[&str]) -> Out {
        self.walrs().args(args).run()
    }

    /// `restore` with `args` into `name`, a PostgreSQL 15 started on it until recovery ends, and
    /// the table checksum it holds.
    fn restore_and_read(&self, name: &str, args: &[&str], sum_query: &str) -> String {
        let dir = self.world.path(name);
        let mut all = vec!["restore", "--pgdata", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run(&all).expect_code(0);
        chown_to_test_user(&dir);
        let mut c =
            PgCluster::with_data(&self.world, &format!("{name}-run"), dir, "archive_mode = off\n");
        c.start();
        c.wait_for("the end of recovery", Duration::from_secs(120), || {
            c.sql("SELECT pg_is_in_recovery()") == "f"
        });
        let sum = c.sql(sum_query);
        c.stop();
        sum
    }
}

/// No warning or error in a command's log.
#[track_caller]
fn quiet(out: &Out, what: &str) {
    let noisy: Vec<&str> =
        out.stderr.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(noisy.is_empty(), "{what} on the fixture logged:\n{}", noisy.join("\n"));
}

fn check_fixture(variant: &str) {
    let facts = Facts::load();
    let fx = FixtureCopy::new(variant);
    let segments = facts.segments();
    assert_eq!(segments.keys().copied().collect::<Vec<_>>(), [1, 2], "the fixture's timelines");

    // wal list: one range per timeline, exactly the archived segments, nothing damaged.
    let out = fx.run(&["wal", "list", "--json"]);
    out.expect_code(0);
    quiet(&out, "wal list");
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let list = list["timelines"].as_array().unwrap();
    assert_eq!(list.len(), segments.len(), "{}", out.stdout);
    for (tl, (tli, names)) in list.iter().zip(&segments) {
        assert_eq!(tl["timeline"], *tli, "{}", out.stdout);
        let ranges = tl["ranges"].as_array().unwrap();
        assert_eq!(ranges.len(), 1, "timeline {tli}: {}", out.stdout);
        assert_eq!(ranges[0]["first_wal"], names[0], "timeline {tli}");
        assert_eq!(ranges[0]["last_wal"], names[names.len() - 1], "timeline {tli}");
        assert_eq!(ranges[0]["segments"], names.len(), "timeline {tli}");
        assert!(ranges[0]["damaged"].as_array().unwrap().is_empty(), "{}", out.stdout);
        assert!(tl["gaps"].as_array().unwrap().is_empty(), "{}", out.stdout);
        assert!(ranges[0]["commits"].as_u64().unwrap() > 0, "{}", out.stdout);
    }

    // timeline: 2 branched from 1 at the restore point, from the history file. Timeline 1 went on
    // past the switch point, but that WAL is older than timeline 2 (a point-in-time recovery to an
    // earlier point), so the histories have not diverged: no warning is legitimate here.
    let out = fx.run(&["timeline", "--json"]);
    out.expect_code(0);
    quiet(&out, "timeline");
    let tree: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let tree = tree["timelines"].as_array().unwrap();
    assert_eq!(tree.len(), 2, "{}", out.stdout);
    assert_eq!(tree[1]["timeline"], 2);
    assert_eq!(tree[1]["parent"], 1);
    assert!(
        tree[1]["reason"].as_str().unwrap().contains(facts.get("restore_point")),
        "{}",
        out.stdout
    );
    assert!(tree.iter().all(|t| t["diverged"] == false), "{}", out.stdout);

    // wal verify: every record of every segment and every index entry checks out, silently.
    let out = fx.run(&["wal", "verify"]);
    out.expect_code(0);
    quiet(&out, "wal verify");
    let n = segments.values().map(Vec::len).sum::<usize>();
    assert!(
        out.stdout.trim_end().ends_with(": ok") && out.stdout.contains(&format!("{n} segment(s)")),
        "{}",
        out.stdout
    );

    // backup list, show, verify: the one backup the release took into this repository.
    let id = facts.get(&format!("backup_{variant}"));
    let out = fx.run(&["backup", "list", "--json"]);
    out.expect_code(0);
    let cat: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let backups = cat["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{}", out.stdout);
    assert_eq!(backups[0]["id"], id, "{}", out.stdout);
    assert_eq!(backups[0]["timeline"], 1, "{}", out.stdout);
    assert!(cat["incomplete"].as_array().unwrap().is_empty(), "{}", out.stdout);
    fx.run(&["backup", "show", id]).expect_code(0);
    let out = fx.run(&["backup", "verify", id]);
    out.expect_code(0);
    quiet(&out, "backup verify");

    // fetch: every file PostgreSQL archived comes back byte for byte; a name never archived is
    // "not found".
    let fetched = fx.world.mkdir("fetched");
    for (name, sum) in &facts.wal {
        let dest = fetched.join(name);
        let out = fx.run(&["fetch", name, dest.to_str().unwrap()]);
        out.expect_code(0);
        quiet(&out, "fetch");
        assert_eq!(&sha256_hex(&std::fs::read(&dest).unwrap()), sum, "fetch {name}");
    }
    let last = segments[&2].last().unwrap();
    let next = format!("{}{:08X}", &last[..16], u32::from_str_radix(&last[16..], 16).unwrap() + 1);
    fx.run(&["fetch", &next, fetched.join("next").to_str().unwrap()]).expect_code(1);

    // push of archived files: the config and the stored objects are read and compared; identical
    // content is exit 0 and changes nothing, different content is refused (6).
    let before = snapshot(&fx.repo);
    for name in [segments[&1][0], last, "00000002.history"] {
        let out = fx.run(&["push", fetched.join(name).to_str().unwrap()]);
        out.expect_code(0);
        assert!(out.stderr.contains("already archived with identical content"), "{}", out.stderr);
    }
    let changed = fx.world.mkdir("changed");
    let mut seg = std::fs::read(fetched.join(last)).unwrap();
    let n = seg.len();
    seg[n - 1] ^= 0x01;
    std::fs::write(changed.join(last), &seg).unwrap();
    fx.run(&["push", changed.join(last).to_str().unwrap()]).expect_code(6);
    let mut history = std::fs::read(fetched.join("00000002.history")).unwrap();
    history.extend_from_slice(b"\n");
    std::fs::write(changed.join("00000002.history"), &history).unwrap();
    fx.run(&["push", changed.join("00000002.history").to_str().unwrap()]).expect_code(6);
    assert!(before == snapshot(&fx.repo), "a push changed the fixture repository");

    // Restores, and PostgreSQL 15 recovering through `walrs fetch`: a point in time on timeline 1,
    // the end of timeline 1 (past the switch point) and the end of timeline 2.
    let sum_query = facts.get("sum_query");
    let got = fx.restore_and_read(
        "r-time-tl1",
        &["--target-timeline", "1", "--target-time", facts.get("target_time_tl1")],
        sum_query,
    );
    assert_eq!(got, facts.get("rows_after_one"), "a time on timeline 1");
    let got = fx.restore_and_read("r-end-tl1", &["--target-timeline", "1"], sum_query);
    assert_eq!(got, facts.get("rows_end_of_tl1"), "the end of timeline 1");
    let got = fx.restore_and_read("r-end", &[], sum_query);
    assert_eq!(got, facts.get("rows_end_of_tl2"), "the end of the archive: timeline 2");
}

#[test]
fn pg15_issue_14_fixture_repository_of_the_previous_release() {
    check_fixture("plain");
}

#[test]
fn pg15_issue_14_fixture_repository_of_the_previous_release_encrypted() {
    check_fixture("encrypted");
}
