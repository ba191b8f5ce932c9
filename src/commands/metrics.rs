//! `walrs metrics [--textfile PATH | --listen ADDR]`: the repository's status
//! ([`crate::status`]) in the Prometheus text exposition format, printed, written atomically for
//! node_exporter's textfile collector, or served on `/metrics` over HTTP. Nothing here runs on
//! the hot path: `push` and `fetch` write nothing for the metrics. See
//! docs/commands/metrics.md.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{Ctx, Outcome, Text};
use crate::durable;
use crate::error::{Kind, Result, WalrsError};
use crate::repo::Repository;
use crate::status::{self, metrics};

/// The examples of `walrs metrics --help`.
pub const EXAMPLES: &str = super::with_env_note!(
    "Examples:
  # print the metrics once
  WALRS_REPO=/srv/walrs walrs metrics

  # for node_exporter's textfile collector, from a timer every minute
  WALRS_REPO=/srv/walrs walrs metrics --textfile /var/lib/node_exporter/textfile/walrs.prom

  # serve /metrics for Prometheus to scrape (runs until stopped)
  WALRS_REPO=/srv/walrs walrs metrics --listen 127.0.0.1:9187"
);

/// Arguments of `walrs metrics`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write the metrics to this file atomically (temporary file beside it, fsync, rename), for
    /// node_exporter's textfile collector (name it `*.prom`).
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub textfile: Option<PathBuf>,
    /// Serve the metrics over HTTP on this address (`GET /metrics`), collecting them afresh for
    /// each request; runs until stopped. Plain HTTP: keep it on 127.0.0.1 or a private network.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// The metrics of `repo` now.
fn collect(repo: &Repository) -> Result<String> {
    Ok(metrics::render(&status::gather(repo, SystemTime::now())?))
}

/// Writes `text` to `path` atomically ([`durable::write_file_readable`]: a temporary file beside
/// it, mode 0644 since node_exporter runs as its own user, fsync, rename, fsync of the directory).
/// A reader sees the old file or the new one, never a part.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    durable::check_destination(path)?;
    durable::write_file_readable(path, text.as_bytes())
}

/// Serves `/metrics` on `addr` until the process is stopped (or the deadline, if one was
/// asked for, passes: the watchdog ends the process).
fn serve(repo: &Repository, addr: &str) -> Result<()> {
    let server = tiny_http::Server::http(addr).map_err(|e| {
        WalrsError::new(Kind::Config, format!("cannot listen on {addr}: {e}"))
            .hint("give --listen HOST:PORT with a free port, e.g. 127.0.0.1:9187")
    })?;
    let shown =
        server.server_addr().to_ip().map(|a| a.to_string()).unwrap_or_else(|| addr.to_owned());
    tracing::info!("serving metrics of {} on http://{shown}/metrics", repo.describe());
    let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok();
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or_default().to_owned();
        let response = match (request.method(), path.as_str()) {
            (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
                let started = Instant::now();
                match collect(repo) {
                    Ok(text) => {
                        tracing::debug!(
                            "metrics collected in {:.1} ms",
                            started.elapsed().as_secs_f64() * 1e3
                        );
                        let mut r = tiny_http::Response::from_string(text);
                        if let Some(h) = header("Content-Type", metrics::CONTENT_TYPE) {
                            r = r.with_header(h);
                        }
                        r
                    }
                    Err(e) => {
                        tracing::error!("collecting the metrics failed: {e}");
                        tiny_http::Response::from_string(format!("walrs: {e}\n"))
                            .with_status_code(503)
                    }
                }
            }
            (_, "/metrics") => tiny_http::Response::from_string("only GET\n").with_status_code(405),
            _ => tiny_http::Response::from_string("walrs serves /metrics only\n")
                .with_status_code(404),
        };
        if let Err(e) = request.respond(response) {
            tracing::debug!("answering a metrics request: {e}");
        }
    }
    Ok(())
}

/// Runs the command.
pub fn run(ctx: &Ctx, args: Args) -> Result<Outcome> {
    if let Some(path) = &args.textfile {
        // A destination walrs may not write is refused before the repository is read.
        durable::check_destination(path)?;
    }
    let repo = ctx.open_repo()?;
    if let Some(addr) = &args.listen {
        serve(&repo, addr)?;
        return Ok(Outcome::done());
    }
    let text = collect(&repo)?;
    match &args.textfile {
        Some(path) => {
            write_textfile(path, &text)?;
            Ok(Outcome::done())
        }
        None => {
            let mut out = Text::new();
            crate::textln!(out, "{}", text.trim_end());
            Ok(Outcome::text(out))
        }
    }
}
