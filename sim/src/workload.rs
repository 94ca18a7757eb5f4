//! What the clients ask: the reference workload files, or a synthetic mix.
//!
//! The reference files (see `experiments/workloads/SOURCE.md`) are embedded in the binary,
//! so `dht sim` works from any directory; `--workload-dir` reads the same relative paths
//! from a directory instead.
//!
//! Every write carries a value no other write in the run carries, so a checker can tell
//! writes apart:
//! - insert files (`insert/insert_0N_part.txt`, `insert.txt`): the line's 1-based number in
//!   the concatenated insert order (`insert_00` lines are 1–50, `insert_01` 51–100, …;
//!   this is the `n` that `insert.txt` gives);
//! - request files: the file's integer, `#`, and where the line is: `528#03:17` is line 17
//!   of `requests_03.txt`, `501#1` line 1 of `requests.txt`;
//! - synthetic: `v<client>.<n>` for the client's n-th operation.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::Id;

pub use crate::check::OpKind;
use crate::units::{check_probability, ParseError};

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// What it does.
    pub f: OpKind,
    /// The key.
    pub key: String,
    /// The value written (writes only).
    pub value: Option<String>,
}

/// A reference workload, by the name `--workload` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `insert`: client i inserts `insert/insert_0i_part.txt`.
    Insert,
    /// `query`: the `insert` phase, then client i queries `queries/query_0i.txt`.
    Query,
    /// `requests`: client i runs `requests/requests_0i.txt`.
    Requests,
    /// `insert.txt`: the single insert file, lines dealt round-robin to the clients.
    InsertFile,
    /// `query.txt`: the `insert.txt` phase, then the single query file.
    QueryFile,
    /// `requests.txt`: the single requests file.
    RequestsFile,
}

/// How synthetic keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key i (0-based) with probability proportional to `1 / (i + 1)^s`.
    Zipf(f64),
}

impl FromStr for KeyDist {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "uniform" => Ok(KeyDist::Uniform),
            "zipf" => Ok(KeyDist::Zipf(0.99)),
            other => {
                let exponent = other.strip_prefix("zipf:").ok_or_else(|| {
                    ParseError(format!(
                        "key distribution '{other}': use uniform, zipf or zipf:S"
                    ))
                })?;
                let s: f64 = exponent.parse().map_err(|_| {
                    ParseError(format!("zipf exponent '{exponent}' is not a number"))
                })?;
                if !(0.0..=10.0).contains(&s) {
                    return Err(ParseError("zipf exponent must be between 0 and 10".into()));
                }
                Ok(KeyDist::Zipf(s))
            }
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// A synthetic workload: `ops` operations over `keys` keys, spread evenly over the
/// clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Synthetic {
    /// Total operations.
    pub ops: u64,
    /// Distinct keys (`k0`, `k1`, …).
    pub keys: u64,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Fraction of operations that are deletes (the rest are writes).
    pub delete_fraction: f64,
    /// Key popularity.
    pub key_dist: KeyDist,
    /// Every key on one chain (`--one-chain`): the keys are the first `keys` of `k0`,
    /// `k1`, … whose primary in the initial ring is the bootstrap, so they share one
    /// replica set, head and tail, as the objects of a single chain in the chain
    /// replication and CRAQ papers do. Off: keys spread over the whole ring.
    pub one_chain: bool,
    /// With `one_chain`: the clients send to the chain's own nodes (client c to its
    /// (c mod k)-th node, head first), as the CRAQ paper's clients do
    /// (`--clients-on-chain`). Off: client c is on node c mod N and reaches the chain
    /// through the ring's routing.
    pub clients_on_chain: bool,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic {
            ops: 1000,
            keys: 100,
            read_fraction: 0.5,
            delete_fraction: 0.0,
            key_dist: KeyDist::Uniform,
            one_chain: false,
            clients_on_chain: false,
        }
    }
}

