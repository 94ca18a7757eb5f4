//! A node's data directory: its entries and identity record in an embedded fjall
//! database, written by group commit before the outputs that depend on them go out.
//!
//! fjall (a log-structured merge tree) rather than redb, the engine until December 2026:
//! the node keeps every entry in memory and reads its store only when it starts, so the
//! store's work is almost all writing. A fjall batch is one append to its journal and one
//! `fdatasync`, whatever keys it holds; redb copies on write, per commit, the B-tree page
//! of every key and the pages above it. Measured on the development machine (a 200,000-key
//! store, one commit of 20 keys): 560–620 µs of CPU per redb commit, 220–250 µs per fjall
//! batch, of which about 100 µs is the `fdatasync` itself. fjall 3 specifically: fjall 2
//! ignores a failed journal write inside a batch commit, so a full disk could let a batch
//! whose journal record is torn be acknowledged; fjall 3 returns the error and refuses
//! further writes until the database is opened again (which [`Storage::write`] does).
//! Flushing memtables to sorted tables and compacting them runs on fjall's worker
//! threads, off the commit path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use ringkv_core::{DiskMeta, Entry, Persist, Recovered};

/// Keyspace of the entries: key → MessagePack-encoded [`Entry`].
const ENTRIES: &str = "entries";
/// Keyspace of the identity record: [`META_KEY`] → JSON-encoded [`DiskMeta`].
const META: &str = "meta";
const META_KEY: &[u8] = b"meta";
/// Written when the store is created, before it gets its name: a store without it is
/// damaged (fjall drops a journal it cannot decode as a crash's torn tail, so a store
/// whose only journal was overwritten would otherwise open as an empty one).
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: &[u8] = b"ringkv-fjall-1";

/// Size at which the entries' memtable is sealed and flushed to a table. Recovery replays
/// the journal of what no table holds yet, so this bounds most of a restart's replay.
const MEMTABLE_BYTES: u64 = 8 << 20;

/// The store inside a data directory (a directory: fjall's journal, tables and version).
pub const STORE_DIR: &str = "ringkv.fjall";

/// The store file of ringkv versions that kept their data in redb. This version cannot
/// read it; a data directory holding one is refused rather than silently started empty.
pub const OLD_STORE_FILE: &str = "ringkv.redb";

/// Why a data directory cannot be used, or a write did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The directory cannot be created or the store opened.
    #[error("cannot open the data directory {path}: {source}")]
    Open {
        /// The store.
        path: PathBuf,
        /// Why.
        source: Box<fjall::Error>,
    },
    /// The store is not a ringkv store, or is damaged.
    #[error("the data store {path} is damaged or not a ringkv store: {reason}")]
    Corrupt {
        /// The store.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The directory holds the store of an earlier ringkv version.
    #[error(
        "the data directory holds {path}, the store of an earlier ringkv version (redb), \
         which this version cannot read: start the node with an empty data directory (it \
         fetches its keys from its replicas when it joins), or run the earlier version"
    )]
    OldFormat {
        /// The old store file.
        path: PathBuf,
    },
    /// The directory belongs to another node.
    #[error(
        "the data directory {path} belongs to node {found}, not {expected}: give each node \
         its own data directory"
    )]
    OtherNode {
        /// The store.
        path: PathBuf,
        /// The address it was written by.
        found: String,
        /// This node's address.
        expected: String,
    },
    /// A write failed (disk full, IO error).
    #[error("writing {path} failed: {reason}")]
    Write {
        /// The store.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// An open fjall database and its two keyspaces. Dropping it closes the database (and
/// stops its worker threads) once every handle is gone, which is what a reopen needs.
struct Open {
    db: Database,
    entries: Keyspace,
    meta: Keyspace,
}

/// An open data directory.
pub struct Storage {
    /// `None` after a failed write: fjall refuses every later write once one failed
    /// (it cannot tell what reached the disk), so the next write opens the store again,
    /// which recovers the journal up to its last complete batch.
    db: Mutex<Option<Open>>,
    path: PathBuf,
}

/// How long a write that fails again waits before reporting, so that a full disk costs
/// a retry every so often rather than a busy loop of reopen attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).finish()
    }
}

