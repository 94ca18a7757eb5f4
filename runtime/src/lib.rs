//! ringkv nodes on tokio timers and axum HTTP.
