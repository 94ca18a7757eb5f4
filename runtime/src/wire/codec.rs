//! A hand-written layout for the messages every client operation sends: lookups, chain
//! writes, client answers, tail reads, replica writes and their acknowledgements, CRAQ's
//! clean notices.
//!
//! serde's MessagePack decoder spent about 5,000 instructions on each of these envelopes
//! (a visitor per struct, per field and per enum, with the checks of a self-describing
//! format, and a SHA-1 for every node reference); read field by field from a cursor, with
//! node ids remembered per connection, a chain write costs about 2,000, most of it the
//! strings it carries (`experiments/instructions.sh`). An envelope in
//! this layout travels as one MessagePack `bin 32` value, so a frame stays a sequence of
//! MessagePack values and the reader tells the two apart by the first byte:
//!
//! ```text
//! envelope = 0xc6 len:u32 from:str process:opt<str> kind:u8 fields
//! str      = len:varint utf-8 bytes        varint = LEB128 u64, at most 10 bytes
//! opt<T>   = 0 | 1 T                       bool   = 0 | 1
//! node     = addr:str process:opt<str>     (its id, SHA-1 of addr, is computed here)
//! origin   = node req:varint incarnation:varint
//! version  = counter:varint id:[u8; 20]    entry  = value:opt<str> version
//! ```
//!
//! and per kind the message's fields in the order [`Message`] declares them. Anything else
//! (another message, an answer that is not one of the four client operations get) goes in
//! serde's form ([`super::form`]). Every field is named in the conversions, with no `..`:
//! a field added to one of these messages in the core fails to compile here until it is
//! carried too. Decoding checks every length against the bytes left, rejects trailing
//! bytes, and checks a chain step as serde's form does.

use ringkv_core::message::{Action, Origin, Routed};
use ringkv_core::{ChainStep, Entry, Envelope, Id, Message, NodeRef, Reply, Response, Version};

/// MessagePack's `bin 32` marker, which opens an envelope in this layout.
pub(super) const MARKER: u8 = 0xc6;

/// Bytes of the marker and its length.
const HEADER_BYTES: usize = 5;

const ROUTE: u8 = 1;
const CHAIN_WRITE: u8 = 2;
const DONE: u8 = 3;
const TAIL_READ: u8 = 4;
const REPLICATE: u8 = 5;
const REPLICATE_ACK: u8 = 6;
const CRAQ_CLEAN: u8 = 7;

const ACTION_WRITE: u8 = 0;
const ACTION_READ: u8 = 1;
const ACTION_REPAIR: u8 = 2;

const INSERTED: u8 = 0;
const FOUND: u8 = 1;
const NOT_FOUND: u8 = 2;
const DELETED: u8 = 3;

/// Append `envelope` to `out` in this layout; `false` (and nothing written) if its message
/// does not go in it.
pub(super) fn encode(envelope: &Envelope, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.extend_from_slice(&[MARKER, 0, 0, 0, 0]);
    let mut w = Writer(out);
    w.node(&envelope.from);
    if !w.message(&envelope.msg) {
        // Not one of these messages: what was written of it goes.
        out.truncate(start);
        return false;
    }
    let body = out.len() - start - HEADER_BYTES;
    // An envelope above u32::MAX bytes cannot be framed anyway (the frame limit is far
    // below); the caller leaves out any above its limit.
    let len = u32::try_from(body).unwrap_or(u32::MAX);
    out[start + 1..start + HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
    true
}

impl Writer<'_> {
    /// `msg`'s kind and fields; `false` if it does not go in this layout.
    fn message(&mut self, msg: &Message) -> bool {
        let w = self;
        match msg {
            Message::Route(Routed {
                origin,
                key,
                action,
                hops,
                laps,
                redriven,
            }) => {
                w.u8(ROUTE);
                w.opt(origin.as_ref(), Writer::origin);
                w.str(key);
                match action {
                    Action::Write { value } => {
                        w.u8(ACTION_WRITE);
                        w.opt(value.as_deref(), Writer::str);
                    }
                    Action::Read => w.u8(ACTION_READ),
                    Action::Repair { entry, ttl } => {
                        w.u8(ACTION_REPAIR);
                        w.entry(entry);
                        w.u8(*ttl);
                    }
                }
                w.varint(u64::from(*hops));
                w.varint(u64::from(*laps));
                w.bool(*redriven);
            }
            Message::ChainWrite(ChainStep {
                origin,
                key,
                entry,
                existed,
                position,
                chain_len,
                hops,
                ttl,
            }) => {
                w.u8(CHAIN_WRITE);
                w.opt(origin.as_ref(), Writer::origin);
                w.str(key);
                w.entry(entry);
                w.bool(*existed);
                w.u8(*position);
                w.u8(*chain_len);
                w.varint(u64::from(*hops));
                w.u8(*ttl);
            }
            Message::Done { req, reply } => {
                w.u8(DONE);
                w.varint(*req);
                return w.reply(reply);
            }
            Message::TailRead { origin, key, hops } => {
                w.u8(TAIL_READ);
                w.origin(origin);
                w.str(key);
                w.varint(u64::from(*hops));
            }
            Message::Replicate {
                entries,
                ttl,
                seq,
                epoch,
            } => {
                w.u8(REPLICATE);
                w.varint(entries.len() as u64);
                for (key, entry) in entries {
                    w.str(key);
                    w.entry(entry);
                }
                w.u8(*ttl);
                w.varint(*seq);
                w.varint(*epoch);
            }
            Message::ReplicateAck { seqs } => {
                w.u8(REPLICATE_ACK);
                w.varint(seqs.len() as u64);
                for seq in seqs {
                    w.varint(*seq);
                }
            }
            Message::CraqClean { key, version } => {
                w.u8(CRAQ_CLEAN);
                w.str(key);
                w.opt(version.as_ref(), Writer::version);
            }
            _ => return false,
        }
        true
    }
}

