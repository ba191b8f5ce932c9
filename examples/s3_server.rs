//! The tests' S3-compatible server (s3s-fs, SigV4 checked) as a standalone process, for the
//! benchmarks: `s3_server ROOT PORT`. Credentials and bucket are those of tests/util/s3.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

#[path = "../tests/util/s3.rs"]
mod s3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = std::path::PathBuf::from(args.get(1).expect("usage: s3_server ROOT PORT"));
    let port: u16 = args.get(2).expect("usage: s3_server ROOT PORT").parse().unwrap();
    let server = s3::S3Server::start_in(root, ([127, 0, 0, 1], port).into());
    println!(
        "{} bucket={} access={} secret={}",
        server.endpoint(),
        s3::BUCKET,
        s3::ACCESS_KEY,
        s3::SECRET_KEY
    );
    loop {
        std::thread::park();
    }
}
