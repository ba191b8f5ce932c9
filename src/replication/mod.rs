//! PostgreSQL's replication commands, on the shared client of `pgwire/`: a physical replication
//! connection ([`ReplConn`]), `IDENTIFY_SYSTEM`, and the `BASE_BACKUP` stream as events
//! (`basebackup.rs`). Connection settings, authentication, TLS and the message framing are
//! `pgwire`'s; what is specific to replication is here.

pub mod basebackup;

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::pg::{Lsn, SystemId, TimeLineId};
use crate::pgwire::{Conn, Startup, proto_err};

pub use crate::pgwire::{ConnParams, Message, error_text, parse_data_row};

/// The result of `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug)]
pub struct SystemInfo {
    /// The cluster's system identifier.
    pub system_id: SystemId,
    /// Its current timeline.
    pub timeline: TimeLineId,
    /// Its current WAL write position.
    pub xlogpos: Lsn,
}

/// A connection to a server for the work of a base backup: a physical replication connection
/// ([`ReplConn::connect`]), or an ordinary one for the SQL replication connections cannot run
/// ([`ReplConn::connect_sql`]). Everything of [`Conn`] is available on it.
pub struct ReplConn(Conn);

impl std::ops::Deref for ReplConn {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl std::ops::DerefMut for ReplConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

impl ReplConn {
    /// Connects as a physical replication client and authenticates. `io_timeout` bounds every
    /// socket read and write; `deadline` bounds the whole connection's life.
    pub fn connect(p: &ConnParams, io_timeout: Duration, deadline: Instant) -> Result<Self> {
        Conn::connect(p, Startup::Replication, io_timeout, deadline).map(ReplConn)
    }

    /// Connects as an ordinary client (no `replication` parameter) to `dbname`, or `postgres`
    /// when none is set, for the SQL a physical replication connection cannot run (views such
    /// as `pg_stat_archiver`). Same parameters, authentication and timeouts as [`Self::connect`].
    pub fn connect_sql(p: &ConnParams, io_timeout: Duration, deadline: Instant) -> Result<Self> {
        Conn::connect(p, Startup::Database, io_timeout, deadline).map(ReplConn)
    }

    /// `UPLOAD_MANIFEST` (PostgreSQL 17+): sends the parent's backup manifest, read from
    /// `manifest`, as COPY data; a following `BASE_BACKUP ... INCREMENTAL` on this connection
    /// is taken against it. A failure to read `manifest` is sent as CopyFail.
    pub fn upload_manifest(&mut self, manifest: &mut dyn std::io::Read) -> Result<()> {
        self.copy_in("UPLOAD_MANIFEST", manifest).map(|_| ())
    }

    /// `IDENTIFY_SYSTEM`.
    pub fn identify_system(&mut self) -> Result<SystemInfo> {
        let rows = self.simple_query("IDENTIFY_SYSTEM")?;
        let r = rows.first().ok_or_else(|| proto_err("IDENTIFY_SYSTEM returned no row"))?;
        let col = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let system_id =
            col(0).parse::<u64>().map(SystemId).map_err(|_| proto_err("bad systemid"))?;
        let timeline = col(1)
            .parse::<u32>()
            .ok()
            .and_then(|t| TimeLineId::new(t).ok())
            .ok_or_else(|| proto_err("bad timeline"))?;
        let xlogpos: Lsn = col(2).parse().map_err(|_| proto_err("bad xlogpos"))?;
        Ok(SystemInfo { system_id, timeline, xlogpos })
    }
}
