//! The codec's CPU ceiling (issue 20): how many segments per second the codec alone, in process,
//! can handle on every core, on the same real segments a drain archives. No files, no fsyncs, no
//! processes: the segments are read into memory first, then `THREADS` threads (default: the
//! cores) take them one after another, `ROUNDS` times over.
//!
//!   cargo bench --bench codec_ceiling -- DIR [DIR...]     (every regular file of 16 MiB in DIR)
//!   THREADS=2 ROUNDS=3 ZSTD_PARAMS="hlog=12;mml=7;hlog=12,mml=7" cargo bench --bench codec_ceiling -- DIR
//!
//! Rows:
//! - `zstd:1` the default codec as walrs calls it: one `zstd::bulk::Compressor` at level 1 per
//!   thread, reused, each 1 MiB frame compressed on its own (as the envelope does);
//! - `envelope` the whole encoder walrs runs per frame (`Encoder::encode_frame`: compression,
//!   CRC-32C of the stored frame, XXH3-128 of the plaintext, framing) and the trailer;
//! - one row per `ZSTD_PARAMS` entry (`;`-separated): level 1 with these advanced parameters set
//!   (`wlog`, `hlog`, `clog`, `slog`, `mml`, `tlen`, `strat` = zstd's names), for the search of
//!   cheaper settings that keep level 1's stored size (issue 20).
//!
//! Printed per row: stored bytes and their ratio to `zstd:1`'s, CPU ms per segment (user + system
//! of the process over the row, from /proc/self/stat, divided by the segments done), wall
//! segments/s with every thread busy. Timing figures, never a pass/fail.

// Benchmarks are edges, like tests: a failed setup may panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use walrs::codec::{Compression, Encoder};
use zstd::zstd_safe::{CParameter, Strategy};

const FRAME: usize = 1 << 20;

/// User + system CPU seconds of this process so far (fields 14 and 15 of /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("/proc/self/stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // CLK_TCK is 100 on every Linux this runs on (the kernel's USER_HZ).
    ticks / 100.0
}

fn param(kv: &str) -> CParameter {
    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ZSTD_PARAMS entry {kv:?}: k=v"));
    let n: u32 = v.parse().unwrap_or_else(|_| panic!("ZSTD_PARAMS {kv:?}: a number"));
    match k {
        "wlog" => CParameter::WindowLog(n),
        "hlog" => CParameter::HashLog(n),
        "clog" => CParameter::ChainLog(n),
        "slog" => CParameter::SearchLog(n),
        "mml" => CParameter::MinMatch(n),
        "tlen" => CParameter::TargetLength(n),
        "strat" => CParameter::Strategy(match n {
            1 => Strategy::ZSTD_fast,
            2 => Strategy::ZSTD_dfast,
            3 => Strategy::ZSTD_greedy,
            _ => panic!("strat 1..3"),
        }),
        _ => panic!("unknown zstd parameter {k:?}"),
    }
}

/// What one thread does with one segment: the stored bytes.
type Work = dyn Fn(&mut State, &[u8]) -> usize + Sync;

struct State {
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

fn run(
    label: &str,
    segs: &[Vec<u8>],
    threads: usize,
    rounds: usize,
    params: &[CParameter],
    work: &Work,
) -> (u64, f64, f64) {
    let total = segs.len() * rounds;
    let next = AtomicUsize::new(0);
    let stored = AtomicUsize::new(0);
    let (c0, w0) = (cpu_seconds(), Instant::now());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut zstd = zstd::bulk::Compressor::new(1).unwrap();
                for p in params {
                    zstd.set_parameter(*p).unwrap();
                }
                let mut st = State { zstd, out: Vec::with_capacity(FRAME + FRAME / 8) };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let n = work(&mut st, &segs[i % segs.len()]);
                    if i < segs.len() {
                        stored.fetch_add(n, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
    let stored = stored.into_inner() as u64;
    println!(
        "{label:<24} {stored:>12} {:>10.1} {:>8.2} {:>10.1}",
        segs.iter().map(Vec::len).sum::<usize>() as f64 / stored as f64,
        1000.0 * cpu / total as f64,
        total as f64 / wall
    );
    (stored, 1000.0 * cpu / total as f64, total as f64 / wall)
}

fn frames_zstd(st: &mut State, seg: &[u8]) -> usize {
    let mut n = 0;
    for f in seg.chunks(FRAME) {
        st.out.clear();
        st.out.reserve(zstd::zstd_safe::compress_bound(f.len()));
        n += st.zstd.compress_to_buffer(f, &mut st.out).unwrap();
    }
    n
}

fn envelope(st: &mut State, seg: &[u8]) -> usize {
    let mut enc = Encoder::new("000000010000000000000001", Compression::Zstd(1), None).unwrap();
    let mut n = enc.header().len();
    for f in seg.chunks(FRAME) {
        st.out.clear();
        enc.encode_frame(f, &mut st.out).unwrap();
        n += st.out.len();
    }
    st.out.clear();
    enc.finish(&mut st.out).unwrap();
    n + st.out.len()
}

fn main() {
    // `cargo bench` passes `--bench`; everything else is a directory.
    let dirs: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let mut segs = Vec::new();
    if dirs.is_empty() {
        // No segments given (`cargo test --benches` runs every bench once): two synthetic 16 MiB
        // buffers of hex text, one round, so the code is exercised; the figures mean nothing.
        eprintln!(
            "codec_ceiling: no DIR given: a smoke run on synthetic data (usage: cargo bench --bench codec_ceiling -- DIR [DIR...], directories of 16 MiB WAL segments)"
        );
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2 {
            let seg: Vec<u8> = (0..16usize << 20)
                .map(|i| {
                    if i % 64 == 0 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    b"0123456789abcdef"[((x >> ((i % 16) * 4)) & 15) as usize]
                })
                .collect();
            segs.push(seg);
        }
    }
    for d in &dirs {
        let mut names: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let m = std::fs::metadata(&p).unwrap();
            if m.is_file() && m.len() == 16 << 20 {
                segs.push(std::fs::read(&p).unwrap());
            }
        }
    }
    assert!(!segs.is_empty(), "no 16 MiB files in {dirs:?}");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: usize =
        std::env::var("THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(cores);
    let default_rounds = if dirs.is_empty() { 1 } else { 3 };
    let rounds: usize =
        std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_rounds);
    println!(
        "# codec ceiling: {} segment(s) from {}, {threads} thread(s), {rounds} round(s), {cores} core(s)",
        segs.len(),
        dirs.join(" ")
    );
    println!(
        "{:<24} {:>12} {:>10} {:>8} {:>10}",
        "codec", "stored B", "ratio x", "CPU ms", "seg/s"
    );
    let (base, _, _) = run("zstd:1", &segs, threads, rounds, &[], &frames_zstd);
    run("envelope (zstd:1)", &segs, threads, rounds, &[], &envelope);
    if let Ok(spec) = std::env::var("ZSTD_PARAMS") {
        for set in spec.split(';').filter(|s| !s.trim().is_empty()) {
            let ps: Vec<CParameter> = set.split(',').map(|kv| param(kv.trim())).collect();
            let (stored, _, _) =
                run(&format!("zstd:1 {set}"), &segs, threads, rounds, &ps, &frames_zstd);
            println!(
                "#   {set}: stored {:+.2} % against zstd:1",
                100.0 * (stored as f64 / base as f64 - 1.0)
            );
        }
    }
}
