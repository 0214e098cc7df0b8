//! Benchmarks of pinroute: criterion benches of the pure core
//! (`benches/core.rs`) and the side-by-side load harness.

/// What the pingora floor contenders share (arguments, server, listener).
pub mod floor;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The websocket settings of both ends of workload e (`ws_echo` and
/// `bench_backend`). tungstenite's default 128 KiB read buffer is zeroed on
/// every read attempt (tungstenite 0.26 `FrameCodec::read_in` resizes it to
/// its whole capacity, WouldBlock included): memset was 58 % of the load
/// generator's core, so workload e measured memset rather than the proxy.
/// Its frames are 32 bytes; 4 KiB is plenty.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}
