//! Test-only fault injection: a transport filter that cuts this node off from a set of
//! peers, as a network partition would (loopback has no per-link control).
//!
//! The filter is set through `POST /admin/partition` (see `docs/http-api.md`), which
//! answers only on a node started with [`NodeOptions::allow_fault_injection`] and, when a
//! cluster secret is configured, only to requests that carry it. While an address is
//! blocked the node drops every peer message to it (at its sender, on whatever connection
//! is open, so existing connections stop carrying messages too) and every message from it
//! (on peer connections and on the JSON endpoint), and counts them in
//! `ringkv_messages_dropped_partition_total{direction}`. An empty list heals.
//!
//! [`NodeOptions::allow_fault_injection`]: crate::server::NodeOptions::allow_fault_injection

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The addresses a node is cut off from (empty: none). Shared by the node's HTTP handlers,
/// its inbound connections and its sender tasks.
#[derive(Debug, Default)]
pub struct PeerFilter {
    /// Whether any address is blocked: the common case costs one atomic load.
    active: AtomicBool,
    blocked: RwLock<Arc<BTreeSet<String>>>,
}

impl PeerFilter {
    /// Block exactly `addrs` (`host:port` as the peers advertise themselves); an empty set
    /// heals.
    pub fn set(&self, addrs: BTreeSet<String>) {
        let active = !addrs.is_empty();
        let mut blocked = self.blocked.write().unwrap_or_else(|e| e.into_inner());
        *blocked = Arc::new(addrs);
        self.active.store(active, Ordering::Release);
    }

    /// The blocked addresses.
    pub fn blocked(&self) -> Arc<BTreeSet<String>> {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether messages to and from `addr` are dropped.
    pub fn blocks(&self, addr: &str) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(addr)
    }
}

/// Parse the body of `POST /admin/partition`: `{"block": ["host:port", ...]}`. Each entry
/// must be `host:port` with a port number; duplicates count once.
pub fn parse_block_list(body: &[u8]) -> Result<BTreeSet<String>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        block: Vec<String>,
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        format!("{e}; send a JSON object {{\"block\": [\"host:port\", ...]}} (an empty list heals)")
    })?;
    parsed
        .block
        .into_iter()
        .map(|a| {
            let a = a.trim().to_string();
            match a.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(a),
                _ => Err(format!("'{a}' is not a host:port address")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_blocks_what_it_was_given_until_healed() {
        let f = PeerFilter::default();
        assert!(!f.blocks("127.0.0.1:1"));
        f.set(["127.0.0.1:1".to_string()].into());
        assert!(f.blocks("127.0.0.1:1"));
        assert!(!f.blocks("127.0.0.1:2"));
        f.set(BTreeSet::new());
        assert!(!f.blocks("127.0.0.1:1"));
        assert!(f.blocked().is_empty());
    }

    #[test]
    fn block_lists_are_checked() {
        let ok = parse_block_list(br#"{"block": ["127.0.0.1:5000", "h:1", "h:1"]}"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(parse_block_list(br#"{"block": []}"#).unwrap().is_empty());
        for bad in [
            &br#"{"block": ["nowhere"]}"#[..],
            br#"{"block": [":80"]}"#,
            br#"{"block": ["h:port"]}"#,
            br#"{"block": "h:1"}"#,
            br#"{"blok": []}"#,
            b"not json",
        ] {
            assert!(
                parse_block_list(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