/// Which workload the clients run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WorkloadSpec {
    /// One of the reference files.
    Reference(Reference),
    /// A synthetic mix.
    Synthetic(Synthetic),
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec::Reference(Reference::Requests)
    }
}

impl WorkloadSpec {
    /// The name `--workload` takes.
    pub fn name(&self) -> &'static str {
        match self {
            WorkloadSpec::Reference(r) => match r {
                Reference::Insert => "insert",
                Reference::Query => "query",
                Reference::Requests => "requests",
                Reference::InsertFile => "insert.txt",
                Reference::QueryFile => "query.txt",
                Reference::RequestsFile => "requests.txt",
            },
            WorkloadSpec::Synthetic(_) => "synthetic",
        }
    }

    /// Parse a `--workload` name; a synthetic workload gets `synthetic`'s parameters.
    pub fn parse(name: &str, synthetic: Synthetic) -> Result<WorkloadSpec, ParseError> {
        let r = match name.trim() {
            "insert" | "inserts" => Reference::Insert,
            "query" | "queries" => Reference::Query,
            "requests" => Reference::Requests,
            "insert.txt" => Reference::InsertFile,
            "query.txt" => Reference::QueryFile,
            "requests.txt" => Reference::RequestsFile,
            "synthetic" | "uniform" | "zipf" => {
                check_probability(synthetic.read_fraction, "--read-fraction")?;
                check_probability(synthetic.delete_fraction, "--delete-fraction")?;
                if synthetic.read_fraction + synthetic.delete_fraction > 1.0 {
                    return Err(ParseError(
                        "read and delete fractions add up to more than 1".into(),
                    ));
                }
                if synthetic.keys == 0 {
                    return Err(ParseError("--keys must be at least 1".into()));
                }
                if synthetic.keys > KEYS_MAX {
                    return Err(ParseError(format!("--keys must be at most {KEYS_MAX}")));
                }
                return Ok(WorkloadSpec::Synthetic(synthetic));
            }
            other => {
                return Err(ParseError(format!(
                    "workload '{other}' unknown: use insert, query, requests, insert.txt, \
                     query.txt, requests.txt or synthetic"
                )))
            }
        };
        Ok(WorkloadSpec::Reference(r))
    }
}

/// Most synthetic keys (the Zipf table holds one float per key).
pub const KEYS_MAX: u64 = 1 << 24;

/// A workload file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The file could not be read.
    #[error("cannot read workload file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not an operation.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// File (relative to the workload directory).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/workloads/", $path)))),*]
    };
}

/// The reference files, embedded at compile time from `experiments/workloads/`.
pub const EMBEDDED: &[(&str, &str)] = embed![
    "insert/insert_00_part.txt",
    "insert/insert_01_part.txt",
    "insert/insert_02_part.txt",
    "insert/insert_03_part.txt",
    "insert/insert_04_part.txt",
    "insert/insert_05_part.txt",
    "insert/insert_06_part.txt",
    "insert/insert_07_part.txt",
    "insert/insert_08_part.txt",
    "insert/insert_09_part.txt",
    "queries/query_00.txt",
    "queries/query_01.txt",
    "queries/query_02.txt",
    "queries/query_03.txt",
    "queries/query_04.txt",
    "queries/query_05.txt",
    "queries/query_06.txt",
    "queries/query_07.txt",
    "queries/query_08.txt",
    "queries/query_09.txt",
    "requests/requests_00.txt",
    "requests/requests_01.txt",
    "requests/requests_02.txt",
    "requests/requests_03.txt",
    "requests/requests_04.txt",
    "requests/requests_05.txt",
    "requests/requests_06.txt",
    "requests/requests_07.txt",
    "requests/requests_08.txt",
    "requests/requests_09.txt",
    "insert.txt",
    "query.txt",
    "requests.txt",
];

/// The reference workload directory in the source tree (for `--workload-dir` defaults
/// and documentation; the simulator itself uses [`EMBEDDED`]).
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/workloads");

/// Number of per-node files in each reference directory.
const PER_NODE_FILES: usize = 10;

