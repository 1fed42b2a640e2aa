//! Streams spread over replicas: every replica reads the same camera list and runs only the
//! streams whose id hashes to it, by rendezvous (highest random weight) hashing. A stream's
//! owner is the replica with the highest weight `w(ordinal, id)`; going from N to N+1 replicas
//! moves exactly the streams whose new weight beats every old one (about 1/(N+1) of them), all
//! to the new replica, and nothing else moves.
//!
//! The weight is the first 8 bytes (big-endian) of SHA-256 over `vigil-hrw-v1`, a zero byte,
//! the ordinal as 4 big-endian bytes and the id's UTF-8 bytes: stable across processes,
//! machines, versions and architectures (Rust's own `HashMap` hasher is randomly keyed per
//! process, so it would put a stream on different replicas on each start). Changing this
//! function moves streams, so it is versioned in its key.

use sha2::{Digest, Sha256};

/// Most replicas one camera list is spread over.
pub const MAX_REPLICAS: u32 = 1024;

/// Why this process cannot tell which replica it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("must be 1..={MAX_REPLICAS}, got {0}")]
    Replicas(u32),
    #[error("{ordinal} is not below cluster.replicas ({replicas}): ordinals count from 0")]
    OrdinalRange { ordinal: u32, replicas: u32 },
    #[error(
        "cannot be derived from the host name {0:?} (a StatefulSet pod is named like `vigil-3`): \
         set `cluster.ordinal`"
    )]
    NoOrdinal(String),
}

