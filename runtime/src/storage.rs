//! A node's data directory: its entries and identity record in an embedded redb
//! database, written by group commit before the outputs that depend on them go out.
//!
//! redb over fjall: a single-file B-tree with ACID transactions and a checksummed
//! commit (copy-on-write pages, so a torn write leaves the previous commit), no
//! background compaction threads to tune, and one `fsync` per transaction, which is
//! the unit the actor's group commit batches writes into.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use ringkv_core::{DiskMeta, Entry, Persist, Recovered};

/// Key → MessagePack-encoded [`Entry`].
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// `"meta"` → JSON-encoded [`DiskMeta`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";

/// The database file inside a data directory.
pub const DB_FILE: &str = "ringkv.redb";

/// Why a data directory cannot be used, or a write did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The directory cannot be created or the file opened.
    #[error("cannot open the data directory {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::Error>,
    },
    /// The file is not a ringkv database, or is damaged.
    #[error("the data file {path} is damaged or not a ringkv store: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The directory belongs to another node.
    #[error(
        "the data directory {path} belongs to node {found}, not {expected}: give each node \
         its own data directory"
    )]
    OtherNode {
        /// The file.
        path: PathBuf,
        /// The address it was written by.
        found: String,
        /// This node's address.
        expected: String,
    },
    /// A write failed (disk full, IO error).
    #[error("writing {path} failed: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// An open data directory.
pub struct Storage {
    /// `None` after a failed write: redb refuses every later transaction once one hit an
    /// IO error, so the next write reopens the file (its last commit is intact).
    db: Mutex<Option<Database>>,
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
    /// back what it holds. A directory written by another node is refused.
    pub fn open(dir: &Path, addr: &str) -> Result<(Storage, Recovered), StorageError> {
        let path = dir.join(DB_FILE);
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: path.clone(),
            source: Box::new(redb::Error::Io(e)),
        })?;
        let db = open_db(&path)?;
        let storage = Storage {
            db: Mutex::new(Some(db)),
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

    /// The database file.
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
        let db = guard
            .as_ref()
            .ok_or_else(|| corrupt("the database is not open".into()))?;
        let txn = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
        let mut recovered = Recovered::default();
        match txn.open_table(META) {
            Ok(table) => {
                if let Some(bytes) = table.get(META_KEY).map_err(|e| corrupt(e.to_string()))? {
                    let meta: DiskMeta = serde_json::from_slice(bytes.value())
                        .map_err(|e| corrupt(format!("identity record: {e}")))?;
                    recovered.meta = Some(meta);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(corrupt(e.to_string())),
        }
        match txn.open_table(ENTRIES) {
            Ok(table) => {
                for item in table.iter().map_err(|e| corrupt(e.to_string()))? {
                    let (key, value) = item.map_err(|e| corrupt(e.to_string()))?;
                    let entry: Entry = rmp_serde::from_slice(value.value())
                        .map_err(|e| corrupt(format!("entry {:?}: {e}", key.value())))?;
                    recovered.entries.push((key.value().to_string(), entry));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(corrupt(e.to_string())),
        }
        Ok(recovered)
    }

    /// Make `batch` durable in one transaction (one `fsync`), in order. After a failure
    /// the file is reopened by the next call; a call that fails while the previous one
    /// failed too pauses briefly first.
    pub fn write(&self, batch: &[Persist]) -> Result<(), StorageError> {
        let mut guard = self.db.lock().map_err(|_| StorageError::Write {
            path: self.path.clone(),
            reason: "poisoned lock".into(),
        })?;
        let retrying = guard.is_none();
        let db = match guard.take() {
            Some(db) => db,
            None => match open_db(&self.path) {
                Ok(db) => db,
                Err(err) => {
                    std::thread::sleep(RETRY_PAUSE);
                    return Err(StorageError::Write {
                        path: self.path.clone(),
                        reason: err.to_string(),
                    });
                }
            },
        };
        let written = Self::write_in(&db, &self.path, batch);
        match written {
            Ok(()) => *guard = Some(db),
            Err(_) => {
                drop(db);
                if retrying {
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
        written
    }

    fn write_in(db: &Database, path: &Path, batch: &[Persist]) -> Result<(), StorageError> {
        let fail = |reason: String| StorageError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| fail(e.to_string()))?;
            let mut meta_table = txn.open_table(META).map_err(|e| fail(e.to_string()))?;
            for persist in batch {
                if persist.store.cleared {
                    entries
                        .retain(|_, _| false)
                        .map_err(|e| fail(e.to_string()))?;
                }
                for (key, entry) in &persist.store.changes {
                    match entry {
                        Some(entry) => {
                            let bytes =
                                rmp_serde::to_vec(entry).map_err(|e| fail(e.to_string()))?;
                            entries
                                .insert(key.as_str(), bytes.as_slice())
                                .map_err(|e| fail(e.to_string()))?;
                        }
                        None => {
                            entries
                                .remove(key.as_str())
                                .map_err(|e| fail(e.to_string()))?;
                        }
                    }
                }
                if let Some(meta) = &persist.meta {
                    let bytes = serde_json::to_vec(meta).map_err(|e| fail(e.to_string()))?;
                    meta_table
                        .insert(META_KEY, bytes.as_slice())
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
        }
        txn.commit().map_err(|e| fail(e.to_string()))
    }
}

/// Open (or create) the database file. redb asserts on some damaged files (a truncated
/// one) instead of returning an error: a damaged data directory must be an error naming
/// the file, not a crash.
fn open_db(path: &Path) -> Result<Database, StorageError> {
    match std::panic::catch_unwind(|| Database::create(path)) {
        Ok(db) => db.map_err(|e| classify_open(path, e.into())),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the storage engine could not read it".into());
            Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })
        }
    }
}

/// An open error as the user should read it: a damaged file, or one that cannot be
/// opened (permissions, another process holds it).
fn classify_open(path: &Path, e: redb::Error) -> StorageError {
    match e {
        redb::Error::Corrupted(reason) => StorageError::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StorageError::Corrupt {
                path: path.to_path_buf(),
                reason: io.to_string(),
            }
        }
        other => StorageError::Open {
            path: path.to_path_buf(),
            source: Box::new(other),
        },
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
    fn a_damaged_file_is_an_error_naming_it() {
        for (name, damage) in [
            (
                "garbage",
                b"not a database at all, just some bytes".repeat(200),
            ),
            ("empty-ish", vec![0u8; 5]),
        ] {
            let dir = tempdir(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(DB_FILE), &damage).unwrap();
            let err = Storage::open(&dir, "n").unwrap_err();
            assert!(err.to_string().contains(DB_FILE), "{name}: {err}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_truncated_file_is_an_error_or_the_last_commit_never_a_panic() {
        let dir = tempdir("truncated");
        {
            let (s, _) = Storage::open(&dir, "n").unwrap();
            let changes = (0..2000)
                .map(|i| (format!("key-{i}"), Some(entry(Some("value"), i))))
                .collect();
            let persist = Persist {
                store: Journal {
                    cleared: false,
                    changes,
                },
                meta: None,
            };
            s.write(&[persist]).unwrap();
        }
        let file = dir.join(DB_FILE);
        let len = std::fs::metadata(&file).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        match Storage::open(&dir, "n") {
            Err(err) => assert!(err.to_string().contains(DB_FILE), "{err}"),
            Ok((_, recovered)) => assert!(recovered.entries.len() <= 2000),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