impl Storage {
    /// Open (or create) the store in `dir` for the node advertised at `addr`, and read
    /// back what it holds. A directory written by another node, or by a ringkv version
    /// that stored its data in redb, is refused.
    pub fn open(dir: &Path, addr: &str) -> Result<(Storage, Recovered), StorageError> {
        let path = dir.join(STORE_DIR);
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: path.clone(),
            source: Box::new(fjall::Error::Io(e)),
        })?;
        let old = dir.join(OLD_STORE_FILE);
        if old.exists() {
            return Err(StorageError::OldFormat { path: old });
        }
        if !path.exists() {
            create(&path)?;
        }
        let open = open_db(&path)?;
        let storage = Storage {
            db: Mutex::new(Some(open)),
            path,
        };
        let recovered = storage.read_all()?;
        if let Some(meta) = &recovered.meta {
            if meta.addr != addr {
                return Err(StorageError::OtherNode {
                    path: storage.path.clone(),
                    found: meta.addr.clone(),
                    expected: addr.to_string(),
                });
            }
        }
        Ok((storage, recovered))
    }

    /// The address of the node whose store `dir` holds, if it holds one with an identity
    /// record (a further position of a process, which listens on any free port, takes
    /// its old address back from it).
    pub fn owner(dir: &Path) -> Result<Option<String>, StorageError> {
        let path = dir.join(STORE_DIR);
        if !path.exists() {
            return Ok(None);
        }
        let storage = Storage {
            db: Mutex::new(Some(open_db(&path)?)),
            path,
        };
        Ok(storage.read_all()?.meta.map(|m| m.addr))
    }

    /// The store (a directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> Result<Recovered, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let guard = self
            .db
            .lock()
            .map_err(|_| corrupt("poisoned lock".into()))?;
        let open = guard
            .as_ref()
            .ok_or_else(|| corrupt("the database is not open".into()))?;
        // A damaged table may make the engine assert rather than fail: an error naming
        // the store, not a crash.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut recovered = Recovered::default();
            let format = open
                .meta
                .get(FORMAT_KEY)
                .map_err(|e| corrupt(e.to_string()))?;
            if format.as_deref() != Some(FORMAT) {
                return Err(corrupt(
                    "its format record is missing (it was damaged, or not written by ringkv)"
                        .into(),
                ));
            }
            if let Some(bytes) = open
                .meta
                .get(META_KEY)
                .map_err(|e| corrupt(e.to_string()))?
            {
                let meta: DiskMeta = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("identity record: {e}")))?;
                recovered.meta = Some(meta);
            }
            for item in open.entries.iter() {
                let (key, value) = item.into_inner().map_err(|e| corrupt(e.to_string()))?;
                let key = String::from_utf8(key.to_vec())
                    .map_err(|e| corrupt(format!("a key that is not UTF-8: {e}")))?;
                let entry: Entry = rmp_serde::from_slice(&value)
                    .map_err(|e| corrupt(format!("entry {key:?}: {e}")))?;
                recovered.entries.push((key, entry));
            }
            Ok(recovered)
        }))
        .unwrap_or_else(|panic| Err(corrupt(panic_reason(panic))))
    }

    /// Make `batch` durable as one fjall batch (one journal append, one `fdatasync`),
    /// as if its persists were applied in order. After a failure the store is opened
    /// again by the next call; a call that fails while the previous one failed too
    /// pauses briefly first.
    pub fn write(&self, batch: &[Persist]) -> Result<(), StorageError> {
        let mut guard = self.db.lock().map_err(|_| StorageError::Write {
            path: self.path.clone(),
            reason: "poisoned lock".into(),
        })?;
        let retrying = guard.is_none();
        let open = match guard.take() {
            Some(open) => open,
            None => match open_db(&self.path) {
                Ok(open) => open,
                Err(err) => {
                    std::thread::sleep(RETRY_PAUSE);
                    return Err(StorageError::Write {
                        path: self.path.clone(),
                        reason: err.to_string(),
                    });
                }
            },
        };
        let written = Self::write_in(&open, &self.path, batch);
        match written {
            Ok(()) => *guard = Some(open),
            Err(_) => {
                drop(open);
                if retrying {
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
        written
    }

    fn write_in(open: &Open, path: &Path, batch: &[Persist]) -> Result<(), StorageError> {
        let fail = |reason: String| StorageError::Write {
            path: path.to_path_buf(),
            reason,
        };
        // fjall gives every item of a batch the same sequence number, so a key written
        // twice in one batch would be ambiguous: keep each key's last change only. A
        // clear drops what came before it in the batch and everything stored.
        let mut cleared = false;
        let mut changes: HashMap<&str, Option<&Entry>> = HashMap::new();
        let mut meta = None;
        for persist in batch {
            if persist.store.cleared {
                cleared = true;
                changes.clear();
            }
            for (key, entry) in &persist.store.changes {
                changes.insert(key.as_str(), entry.as_ref());
            }
            if let Some(m) = &persist.meta {
                meta = Some(m);
            }
        }
        let mut items = open.db.batch().durability(Some(PersistMode::SyncData));
        if cleared {
            // A clear is rare (a node that departs or restarts): one removal per stored
            // key, in the same batch, so that the clear and what follows it are atomic.
            for item in open.entries.iter() {
                let key = item.key().map_err(|e| fail(e.to_string()))?;
                let later = std::str::from_utf8(&key)
                    .ok()
                    .is_some_and(|k| changes.contains_key(k));
                if !later {
                    items.remove(&open.entries, key);
                }
            }
        }
        for (key, entry) in changes {
            match entry {
                Some(entry) => {
                    let bytes = rmp_serde::to_vec(entry).map_err(|e| fail(e.to_string()))?;
                    items.insert(&open.entries, key, bytes);
                }
                None => items.remove(&open.entries, key),
            }
        }
        if let Some(meta) = meta {
            let bytes = serde_json::to_vec(meta).map_err(|e| fail(e.to_string()))?;
            items.insert(&open.meta, META_KEY, bytes);
        }
        // An empty batch writes and syncs nothing: there is nothing to make durable.
        items.commit().map_err(|e| fail(e.to_string()))
    }
}

/// Create an empty store at `path`: under a temporary name, with its format record
/// durable, then renamed into place, so that a crash while creating it leaves no store
/// without one.
fn create(path: &Path) -> Result<(), StorageError> {
    let io = |e: std::io::Error| StorageError::Open {
        path: path.to_path_buf(),
        source: Box::new(fjall::Error::Io(e)),
    };
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = PathBuf::from(fresh);
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io)?;
    }
    {
        let open = open_db(&fresh)?;
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&open.meta, FORMAT_KEY, FORMAT);
        batch.commit().map_err(|e| StorageError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
    }
    std::fs::rename(&fresh, path).map_err(io)?;
    // The rename is durable once the directory holding it is.
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Open (or create) the store and its keyspaces. An engine that asserts on a damaged
/// file instead of returning an error must still give an error naming the store.
fn open_db(path: &Path) -> Result<Open, StorageError> {
    let opened = std::panic::catch_unwind(|| {
        let db = Database::builder(path).open()?;
        let entries = db.keyspace(ENTRIES, || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })?;
        let meta = db.keyspace(META, KeyspaceCreateOptions::default)?;
        Ok::<_, fjall::Error>(Open { db, entries, meta })
    });
    match opened {
        Ok(open) => open.map_err(|e| classify_open(path, e)),
        Err(panic) => Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: panic_reason(panic),
        }),
    }
}