/// The rendezvous weight of replica `ordinal` for stream `id`.
pub fn weight(ordinal: u32, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"vigil-hrw-v1\0");
    h.update(ordinal.to_be_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// The replica (`0..replicas`) that runs stream `id`. Ties (a 2^-64 chance) go to the lower
/// ordinal.
pub fn owner(id: &str, replicas: u32) -> u32 {
    (0..replicas.max(1))
        .max_by_key(|&o| (weight(o, id), std::cmp::Reverse(o)))
        .unwrap_or(0)
}

/// The number after the last `-` of a host name: `vigil-3` is 3, `vigil-3.vigil.ns.svc` is 3.
pub fn ordinal_from_hostname(host: &str) -> Option<u32> {
    let first = host.split('.').next().unwrap_or(host);
    let (_, n) = first.rsplit_once('-')?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// This machine's host name: `HOSTNAME` when set (Kubernetes sets it to the pod name), else
/// the system's.
pub fn hostname() -> Option<String> {
    if let Some(h) = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
        return Some(h);
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

/// The config's `cluster` section (`config::ClusterConfig`), as plain values: this module sits
/// below `config`, which validates with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    pub replicas: u32,
    pub ordinal: Option<u32>,
}

/// Which replica this process is, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub replicas: u32,
    pub ordinal: u32,
}

impl Shard {
    /// One replica running everything.
    pub fn single() -> Shard {
        Shard {
            replicas: 1,
            ordinal: 0,
        }
    }

    /// From `cluster.replicas` and `cluster.ordinal`, the ordinal defaulting from `host`.
    pub fn resolve(c: Cluster, host: Option<&str>) -> Result<Shard, ClusterError> {
        if !(1..=MAX_REPLICAS).contains(&c.replicas) {
            return Err(ClusterError::Replicas(c.replicas));
        }
        let ordinal = match (c.ordinal, c.replicas) {
            (Some(o), _) => o,
            (None, 1) => 0,
            (None, _) => {
                let host = host.unwrap_or("");
                ordinal_from_hostname(host).ok_or_else(|| ClusterError::NoOrdinal(host.into()))?
            }
        };
        if ordinal >= c.replicas {
            return Err(ClusterError::OrdinalRange {
                ordinal,
                replicas: c.replicas,
            });
        }
        Ok(Shard {
            replicas: c.replicas,
            ordinal,
        })
    }

    /// From `cluster.replicas` and `cluster.ordinal` and this machine's host name.
    pub fn from_config(c: Cluster) -> Result<Shard, ClusterError> {
        let host = if c.ordinal.is_none() && c.replicas > 1 {
            hostname()
        } else {
            None
        };
        Shard::resolve(c, host.as_deref())
    }

    /// The replica that runs `id`.
    pub fn owner(&self, id: &str) -> u32 {
        owner(id, self.replicas)
    }

    /// Whether this replica runs `id`.
    pub fn runs(&self, id: &str) -> bool {
        self.replicas <= 1 || self.owner(id) == self.ordinal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cam-{i:05}")).collect()
    }

    #[test]
    fn going_from_3_to_4_replicas_moves_about_a_quarter_all_to_the_new_one() {
        let ids = ids(10_000);
        let mut moved = 0;
        for id in &ids {
            let (before, after) = (owner(id, 3), owner(id, 4));
            if before != after {
                moved += 1;
                assert_eq!(
                    after, 3,
                    "{id} moved from {before} to {after}, not to the new one"
                );
            }
        }
        // 1/4 of 10 000 is 2500; the binomial standard deviation is about 43.
        assert!((2300..=2700).contains(&moved), "{moved} of 10000 moved");
        // And the load is even: each of 4 replicas holds about 2500.
        let mut load = [0usize; 4];
        for id in &ids {
            load[owner(id, 4) as usize] += 1;
        }
        assert!(load.iter().all(|&n| (2300..=2700).contains(&n)), "{load:?}");
    }

    #[test]
    fn twelve_streams_over_three_replicas_run_each_on_exactly_one() {
        let ids = ids(12);
        let shards: Vec<Shard> = (0..3)
            .map(|o| {
                Shard::resolve(
                    Cluster {
                        replicas: 3,
                        ordinal: Some(o),
                    },
                    None,
                )
                .unwrap()
            })
            .collect();
        for id in &ids {
            let runners: Vec<u32> = shards
                .iter()
                .filter(|s| s.runs(id))
                .map(|s| s.ordinal)
                .collect();
            assert_eq!(runners.len(), 1, "{id} runs on {runners:?}");
            assert_eq!(runners[0], owner(id, 3));
        }
    }

    #[test]
    fn the_weight_is_stable_across_builds() {
        // Pinned: a change here moves every camera of every deployment.
        assert_eq!(owner("lobby", 3), owner("lobby", 3));
        let w = weight(0, "lobby");
        let mut h = Sha256::new();
        h.update(b"vigil-hrw-v1\0\0\0\0\0lobby");
        assert_eq!(w.to_be_bytes(), h.finalize()[..8]);
    }

    #[test]
    fn the_ordinal_comes_from_a_statefulset_host_name_or_is_a_clear_error() {
        assert_eq!(ordinal_from_hostname("vigil-3"), Some(3));
        assert_eq!(
            ordinal_from_hostname("vigil-edge-12.vigil.default.svc"),
            Some(12)
        );
        assert_eq!(ordinal_from_hostname("vigil"), None);
        assert_eq!(ordinal_from_hostname("vigil-"), None);
        assert_eq!(ordinal_from_hostname("vigil-3a"), None);
        let c = |replicas, ordinal| Cluster { replicas, ordinal };
        assert_eq!(
            Shard::resolve(c(4, None), Some("vigil-3")),
            Ok(Shard {
                replicas: 4,
                ordinal: 3
            })
        );
        let e = Shard::resolve(c(4, None), Some("laptop")).unwrap_err();
        assert!(e.to_string().contains("\"laptop\""), "{e}");
        assert!(e.to_string().contains("cluster.ordinal"), "{e}");
        assert_eq!(
            Shard::resolve(c(4, None), Some("vigil-4")),
            Err(ClusterError::OrdinalRange {
                ordinal: 4,
                replicas: 4
            })
        );
        assert_eq!(
            Shard::resolve(c(1, None), Some("laptop")),
            Ok(Shard::single())
        );
        assert_eq!(
            Shard::resolve(c(0, None), None),
            Err(ClusterError::Replicas(0))
        );
    }
}
