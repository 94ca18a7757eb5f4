//! The rings a client remembers between runs: their members, `k` and consistency model,
//! in a small JSON file (`$XDG_CACHE_HOME/ringkv/members.json`, else
//! `~/.cache/ringkv/members.json`).
//!
//! A one-shot command (`dht insert`, ...) lives for one request, so it would otherwise
//! learn nothing: with the file it can send a request straight to the key's head, and
//! reach the ring through another member when the node it was pointed at is down. The
//! file is a cache: a missing, unreadable or corrupt file reads as empty, and it is
//! written atomically (a temporary file renamed over it), so concurrent clients never
//! see half of one. It holds at most [`RINGS_MAX`] rings, the most recently learned
//! first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ringkv_core::Consistency;
use serde::{Deserialize, Serialize};

use crate::ring::{RingMap, MEMBERS_MAX};

/// Rings remembered at most; the least recently learned is forgotten first.
pub const RINGS_MAX: usize = 8;

/// A larger file is not read (it is not one this code wrote).
pub const FILE_BYTES_MAX: u64 = 1 << 20;

/// The file's name inside the cache directory.
pub const FILE_NAME: &str = "members.json";

/// Entry nodes remembered per ring at most.
pub const ENTRIES_MAX: usize = 16;

/// Version of the file's layout; a file of another version reads as empty.
const LAYOUT_VERSION: u32 = 1;

/// A ring as remembered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRing {
    /// Members in overlay order, `host:port`.
    pub members: Vec<String>,
    /// Replication factor.
    pub k: usize,
    /// Consistency model.
    pub consistency: Consistency,
    /// When it was learned, seconds since the Unix epoch.
    pub learned_at_s: u64,
    /// Nodes a client was pointed at that led to this ring, members or not any more (a
    /// client pointed at a node that has left still finds the ring), at most
    /// [`ENTRIES_MAX`], the latest first.
    #[serde(default)]
    pub entries: Vec<String>,
}

impl KnownRing {
    /// The ring `map` describes, learned now.
    pub fn of(map: &RingMap) -> KnownRing {
        KnownRing {
            members: map.members().to_vec(),
            k: map.k(),
            consistency: map.consistency(),
            learned_at_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            entries: Vec::new(),
        }
    }

    /// The same ring, reached through `entries` too.
    pub fn through(mut self, entries: &[String]) -> KnownRing {
        self.add_entries(entries);
        self
    }

    fn add_entries(&mut self, entries: &[String]) {
        let mut all: Vec<String> = entries.to_vec();
        for old in self.entries.drain(..) {
            if !all.contains(&old) {
                all.push(old);
            }
        }
        all.truncate(ENTRIES_MAX);
        self.entries = all;
    }

    /// The ring as a map, every member taken as available.
    pub fn map(&self) -> RingMap {
        RingMap::new(self.members.clone(), self.k, self.consistency)
    }

    /// Whether `node` is a member, or led to the ring before.
    pub fn has(&self, node: &str) -> bool {
        self.members.iter().chain(&self.entries).any(|m| m == node)
    }

    fn is_plausible(&self) -> bool {
        let addr_ok = |m: &String| {
            !m.is_empty() && m.len() <= 300 && m.contains(':') && !m.contains(['/', ' ', '?', '#'])
        };
        self.k >= 1
            && !self.members.is_empty()
            && self.members.len() <= MEMBERS_MAX
            && self.entries.len() <= ENTRIES_MAX
            && self.members.iter().chain(&self.entries).all(addr_ok)
    }
}

#[derive(Serialize, Deserialize)]
struct Layout {
    version: u32,
    rings: Vec<KnownRing>,
}

/// The remembered rings, and the file they came from.
#[derive(Clone, Debug, Default)]
pub struct MemberCache {
    path: Option<PathBuf>,
    rings: Vec<KnownRing>,
}

impl MemberCache {
    /// `$XDG_CACHE_HOME/ringkv/members.json`, else `$HOME/.cache/ringkv/members.json`;
    /// `None` when neither variable is set (absolute paths only, as the XDG spec asks).
    pub fn default_path() -> Option<PathBuf> {
        let var = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let dir = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
        Some(dir.join("ringkv").join(FILE_NAME))
    }

