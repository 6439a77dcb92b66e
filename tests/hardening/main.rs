//! Hardening, fast tier: adversarial code, abuse of HTTP, accounting and fairness under load,
//! full and read-only disks, and property tests of request decoding and JSON↔Python conversion.
//! Tests marked `#[ignore]` are the long tier (`scripts/long-tier.sh`).

mod adversarial;
#[path = "../api/sled_backend.rs"]
mod backend;
mod disk;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod http;
mod load;
mod properties;
#[allow(dead_code)]
#[path = "../cli/server.rs"]
mod server;
