//! One module per subcommand: its clap `Args` and `run(&Ctx, Args)`. Commands orchestrate; the
//! work lives in the layers below (`archive`, `repo`, ...).

pub mod backup;
pub mod basebackup;
pub mod binlog;
pub mod expire;
pub mod fetch;
pub mod push;
pub mod repo;
pub mod restore;
pub mod timeline;
pub mod wal;
