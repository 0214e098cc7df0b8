//! Benchmarks of pinroute: criterion benches of the pure core
//! (`benches/core.rs`) and the side-by-side load harness.

/// What the pingora floor contenders share (arguments, server, listener).
pub mod floor;