/// Where reference files come from.
#[derive(Clone, Debug)]
pub enum Files<'a> {
    /// The embedded copies.
    Embedded,
    /// A directory with the same layout.
    Dir(&'a Path),
}

impl Files<'_> {
    fn read(&self, rel: &str) -> Result<String, WorkloadError> {
        match self {
            Files::Embedded => Ok(EMBEDDED
                .iter()
                .find(|(p, _)| *p == rel)
                .map(|(_, text)| text.to_string())
                .expect("every reference file is embedded")),
            Files::Dir(dir) => {
                let path = dir.join(rel);
                std::fs::read_to_string(&path)
                    .map_err(|source| WorkloadError::Read { path, source })
            }
        }
    }
}

/// One client's operations in one phase.
#[derive(Clone, Debug)]
pub enum ClientOps {
    /// A fixed list, from files.
    List(VecDeque<Op>),
    /// Drawn on demand (boxed: the generator state is large).
    Synthetic(Box<SyntheticStream>),
}

impl ClientOps {
    /// The next operation, if any remain.
    pub fn next_op(&mut self) -> Option<Op> {
        match self {
            ClientOps::List(ops) => ops.pop_front(),
            ClientOps::Synthetic(s) => s.next_op(),
        }
    }

    /// Operations not yet taken.
    pub fn remaining(&self) -> u64 {
        match self {
            ClientOps::List(ops) => ops.len() as u64,
            ClientOps::Synthetic(s) => s.remaining,
        }
    }

    /// Give up the rest.
    pub fn abandon(&mut self) -> u64 {
        let n = self.remaining();
        match self {
            ClientOps::List(ops) => ops.clear(),
            ClientOps::Synthetic(s) => s.remaining = 0,
        }
        n
    }
}

/// Shared tables of a synthetic workload.
#[derive(Debug)]
struct SyntheticTable {
    spec: Synthetic,
    /// Cumulative Zipf weights (`None` for uniform).
    cdf: Option<Vec<f64>>,
    /// The keys' names by index, when they are not `k{index}` (`Synthetic::one_chain`).
    names: Option<Vec<String>>,
}

/// One client's synthetic operations, drawn from its own stream.
#[derive(Clone, Debug)]
pub struct SyntheticStream {
    table: Arc<SyntheticTable>,
    rng: ChaCha8Rng,
    client: usize,
    issued: u64,
    remaining: u64,
}

impl SyntheticStream {
    fn next_op(&mut self) -> Option<Op> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.issued += 1;
        let spec = &self.table.spec;
        let key_index = match &self.table.cdf {
            None => self.rng.gen_range(0..spec.keys),
            Some(cdf) => {
                let total = *cdf.last().expect("at least one key");
                let u = self.rng.gen::<f64>() * total;
                (cdf.partition_point(|&c| c <= u) as u64).min(spec.keys - 1)
            }
        };
        let key = match &self.table.names {
            Some(names) => names[key_index as usize].clone(),
            None => format!("k{key_index}"),
        };
        let roll: f64 = self.rng.gen();
        let (f, value) = if roll < spec.read_fraction {
            (OpKind::Read, None)
        } else if roll < spec.read_fraction + spec.delete_fraction {
            (OpKind::Delete, None)
        } else {
            (
                OpKind::Write,
                Some(format!("v{}.{}", self.client, self.issued)),
            )
        };
        Some(Op { f, key, value })
    }
}

/// Every client's operations, phase by phase. A client starts phase p + 1 only when every
/// client has finished phase p (the reference query experiment runs after the inserts).
#[derive(Clone, Debug)]
pub struct Workload {
    /// `phases[p][c]`: client c's operations in phase p.
    pub phases: Vec<Vec<ClientOps>>,
}

