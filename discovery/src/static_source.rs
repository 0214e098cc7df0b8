//! Static backends: the config's list, each always Ready as far as the
//! source knows (health checks and operator drain overlay that).

use pinroute_config::StaticBackend;

use crate::backend::{DiscoveredBackend, Lifecycle};

/// The discovered form of a static list; identity = the name as written.
pub fn static_backends(list: &[StaticBackend]) -> Vec<DiscoveredBackend> {
    list.iter()
        .map(|b| DiscoveredBackend {
            identity: b.name.as_str().into(),
            id: b.name.as_str().into(),
            addr: b.addr,
            lifecycle: Lifecycle::Ready,
        })
        .collect()
}
