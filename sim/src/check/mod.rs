//! Consistency checking of client histories: linearizability and staleness.
//!
//! A history is a JSON Lines file of invoke/completion events (format in
//! `docs/history.md`; [`HistoryEvent`] is one line, [`write_event`] writes one).
//! [`History::parse`] validates it; [`check_linearizability`] decides, key by key, whether
//! the operations can be ordered as on a single register (initially absent) consistently
//! with their real-time order, using Wing & Gong's search with Lowe's memoization;
//! [`staleness`] measures how stale reads were, for eventual consistency.
//!
//! ```
//! use ringkv_sim::check::{check_linearizability, staleness, CheckOptions, History, Verdict};
//!
//! let text = r#"
//! {"process": 1, "type": "invoke", "f": "write", "key": "k", "value": "v1", "time": 10}
//! {"process": 1, "type": "ok", "f": "write", "key": "k", "value": "v1", "time": 20}
//! {"process": 2, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 30}
//! {"process": 2, "type": "ok", "f": "read", "key": "k", "value": null, "time": 40}
//! "#;
//! let history = History::parse(text.as_bytes()).unwrap();
//! let report = check_linearizability(&history, &CheckOptions::default());
//! assert_eq!(report.verdict, Verdict::Violation);
//! let cx = report.counterexamples().next().unwrap();
//! assert_eq!(cx.ops.len(), 2);
//! println!("{}", cx.explanation);
//! assert_eq!(staleness(&history).total.stale_reads, 1);
//! ```

pub mod counterexample;
pub mod history;
pub mod linearizability;
pub mod report;
mod search;
pub mod staleness;
pub mod synth;

pub use counterexample::{Counterexample, TimelineOp};
pub use history::{
    write_event, EventPos, EventType, History, HistoryError, HistoryEvent, OpKind, OpStatus,
    Operation,
};
pub use linearizability::{
    check_key, check_linearizability, CheckOptions, KeyResult, KeyVerdict, LinReport, Verdict,
};
pub use report::render_html;
pub use staleness::{staleness, StaleStats, StalenessReport};
pub use synth::{synthetic_history, SynthOptions};