impl Workload {
    /// Build `spec` for `clients` clients. Synthetic streams derive from `rng`; `ring`
    /// is the initial ring's node ids, bootstrap first (used by [`Synthetic::one_chain`]).
    pub fn build(
        spec: &WorkloadSpec,
        clients: usize,
        files: &Files<'_>,
        rng: &mut ChaCha8Rng,
        ring: &[Id],
    ) -> Result<Workload, WorkloadError> {
        let clients = clients.max(1);
        let phases = match spec {
            WorkloadSpec::Synthetic(s) => vec![synthetic_phase(s, clients, rng, ring)],
            WorkloadSpec::Reference(r) => {
                let insert_files = || -> Result<Vec<Vec<Op>>, WorkloadError> {
                    let mut first_line = 1;
                    (0..PER_NODE_FILES)
                        .map(|i| {
                            let name = format!("insert/insert_{i:02}_part.txt");
                            let ops = parse_insert_file(&name, &files.read(&name)?, first_line)?;
                            first_line += ops.len();
                            Ok(ops)
                        })
                        .collect()
                };
                let per_node = |dir: &str, stem: &str| -> Result<Vec<Vec<Op>>, WorkloadError> {
                    (0..PER_NODE_FILES)
                        .map(|i| {
                            let name = format!("{dir}/{stem}_{i:02}.txt");
                            parse_ops_file(&name, &files.read(&name)?, &format!("{i:02}:"))
                        })
                        .collect()
                };
                let single_insert =
                    || parse_insert_file("insert.txt", &files.read("insert.txt")?, 1);
                let single = |name: &str| parse_ops_file(name, &files.read(name)?, "");
                match r {
                    Reference::Insert => vec![deal_files(insert_files()?, clients)],
                    Reference::Query => vec![
                        deal_files(insert_files()?, clients),
                        deal_files(per_node("queries", "query")?, clients),
                    ],
                    Reference::Requests => {
                        vec![deal_files(per_node("requests", "requests")?, clients)]
                    }
                    Reference::InsertFile => vec![deal_lines(single_insert()?, clients)],
                    Reference::QueryFile => vec![
                        deal_lines(single_insert()?, clients),
                        deal_lines(single("query.txt")?, clients),
                    ],
                    Reference::RequestsFile => vec![deal_lines(single("requests.txt")?, clients)],
                }
            }
        };
        Ok(Workload { phases })
    }

    /// Operations over all phases and clients.
    pub fn total_ops(&self) -> u64 {
        self.phases.iter().flatten().map(ClientOps::remaining).sum()
    }
}

/// The first `count` of `k0`, `k1`, … whose primary (the first node id at or after the
/// key's id, round the ring) is `ring[0]`.
pub fn one_chain_keys(ring: &[Id], count: u64) -> Vec<String> {
    let Some(&head) = ring.first() else {
        return Vec::new();
    };
    let mut ids = ring.to_vec();
    ids.sort();
    let primary = |key: Id| *ids.iter().find(|&&n| n >= key).unwrap_or(&ids[0]);
    (0u64..)
        .map(|j| format!("k{j}"))
        .filter(|name| primary(Id::of_key(name)) == head)
        .take(count as usize)
        .collect()
}

fn synthetic_phase(
    spec: &Synthetic,
    clients: usize,
    rng: &mut ChaCha8Rng,
    ring: &[Id],
) -> Vec<ClientOps> {
    let cdf = match spec.key_dist {
        KeyDist::Uniform => None,
        KeyDist::Zipf(s) => {
            let mut total = 0.0;
            Some(
                (0..spec.keys)
                    .map(|i| {
                        total += 1.0 / ((i + 1) as f64).powf(s);
                        total
                    })
                    .collect(),
            )
        }
    };
    let names = (spec.one_chain && !ring.is_empty()).then(|| one_chain_keys(ring, spec.keys));
    let table = Arc::new(SyntheticTable {
        spec: *spec,
        cdf,
        names,
    });
    let per = spec.ops / clients as u64;
    let extra = spec.ops % clients as u64;
    (0..clients)
        .map(|c| {
            ClientOps::Synthetic(Box::new(SyntheticStream {
                table: table.clone(),
                rng: ChaCha8Rng::seed_from_u64(rng.next_u64()),
                client: c,
                issued: 0,
                remaining: per + u64::from((c as u64) < extra),
            }))
        })
        .collect()
}

