//! Cluster mode against a real PostgreSQL (started by these tests, one server for the binary;
//! the outage tests start their own): the API tests of `tests/api` re-run with the PostgreSQL
//! key store (and the `keys` CLI tests every store passes, with `--store`), the store's own
//! guarantees across several handles ("nodes") in one process, `store copy` from sled, and
//! real `pyexec serve` nodes sharing one database (one killed under load).

#[path = "../api/errors.rs"]
mod api_errors;
#[path = "../api/execute.rs"]
mod api_execute;
#[path = "../api/observability.rs"]
mod api_observability;
#[path = "../api/usage_history.rs"]
mod api_usage_history;
mod backend;
mod balancer;
mod cli_keys;
mod copy;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod nodes;
mod pg;
#[allow(dead_code)]
#[path = "../cli/server.rs"]
mod server;
mod store;
mod usage;
