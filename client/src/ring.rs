//! The ring as a client sees it: its members, read from any node.

use ringkv_runtime::{ClientError, HttpClient};

/// Why the ring's members could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// No HTTP answer.
    #[error(transparent)]
    Transport(#[from] ClientError),
    /// An answer other than 200.
    #[error("GET /overlay: status {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

/// The ring's members in ring order from the bootstrap, as `host:port`, asked of the node
/// at `addr` (`GET /overlay`). A 200 answer without a list reads as an empty ring.
pub async fn overlay(http: &HttpClient, addr: &str) -> Result<Vec<String>, OverlayError> {
    let reply = http.get(&format!("http://{addr}/overlay")).await?;
    if reply.status != 200 {
        return Err(OverlayError::Status {
            status: reply.status,
            body: reply.text(),
        });
    }
    Ok(reply.value()["overlay"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
