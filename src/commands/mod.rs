//! One module per subcommand: its clap `Args` and `run(&Ctx, Args)`. Commands orchestrate; the
//! work lives in the layers below (`archive`, `repo`, ...).

pub mod fetch;
pub mod push;
pub mod timeline;
pub mod wal;