/// Per-node files: file i goes to client `i % clients`, appended in file order.
fn deal_files(files: Vec<Vec<Op>>, clients: usize) -> Vec<ClientOps> {
    let mut out = vec![VecDeque::new(); clients];
    for (i, ops) in files.into_iter().enumerate() {
        out[i % clients].extend(ops);
    }
    out.into_iter().map(ClientOps::List).collect()
}

/// A single file: line j goes to client `j % clients`.
fn deal_lines(ops: Vec<Op>, clients: usize) -> Vec<ClientOps> {
    let mut out = vec![VecDeque::new(); clients];
    for (j, op) in ops.into_iter().enumerate() {
        out[j % clients].push_back(op);
    }
    out.into_iter().map(ClientOps::List).collect()
}

/// Non-blank lines with their 1-based numbers, `\r` and surrounding spaces removed.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r').trim()))
        .filter(|(_, l)| !l.is_empty())
}

fn parse_error(file: &str, line: usize, message: impl Into<String>) -> WorkloadError {
    WorkloadError::Parse {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

/// An insert file: a title per line, optionally followed by `, <n>` (`insert.txt`). The
/// value written is the line's number counted from `first_line`.
fn parse_insert_file(file: &str, text: &str, first_line: usize) -> Result<Vec<Op>, WorkloadError> {
    let single = file == "insert.txt";
    lines(text)
        .enumerate()
        .map(|(n, (line, l))| {
            let key = match l.rsplit_once(',') {
                Some((key, number)) if single && number.trim().parse::<u64>().is_ok() => key.trim(),
                _ => l,
            };
            if key.is_empty() {
                return Err(parse_error(file, line, "empty title"));
            }
            Ok(Op {
                f: OpKind::Write,
                key: key.to_string(),
                value: Some((first_line + n).to_string()),
            })
        })
        .collect()
}

/// A query or requests file: `query, <title>`, `insert, <title>, <n>`, `delete, <title>`,
/// or (query files) a bare title. `tag` prefixes the line number in written values.
fn parse_ops_file(file: &str, text: &str, tag: &str) -> Result<Vec<Op>, WorkloadError> {
    let bare_titles = file.contains("query");
    lines(text)
        .map(|(line, l)| {
            let (verb, rest) = match l.split_once(',') {
                Some((verb, rest)) if !bare_titles => {
                    (verb.trim().to_ascii_lowercase(), rest.trim())
                }
                _ if bare_titles => ("query".to_string(), l),
                _ => {
                    return Err(parse_error(
                        file,
                        line,
                        format!("'{l}' is not 'insert, <title>, <value>' or 'query, <title>'"),
                    ))
                }
            };
            let op = match verb.as_str() {
                "query" | "read" => Op {
                    f: OpKind::Read,
                    key: rest.to_string(),
                    value: None,
                },
                "delete" => Op {
                    f: OpKind::Delete,
                    key: rest.to_string(),
                    value: None,
                },
                "insert" | "write" => {
                    let (key, value) = rest.rsplit_once(',').ok_or_else(|| {
                        parse_error(file, line, "insert needs '<title>, <value>'")
                    })?;
                    Op {
                        f: OpKind::Write,
                        key: key.trim().to_string(),
                        value: Some(format!("{}#{tag}{line}", value.trim())),
                    }
                }
                other => {
                    return Err(parse_error(
                        file,
                        line,
                        format!("unknown operation '{other}'"),
                    ))
                }
            };
            if op.key.is_empty() {
                return Err(parse_error(file, line, "empty title"));
            }
            Ok(op)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(spec: WorkloadSpec, clients: usize) -> Workload {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        Workload::build(&spec, clients, &Files::Embedded, &mut rng, &[]).unwrap()
    }

    fn drain(w: &mut Workload) -> Vec<Vec<Op>> {
        w.phases
            .iter_mut()
            .flatten()
            .map(|c| std::iter::from_fn(|| c.next_op()).collect())
            .collect()
    }

    #[test]
    fn every_reference_workload_parses() {
        let all = [
            (Reference::Insert, 500),
            (Reference::Query, 1000),
            (Reference::Requests, 500),
            (Reference::InsertFile, 500),
            (Reference::QueryFile, 1000),
            (Reference::RequestsFile, 500),
        ];
        for (r, n) in all {
            for clients in [1, 3, 10, 17] {
                assert_eq!(
                    build(WorkloadSpec::Reference(r), clients).total_ops(),
                    n,
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn crlf_and_odd_titles_survive() {
        let mut w = build(WorkloadSpec::Reference(Reference::Insert), 10);
        let ops: Vec<Op> = drain(&mut w).into_iter().flatten().collect();
        assert!(ops
            .iter()
            .all(|o| !o.key.contains('\r') && !o.key.ends_with(' ')));
        for c in ['?', '/', '\'', '&', '(', ')'] {
            assert!(ops.iter().any(|o| o.key.contains(c)), "no title with {c}");
        }
    }

    #[test]
    fn written_values_are_unique() {
        for r in [
            Reference::Query,
            Reference::Requests,
            Reference::QueryFile,
            Reference::RequestsFile,
        ] {
            let mut w = build(WorkloadSpec::Reference(r), 4);
            let mut values: Vec<String> = drain(&mut w)
                .into_iter()
                .flatten()
                .filter_map(|o| o.value)
                .collect();
            let n = values.len();
            values.sort();
            values.dedup();
            assert_eq!(values.len(), n, "{r:?}");
        }
    }

    #[test]
    fn per_node_files_follow_their_client() {
        let mut w = build(WorkloadSpec::Reference(Reference::Requests), 10);
        let per_client = drain(&mut w);
        let first = parse_ops_file("requests/requests_03.txt", EMBEDDED[23].1, "03:").unwrap();
        assert_eq!(per_client[3], first);
        let write = per_client[3].iter().find(|o| o.f == OpKind::Write).unwrap();
        assert!(
            write.value.as_deref().unwrap().contains("#03:"),
            "{write:?}"
        );
    }

    #[test]
    fn insert_values_are_line_numbers() {
        let mut a = build(WorkloadSpec::Reference(Reference::Insert), 1);
        let mut b = build(WorkloadSpec::Reference(Reference::InsertFile), 1);
        let a = drain(&mut a).concat();
        let b = drain(&mut b).concat();
        let values = |ops: &[Op]| {
            ops.iter()
                .map(|o| o.value.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(values(&a), values(&b));
        assert_eq!(a[0].value.as_deref(), Some("1"));
        assert_eq!(a[499].value.as_deref(), Some("500"));
    }

    #[test]
    fn synthetic_mix_and_zipf_skew() {
        let spec = Synthetic {
            ops: 10_000,
            keys: 1000,
            read_fraction: 0.5,
            delete_fraction: 0.1,
            key_dist: KeyDist::Zipf(1.0),
            one_chain: false,
            clients_on_chain: false,
        };
        let mut w = build(WorkloadSpec::Synthetic(spec), 3);
        assert_eq!(w.total_ops(), 10_000);
        let ops: Vec<Op> = drain(&mut w).concat();
        let reads = ops.iter().filter(|o| o.f == OpKind::Read).count();
        let deletes = ops.iter().filter(|o| o.f == OpKind::Delete).count();
        assert!((4500..5500).contains(&reads), "{reads}");
        assert!((700..1300).contains(&deletes), "{deletes}");
        let hot = ops.iter().filter(|o| o.key == "k0").count();
        assert!(hot > 800, "k0 drawn {hot} times");
    }

    #[test]
    fn bad_lines_are_reported_with_their_place() {
        let err =
            parse_ops_file("requests/x.txt", "query, a\r\nfrobnicate, b\r\n", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "requests/x.txt:2: unknown operation 'frobnicate'"
        );
    }
}