/// The envelope in `bytes` (a whole `bin 32` value, marker included), its sender and the
/// nodes it names looked up in (or added to) `nodes`.
pub(super) fn decode(bytes: &[u8], nodes: &mut Nodes) -> Result<Envelope, String> {
    let body = bytes
        .get(HEADER_BYTES..)
        .ok_or_else(|| "a truncated envelope".to_string())?;
    let mut r = Reader { bytes: body, nodes };
    let from = r.node()?;
    let msg = match r.u8()? {
        ROUTE => {
            let origin = r.opt(Reader::origin)?;
            let key = r.string()?;
            let action = match r.u8()? {
                ACTION_WRITE => Action::Write {
                    value: r.opt(Reader::string)?,
                },
                ACTION_READ => Action::Read,
                ACTION_REPAIR => Action::Repair {
                    entry: r.entry()?,
                    ttl: r.u8()?,
                },
                other => return Err(format!("unknown action {other}")),
            };
            Message::Route(Routed {
                origin,
                key,
                action,
                hops: r.u32()?,
                laps: r.u32()?,
                redriven: r.bool()?,
            })
        }
        CHAIN_WRITE => {
            let step = ChainStep {
                origin: r.opt(Reader::origin)?,
                key: r.string()?,
                entry: r.entry()?,
                existed: r.bool()?,
                position: r.u8()?,
                chain_len: r.u8()?,
                hops: r.u32()?,
                ttl: r.u8()?,
            };
            step.check()?;
            Message::ChainWrite(step)
        }
        DONE => Message::Done {
            req: r.varint()?,
            reply: r.reply()?,
        },
        TAIL_READ => Message::TailRead {
            origin: r.origin()?,
            key: r.string()?,
            hops: r.u32()?,
        },
        REPLICATE => Message::Replicate {
            entries: r.list(|r| Ok((r.string()?, r.entry()?)))?,
            ttl: r.u8()?,
            seq: r.varint()?,
            epoch: r.varint()?,
        },
        REPLICATE_ACK => Message::ReplicateAck {
            seqs: r.list(Reader::varint)?,
        },
        CRAQ_CLEAN => Message::CraqClean {
            key: r.string()?,
            version: r.opt(Reader::version)?,
        },
        other => return Err(format!("unknown message kind {other}")),
    };
    if !r.bytes.is_empty() {
        return Err(format!("{} bytes after an envelope", r.bytes.len()));
    }
    Ok(Envelope { from, msg })
}

/// Nodes named on one connection (the sender, the origins of the requests it passes on),
/// so that each one's id (SHA-1 of its address) is computed once rather than once per
/// envelope.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    known: Vec<NodeRef>,
    /// The entry the next new node replaces once `known` is full.
    next: usize,
}

/// Nodes a connection remembers: a ring's nodes are few, and a node forgotten only costs
/// a hash.
const NODES_KNOWN_MAX: usize = 64;

