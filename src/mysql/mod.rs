//! MySQL/MariaDB binlogs: the client protocol a replica needs (`wire`), the event format
//! (`event`, pure), the replication client that streams them from a server (`client`), their
//! layout in a repository (`store`) and the writer of `walrs binlog tail` (`tail`). Nothing here
//! knows PostgreSQL.

pub mod client;
pub mod event;
pub mod store;
pub mod tail;
pub mod wire;
