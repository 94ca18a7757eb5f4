//! The reference workload files, per node, with each operation's place in its file.
//!
//! Parsing is `ringkv_sim::workload`'s (the same loader `dht sim` uses, with the files
//! embedded from `experiments/workloads/`), so the real and simulated runs send exactly
//! the same operations with exactly the same values:
//!
//! - `insert/insert_0N_part.txt` lines carry keys only; the value written is the line's
//!   number in the concatenated insert order (`insert_00` is 1–50, `insert_01` 51–100, …),
//!   unique per insert;
//! - `requests/requests_0N.txt` writes `<int>#<NN>:<line>` (`528#03:17` is line 17 of
//!   `requests_03.txt`): the file's integer, made unique so the checker can tell writes
//!   apart. Re-inserting a key replaces its value (the reference adds the integers).

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_sim::workload::{Files, Op, Workload, WorkloadError};
use ringkv_sim::{Reference, WorkloadSpec};

/// Number of per-node files (and of nodes and clients in the reference experiments).
pub const FILES: usize = 10;

/// One operation and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Per-node file index (`NN` in `requests_NN.txt`).
    pub file: usize,
    /// 1-based line in that file (the files have no blank lines).
    pub line: usize,
    /// The operation.
    pub op: Op,
}

/// A reference workload's phases, each a list of per-node files of operations:
/// `phases[p][n]` is file `n` of phase `p`. `insert` and `requests` have one phase,
/// `query` two (the inserts, then the queries).
pub fn per_node_files(
    reference: Reference,
    dir: Option<&Path>,
) -> Result<Vec<Vec<Vec<Planned>>>, WorkloadError> {
    let files = match dir {
        Some(d) => Files::Dir(d),
        None => Files::Embedded,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut workload = Workload::build(
        &WorkloadSpec::Reference(reference),
        FILES,
        &files,
        &mut rng,
        &[],
    )?;
    Ok(workload
        .phases
        .iter_mut()
        .map(|phase| {
            phase
                .iter_mut()
                .enumerate()
                .map(|(file, ops)| {
                    std::iter::from_fn(|| ops.next_op())
                        .enumerate()
                        .map(|(i, op)| Planned {
                            file,
                            line: i + 1,
                            op,
                        })
                        .collect()
                })
                .collect()
        })
        .collect())
}

/// The phase of `reference` that the experiment times: the inserts of `insert`, the
/// queries of `query` (after its insert phase), the requests of `requests`.
pub fn timed_phase(
    reference: Reference,
    dir: Option<&Path>,
) -> Result<Vec<Vec<Planned>>, WorkloadError> {
    let mut phases = per_node_files(reference, dir)?;
    Ok(phases.pop().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_sim::check::OpKind;

    #[test]
    fn files_keep_their_lines_and_unique_values() {
        let inserts = timed_phase(Reference::Insert, None).unwrap();
        assert_eq!(inserts.len(), FILES);
        assert!(inserts.iter().all(|f| f.len() == 50));
        assert_eq!(inserts[1][0].op.value.as_deref(), Some("51"));
        assert!(inserts.iter().flatten().any(|p| p.op.key.contains('/')));
        let requests = timed_phase(Reference::Requests, None).unwrap();
        let p = &requests[0][1];
        assert_eq!((p.file, p.line, p.op.f), (0, 2, OpKind::Write));
        assert_eq!(p.op.value.as_deref(), Some("528#00:2"));
        let phases = per_node_files(Reference::Query, None).unwrap();
        assert_eq!(phases.len(), 2);
        assert!(phases[1].iter().flatten().all(|p| p.op.f == OpKind::Read));
    }
}
