//! Runs the swarm simulator's own tests: it lives in `benches/sim`, outside the
//! library, and drives the library's public scheduler and upload policy.

#[allow(dead_code)] // the bench's report uses parts these tests do not
#[path = "../benches/sim/model.rs"]
mod model;