impl Nodes {
    /// The node at `addr`, a position of the process `process` (when not its own).
    pub(super) fn node(&mut self, addr: &str, process: Option<&str>) -> NodeRef {
        let found = self
            .known
            .iter()
            .find(|n| *n.addr == *addr && n.process.as_deref() == process);
        if let Some(node) = found {
            return node.clone();
        }
        let node = match process {
            Some(process) => NodeRef::of_process(addr, process),
            None => NodeRef::new(addr),
        };
        if self.known.len() < NODES_KNOWN_MAX {
            self.known.push(node.clone());
        } else {
            self.known[self.next] = node.clone();
            self.next = (self.next + 1) % NODES_KNOWN_MAX;
        }
        node
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt<T: ?Sized>(&mut self, v: Option<&T>, write: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                write(self, v);
            }
        }
    }

    fn node(&mut self, node: &NodeRef) {
        self.str(&node.addr);
        self.opt(node.process.as_deref(), Writer::str);
    }

    fn origin(&mut self, origin: &Origin) {
        let Origin {
            node,
            req,
            incarnation,
        } = origin;
        self.node(node);
        self.varint(*req);
        self.varint(*incarnation);
    }

    fn version(&mut self, version: &Version) {
        let Version { counter, node } = version;
        self.varint(*counter);
        self.0.extend_from_slice(&node.to_bytes());
    }

    fn entry(&mut self, entry: &Entry) {
        let Entry { value, version } = entry;
        self.opt(value.as_deref(), Writer::str);
        self.version(version);
    }

    /// One of the four answers client operations get; `false` for any other.
    fn reply(&mut self, reply: &Reply) -> bool {
        match reply {
            Ok(Response::Inserted {
                key,
                value,
                node,
                hops,
            }) => {
                self.u8(INSERTED);
                self.str(key);
                self.str(value);
                self.str(node);
                self.varint(u64::from(*hops));
            }
            Ok(Response::Found {
                key,
                value,
                node,
                hops,
            }) => {
                self.u8(FOUND);
                self.str(key);
                self.str(value);
                self.str(node);
                self.varint(u64::from(*hops));
            }
            Ok(Response::NotFound { key, node, hops }) => {
                self.u8(NOT_FOUND);
                self.str(key);
                self.str(node);
                self.varint(u64::from(*hops));
            }
            Ok(Response::Deleted {
                key,
                existed,
                node,
                hops,
            }) => {
                self.u8(DELETED);
                self.str(key);
                self.bool(*existed);
                self.str(node);
                self.varint(u64::from(*hops));
            }
            _ => return false,
        }
        true
    }
}

struct Reader<'a, 'n> {
    bytes: &'a [u8],
    nodes: &'n mut Nodes,
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err("a truncated envelope".to_string());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{other} is not a boolean")),
        }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("a varint above 64 bits".to_string());
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint above 64 bits".to_string())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| format!("{v} is above 32 bits"))
    }

    /// A count of items, each at least one byte long.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len())
            .ok_or_else(|| format!("a count of {n} with {} bytes left", self.bytes.len()))
    }

    /// A count, then that many items, each read by `item`. Every item takes at least a
    /// byte, so a count above the bytes left is refused before anything is allocated.
    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let count = self.count()?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = self.count()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("a string that is not UTF-8: {e}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.str().map(str::to_string)
    }

    fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(format!("{other} is not an option tag")),
        }
    }

    fn node(&mut self) -> Result<NodeRef, String> {
        let addr = self.str()?;
        let process = self.opt(Reader::str)?;
        Ok(self.nodes.node(addr, process))
    }

    fn origin(&mut self) -> Result<Origin, String> {
        Ok(Origin {
            node: self.node()?,
            req: self.varint()?,
            incarnation: self.varint()?,
        })
    }

    fn version(&mut self) -> Result<Version, String> {
        let counter = self.varint()?;
        let mut raw = [0u8; 20];
        raw.copy_from_slice(self.take(20)?);
        Ok(Version {
            counter,
            node: Id::from_bytes(raw),
        })
    }

    fn entry(&mut self) -> Result<Entry, String> {
        Ok(Entry {
            value: self.opt(Reader::string)?,
            version: self.version()?,
        })
    }

    fn reply(&mut self) -> Result<Reply, String> {
        let response = match self.u8()? {
            INSERTED => Response::Inserted {
                key: self.string()?,
                value: self.string()?,
                node: self.string()?,
                hops: self.u32()?,
            },
            FOUND => Response::Found {
                key: self.string()?,
                value: self.string()?,
                node: self.string()?,
                hops: self.u32()?,
            },
            NOT_FOUND => Response::NotFound {
                key: self.string()?,
                node: self.string()?,
                hops: self.u32()?,
            },
            DELETED => Response::Deleted {
                key: self.string()?,
                existed: self.bool()?,
                node: self.string()?,
                hops: self.u32()?,
            },
            other => return Err(format!("unknown answer kind {other}")),
        };
        Ok(Ok(response))
    }
}
