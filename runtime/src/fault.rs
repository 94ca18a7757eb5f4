//! Test-only fault injection: a transport filter that cuts this node off from a set of
//! peers, as a network partition would (loopback has no per-link control).
//!
//! The filter is set through `POST /admin/partition` (see `docs/http-api.md`), which
//! answers only on a node started with [`NodeOptions::allow_fault_injection`] and, when a
//! cluster secret is configured, only to requests that carry it. While an address is
//! blocked the node drops every peer message to it (at its sender, on whatever connection
//! is open, so existing connections stop carrying messages too) and every message from it
//! (on peer connections and on the JSON endpoint), and counts them in
//! `ringkv_messages_dropped_partition_total{direction}`; with a [`Direction`] of `send` or
//! `receive` only one of the two (a one-way link failure). An empty list heals.
//!
//! [`NodeOptions::allow_fault_injection`]: crate::server::NodeOptions::allow_fault_injection

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Which messages of a blocked peer's link are dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What this node sends to the peer and what it receives from it.
    #[default]
    Both,
    /// Only what this node sends to the peer (the peer still reaches this node).
    Send,
    /// Only what this node receives from the peer (this node still reaches the peer).
    Receive,
}

/// The addresses a node is cut off from (empty: none), and in which direction. Shared by
/// the node's HTTP handlers, its inbound connections and its sender tasks.
#[derive(Debug, Default)]
pub struct PeerFilter {
    /// Whether any address is blocked: the common case costs one atomic load.
    active: AtomicBool,
    blocked: RwLock<(Arc<BTreeSet<String>>, Direction)>,
}

impl PeerFilter {
    /// Block exactly `addrs` (`host:port` as the peers advertise themselves) in
    /// `direction`; an empty set heals.
    pub fn set_direction(&self, addrs: BTreeSet<String>, direction: Direction) {
        let active = !addrs.is_empty();
        let mut blocked = self.blocked.write().unwrap_or_else(|e| e.into_inner());
        *blocked = (Arc::new(addrs), direction);
        self.active.store(active, Ordering::Release);
    }

    /// The blocked addresses.
    pub fn blocked(&self) -> Arc<BTreeSet<String>> {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The direction the blocked addresses are cut in.
    pub fn direction(&self) -> Direction {
        self.blocked.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Whether messages this node sends to `addr` are dropped.
    pub fn blocks_send(&self, addr: &str) -> bool {
        self.blocks(addr, Direction::Send)
    }

    /// Whether messages this node receives from `addr` are dropped.
    pub fn blocks_receive(&self, addr: &str) -> bool {
        self.blocks(addr, Direction::Receive)
    }

    fn blocks(&self, addr: &str, way: Direction) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        (blocked.1 == Direction::Both || blocked.1 == way) && blocked.0.contains(addr)
    }
}

/// Parse the body of `POST /admin/partition`: `{"block": ["host:port", ...]}`, with an
/// optional `"direction"` (`both`, the default, `send` or `receive`). Each entry must be
/// `host:port` with a port number; duplicates count once.
pub fn parse_block_list(body: &[u8]) -> Result<(BTreeSet<String>, Direction), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        block: Vec<String>,
        #[serde(default)]
        direction: Direction,
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{e}; send a JSON object {{\"block\": [\"host:port\", ...]}} (an empty list heals), \
             with \"direction\": \"send\" or \"receive\" to cut one way only"
        )
    })?;
    let direction = parsed.direction;
    let addrs = parsed
        .block
        .into_iter()
        .map(|a| {
            let a = a.trim().to_string();
            match a.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(a),
                _ => Err(format!("'{a}' is not a host:port address")),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((addrs, direction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_blocks_what_it_was_given_until_healed() {
        let f = PeerFilter::default();
        assert!(!f.blocks_send("127.0.0.1:1"));
        f.set_direction(["127.0.0.1:1".to_string()].into(), Direction::Both);
        assert!(f.blocks_send("127.0.0.1:1"));
        assert!(f.blocks_receive("127.0.0.1:1"));
        assert!(!f.blocks_send("127.0.0.1:2"));
        f.set_direction(BTreeSet::new(), Direction::Both);
        assert!(!f.blocks_send("127.0.0.1:1"));
        assert!(!f.blocks_receive("127.0.0.1:1"));
        assert!(f.blocked().is_empty());
    }

    #[test]
    fn a_one_way_filter_blocks_one_direction() {
        let f = PeerFilter::default();
        let one = || ["127.0.0.1:1".to_string()].into();
        f.set_direction(one(), Direction::Send);
        assert!(f.blocks_send("127.0.0.1:1"));
        assert!(!f.blocks_receive("127.0.0.1:1"));
        assert_eq!(f.direction(), Direction::Send);
        f.set_direction(one(), Direction::Receive);
        assert!(!f.blocks_send("127.0.0.1:1"));
        assert!(f.blocks_receive("127.0.0.1:1"));
    }

    #[test]
    fn block_lists_are_checked() {
        let (ok, direction) =
            parse_block_list(br#"{"block": ["127.0.0.1:5000", "h:1", "h:1"]}"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(direction, Direction::Both);
        assert!(parse_block_list(br#"{"block": []}"#).unwrap().0.is_empty());
        let (_, send) = parse_block_list(br#"{"block": ["h:1"], "direction": "send"}"#).unwrap();
        assert_eq!(send, Direction::Send);
        for bad in [
            &br#"{"block": ["nowhere"]}"#[..],
            br#"{"block": [":80"]}"#,
            br#"{"block": ["h:port"]}"#,
            br#"{"block": "h:1"}"#,
            br#"{"blok": []}"#,
            br#"{"block": ["h:1"], "direction": "sideways"}"#,
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