    /// The rings remembered in the file at `path` (none without a path, or when the file
    /// is missing, too large or not one this code wrote).
    pub fn open(path: Option<PathBuf>) -> MemberCache {
        let rings = path.as_deref().map(read_rings).unwrap_or_default();
        MemberCache { path, rings }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The remembered rings, most recently learned first.
    pub fn rings(&self) -> &[KnownRing] {
        &self.rings
    }

    /// The most recently learned ring that has any of `nodes` as a member.
    pub fn ring_with(&self, nodes: &[String]) -> Option<&KnownRing> {
        self.rings.iter().find(|r| nodes.iter().any(|n| r.has(n)))
    }

    /// Remember `ring` first, in place of the rings that share a member or an entry node
    /// with it (older pictures of the same ring, whose entry nodes it takes over), and
    /// forget the oldest beyond [`RINGS_MAX`].
    pub fn remember(&mut self, mut ring: KnownRing) {
        let (same, others): (Vec<KnownRing>, Vec<KnownRing>) = std::mem::take(&mut self.rings)
            .into_iter()
            .partition(|old| old.members.iter().chain(&old.entries).any(|m| ring.has(m)));
        for entry in same.into_iter().flat_map(|old| old.entries) {
            if !ring.entries.contains(&entry) {
                ring.entries.push(entry);
            }
        }
        ring.entries.truncate(ENTRIES_MAX);
        self.rings = others;
        self.rings.insert(0, ring);
        self.rings.truncate(RINGS_MAX);
    }

    /// Write the file atomically: a temporary file in the same directory, renamed over
    /// it. Does nothing without a path.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let layout = Layout {
            version: LAYOUT_VERSION,
            rings: self.rings.clone(),
        };
        let text = serde_json::to_vec_pretty(&layout).map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

fn read_rings(path: &Path) -> Vec<KnownRing> {
    let too_large = std::fs::metadata(path).map_or(true, |m| m.len() > FILE_BYTES_MAX);
    if too_large {
        return Vec::new();
    }
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    match serde_json::from_slice::<Layout>(&bytes) {
        Ok(layout) if layout.version == LAYOUT_VERSION => {
            let mut rings: Vec<KnownRing> = layout
                .rings
                .into_iter()
                .filter(KnownRing::is_plausible)
                .collect();
            rings.truncate(RINGS_MAX);
            rings
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ports: &[u16]) -> KnownRing {
        KnownRing {
            members: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            k: 3,
            consistency: Consistency::Chain,
            learned_at_s: 1,
            entries: Vec::new(),
        }
    }

    #[test]
    fn a_ring_is_still_found_through_an_entry_node_that_left_it() {
        let mut cache = MemberCache::default();
        let gone = "127.0.0.1:5002".to_string();
        cache.remember(ring(&[5000, 5001, 5002]).through(std::slice::from_ref(&gone)));
        cache.remember(ring(&[5000, 5001]).through(&["127.0.0.1:5000".into()]));
        assert_eq!(cache.rings().len(), 1);
        let found = cache
            .ring_with(std::slice::from_ref(&gone))
            .expect("found through its old member");
        assert_eq!(found.members.len(), 2);
        assert_eq!(found.entries, ["127.0.0.1:5000".to_string(), gone]);
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringkv-cache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("ringkv").join(FILE_NAME)
    }

    #[test]
    fn rings_survive_a_save_and_newer_pictures_replace_older_ones() {
        let path = temp_file("round-trip");
        let mut cache = MemberCache::open(Some(path.clone()));
        assert!(cache.rings().is_empty(), "no file yet");
        cache.remember(ring(&[5000, 5001]));
        cache.remember(ring(&[6000]));
        cache.remember(ring(&[5001, 5002]));
        cache.save().unwrap();
        let back = MemberCache::open(Some(path.clone()));
        assert_eq!(back.rings(), &[ring(&[5001, 5002]), ring(&[6000])]);
        let asked = vec!["127.0.0.1:5002".to_string()];
        assert_eq!(back.ring_with(&asked), Some(&ring(&[5001, 5002])));
        assert_eq!(back.ring_with(&["127.0.0.1:7000".to_string()]), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_corrupt_or_foreign_file_reads_as_empty() {
        let path = temp_file("corrupt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for text in [
            "{not json",
            r#"{"version": 99, "rings": []}"#,
            r#"{"version": 1, "rings": [{"members": ["a/b:1"], "k": 3, "consistency": "chain", "learned_at_s": 0}]}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            assert!(
                MemberCache::open(Some(path.clone())).rings().is_empty(),
                "{text}"
            );
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn at_most_rings_max_are_kept() {
        let mut cache = MemberCache::default();
        for port in 0..(RINGS_MAX as u16 + 3) {
            cache.remember(ring(&[port + 1]));
        }
        assert_eq!(cache.rings().len(), RINGS_MAX);
        assert_eq!(cache.rings()[0], ring(&[RINGS_MAX as u16 + 3]));
    }
}
