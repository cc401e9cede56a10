//! [`IdMap`]: one line of a user-namespace id mapping, shared by the sandbox (which writes
//! the maps) and the layer writer (which maps host owners in an upper directory back to the
//! ids the container saw).

use serde::{Deserialize, Serialize};

/// `container_id host_id size`, as in `/proc/PID/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdMap {
    /// The identity mapping of every id (running as real root).
    pub const IDENTITY: IdMap = IdMap {
        container: 0,
        host: 0,
        size: u32::MAX,
    };
}

/// Maps a host id to the container id under `maps`; ids outside every range become the
/// overflow id 65534, as the kernel shows them.
pub fn host_to_container(maps: &[IdMap], host: u32) -> u32 {
    maps.iter()
        .find(|m| host >= m.host && (host - m.host) < m.size)
        .map(|m| m.container + (host - m.host))
        .unwrap_or(65534)
}

/// Maps a container id to the host id under `maps`, if it is mapped.
pub fn container_to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container && (id - m.container) < m.size)
        .map(|m| m.host + (id - m.container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_maps_round_trip() {
        let maps = [
            IdMap {
                container: 0,
                host: 1000,
                size: 1,
            },
            IdMap {
                container: 1,
                host: 100000,
                size: 65536,
            },
        ];
        assert_eq!(host_to_container(&maps, 1000), 0);
        assert_eq!(host_to_container(&maps, 100000), 1);
        assert_eq!(host_to_container(&maps, 100999), 1000);
        assert_eq!(host_to_container(&maps, 5), 65534);
        assert_eq!(container_to_host(&maps, 1000), Some(100999));
        assert_eq!(container_to_host(&maps, 70000), None);
        assert_eq!(host_to_container(&[IdMap::IDENTITY], 42), 42);
    }
}