fn panic_reason(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the storage engine could not read it".into())
}

/// An open error as the user should read it: a damaged store, or one that cannot be
/// opened (permissions, another process holds it).
fn classify_open(path: &Path, e: fjall::Error) -> StorageError {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    match e {
        fjall::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotADirectory
            ) =>
        {
            corrupt(io.to_string())
        }
        fjall::Error::Io(_) | fjall::Error::Locked | fjall::Error::Poisoned => StorageError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        },
        other => corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{ClusterConfig, Id, Journal, Version};

    fn entry(value: Option<&str>, counter: u64) -> Entry {
        Entry {
            value: value.map(str::to_string),
            version: Version {
                counter,
                node: Id::ZERO,
            },
        }
    }

    fn meta(addr: &str) -> DiskMeta {
        DiskMeta {
            addr: addr.into(),
            ring_id: 7,
            settings: ClusterConfig::default(),
            members: vec!["127.0.0.1:2".into()],
            epoch: 3,
            whole: true,
            awaited: Vec::new(),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ringkv-storage-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_come_back_in_order_after_reopening() {
        let dir = tempdir("reopen");
        let addr = "127.0.0.1:1";
        {
            let (s, recovered) = Storage::open(&dir, addr).unwrap();
            assert_eq!(recovered, Recovered::default());
            let first = Persist {
                store: Journal {
                    cleared: false,
                    changes: vec![
                        ("a".into(), Some(entry(Some("1"), 1))),
                        ("b".into(), Some(entry(Some("2"), 2))),
                        ("c".into(), Some(entry(None, 3))),
                    ],
                },
                meta: Some(meta(addr)),
            };
            let second = Persist {
                store: Journal {
                    cleared: false,
                    changes: vec![("a".into(), None), ("b".into(), Some(entry(Some("3"), 4)))],
                },
                meta: None,
            };
            s.write(&[first, second]).unwrap();
        }
        let (_, recovered) = Storage::open(&dir, addr).unwrap();
        assert_eq!(recovered.meta, Some(meta(addr)));
        assert_eq!(
            recovered.entries,
            vec![
                ("b".to_string(), entry(Some("3"), 4)),
                ("c".to_string(), entry(None, 3)),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cleared_store_keeps_only_later_writes() {
        let dir = tempdir("clear");
        let (s, _) = Storage::open(&dir, "n").unwrap();
        let put = |k: &str| Persist {
            store: Journal {
                cleared: false,
                changes: vec![(k.into(), Some(entry(Some("v"), 1)))],
            },
            meta: None,
        };
        s.write(&[put("x"), put("y")]).unwrap();
        let clear = Persist {
            store: Journal {
                cleared: true,
                changes: vec![("z".into(), Some(entry(Some("v"), 1)))],
            },
            meta: None,
        };
        s.write(&[clear]).unwrap();
        drop(s);
        let (_, recovered) = Storage::open(&dir, "n").unwrap();
        let keys: Vec<&str> = recovered.entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_without_its_format_record_is_refused() {
        let dir = filled("no-format", 10);
        {
            let open = open_db(&dir.join(STORE_DIR)).unwrap();
            open.meta.remove(FORMAT_KEY).unwrap();
            open.db.persist(PersistMode::SyncData).unwrap();
        }
        let err = Storage::open(&dir, "n").unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(STORE_DIR), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_overwritten_journal_is_an_error_not_an_empty_store() {
        let dir = filled("journal", 100);
        let store = dir.join(STORE_DIR);
        let journals: Vec<PathBuf> = files(&store)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "jnl"))
            .collect();
        assert!(!journals.is_empty());
        for journal in &journals {
            let len = std::fs::metadata(journal).unwrap().len() as usize;
            std::fs::write(journal, vec![0xA5; len.max(64)]).unwrap();
        }
        match Storage::open(&dir, "n") {
            Err(err) => assert!(err.to_string().contains(STORE_DIR), "{err}"),
            // What the engine had already moved from the journal into its tables.
            Ok((_, recovered)) => assert!(recovered.meta.is_some()),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_nodes_directory_is_refused() {
        let dir = tempdir("other");
        let (s, _) = Storage::open(&dir, "127.0.0.1:1").unwrap();
        let persist = Persist {
            store: Journal::default(),
            meta: Some(meta("127.0.0.1:1")),
        };
        s.write(&[persist]).unwrap();
        drop(s);
        let err = Storage::open(&dir, "127.0.0.1:9").unwrap_err();
        assert!(matches!(err, StorageError::OtherNode { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_written_twice_in_one_batch_keeps_its_last_change() {
        let dir = tempdir("twice");
        let (s, _) = Storage::open(&dir, "n").unwrap();
        let change = |k: &str, e: Option<Entry>| Persist {
            store: Journal {
                cleared: false,
                changes: vec![(k.into(), e)],
            },
            meta: None,
        };
        s.write(&[
            change("a", Some(entry(Some("1"), 1))),
            change("b", Some(entry(Some("1"), 1))),
            change("a", None),
            change("b", Some(entry(Some("2"), 2))),
            change("c", None),
            change("c", Some(entry(None, 3))),
        ])
        .unwrap();
        drop(s);
        let (_, recovered) = Storage::open(&dir, "n").unwrap();
        assert_eq!(
            recovered.entries,
            vec![
                ("b".to_string(), entry(Some("2"), 2)),
                ("c".to_string(), entry(None, 3)),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_clear_in_the_middle_of_a_batch_keeps_what_follows_it() {
        let dir = tempdir("clear-mid");
        let (s, _) = Storage::open(&dir, "n").unwrap();
        let put = |k: &str, cleared: bool| Persist {
            store: Journal {
                cleared,
                changes: vec![(k.into(), Some(entry(Some("v"), 1)))],
            },
            meta: None,
        };
        s.write(&[put("old-1", false), put("old-2", false)])
            .unwrap();
        s.write(&[put("x", false), put("old-1", true), put("y", false)])
            .unwrap();
        drop(s);
        let (_, recovered) = Storage::open(&dir, "n").unwrap();
        let keys: Vec<&str> = recovered.entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["old-1", "y"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_of_the_redb_version_is_refused_with_a_clear_error() {
        let dir = tempdir("old-format");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(OLD_STORE_FILE), b"redb").unwrap();
        let err = Storage::open(&dir, "n").unwrap_err();
        assert!(matches!(err, StorageError::OldFormat { .. }), "{err}");
        assert!(err.to_string().contains(OLD_STORE_FILE), "{err}");
        assert!(err.to_string().contains("empty data directory"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store with some entries and an identity record, closed.
    fn filled(name: &str, keys: u64) -> PathBuf {
        let dir = tempdir(name);
        let (s, _) = Storage::open(&dir, "n").unwrap();
        let changes = (0..keys)
            .map(|i| (format!("key-{i}"), Some(entry(Some("value"), i))))
            .collect();
        s.write(&[Persist {
            store: Journal {
                cleared: false,
                changes,
            },
            meta: Some(meta("n")),
        }])
        .unwrap();
        drop(s);
        dir
    }

    /// Every regular file under `dir`.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_damaged_store_is_an_error_naming_it() {
        // Not a store at all: a file where the store's directory belongs.
        let dir = tempdir("garbage");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(STORE_DIR),
            b"not a database at all, just some bytes".repeat(200),
        )
        .unwrap();
        let err = Storage::open(&dir, "n").unwrap_err();
        assert!(err.to_string().contains(STORE_DIR), "garbage: {err}");
        let _ = std::fs::remove_dir_all(&dir);

        // Each file of a real store overwritten with garbage in turn: an error naming the
        // store, or (a journal's damaged tail, which a crash mid-write also leaves) what
        // its intact part holds; never a panic.
        let dir = filled("damaged", 2000);
        for_each_damaged_file(&dir, |file, len| {
            std::fs::write(file, b"garbage!".repeat(len.max(8) as usize / 8)).unwrap();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Copy every file under `from` to the same place under `to`.
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for item in std::fs::read_dir(from).unwrap() {
            let path = item.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy_tree(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }

    /// For each file of the store in `dir` (but its lock): restore the store as it was,
    /// `damage` that file (given its length), and open the store: an error naming it, or
    /// what its intact part holds (a journal's damaged tail, which a crash mid-write also
    /// leaves, is dropped); never a panic. Opening may rewrite the store (fjall replays
    /// and retires journals), hence the fresh copy each time.
    fn for_each_damaged_file(dir: &Path, damage: impl Fn(&Path, u64)) {
        let store = dir.join(STORE_DIR);
        let pristine = dir.with_extension("pristine");
        let _ = std::fs::remove_dir_all(&pristine);
        copy_tree(&store, &pristine);
        let names: Vec<PathBuf> = files(&pristine)
            .into_iter()
            .filter(|f| f.file_name().is_some_and(|n| n != "lock"))
            .map(|f| f.strip_prefix(&pristine).unwrap().to_path_buf())
            .collect();
        assert!(names.len() > 2, "{names:?}");
        for name in names {
            std::fs::remove_dir_all(&store).unwrap();
            copy_tree(&pristine, &store);
            let file = store.join(&name);
            damage(&file, std::fs::metadata(&file).unwrap().len());
            match Storage::open(dir, "n") {
                Err(err) => assert!(
                    err.to_string().contains(STORE_DIR),
                    "{}: {err}",
                    name.display()
                ),
                Ok((_, recovered)) => {
                    assert!(recovered.entries.len() <= 2000, "{}", name.display())
                }
            }
        }
        let _ = std::fs::remove_dir_all(&pristine);
    }

    #[test]
    fn a_truncated_store_is_an_error_or_its_intact_prefix_never_a_panic() {
        let dir = filled("truncated", 2000);
        for_each_damaged_file(&dir, |file, len| {
            let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
            f.set_len(len / 2).unwrap();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
