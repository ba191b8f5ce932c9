//! MySQL/MariaDB: the client protocol a binlog replica needs.

pub mod wire;
