//! A small pooled keep-alive HTTP/1.1 client, used by the load client, the CLI and the
//! tests (nodes talk to each other over [`crate::peer`] connections instead).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;

/// Characters left as they are in a path segment: RFC 3986 unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode `s` for use as one URL path segment (`/` becomes `%2F`, space `%20`).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Why an HTTP exchange failed before a status arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The URL does not parse.
    #[error("invalid URL '{url}': {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No connection could be made; the request was certainly not delivered.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The exchange broke after the connection was made; the request may have arrived.
    #[error("HTTP exchange with {url} failed: {reason}")]
    Exchange {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer in time; the request may have arrived.
    #[error("no answer from {url} within {timeout_ms} ms")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        timeout_ms: u64,
    },
}

impl ClientError {
    /// Whether the request certainly did not reach the server.
    pub fn not_delivered(&self) -> bool {
        matches!(
            self,
            ClientError::BadUrl { .. } | ClientError::Connect { .. }
        )
    }
}

/// An HTTP answer: status and whole body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl HttpReply {
    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body parsed as a JSON value (`Null` when it is not JSON).
    pub fn value(&self) -> serde_json::Value {
        self.json().unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A cheaply clonable client with one connection pool shared by all clones.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// Sent as `Authorization: Bearer ...` on every request (the cluster secret).
    bearer: Option<std::sync::Arc<str>>,
}

/// Idle keep-alive connections kept per host.
const IDLE_PER_HOST_MAX: usize = 512;

impl HttpClient {
    /// A client whose exchanges give up after `timeout`.
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient::with_connect_timeout(timeout, timeout)
    }

    /// A client whose exchanges give up after `timeout`, and whose connection attempts
    /// after `connect` already (so that a client with other nodes to try does not wait
    /// long for a machine that is off).
    pub fn with_connect_timeout(timeout: Duration, connect: Duration) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect.min(timeout)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(IDLE_PER_HOST_MAX)
            .build(connector);
        HttpClient {
            inner,
            timeout,
            bearer: None,
        }
    }

    /// The same client, sending `secret` as a bearer token on every request.
    pub fn with_bearer(mut self, secret: Option<&str>) -> HttpClient {
        self.bearer = secret.map(std::sync::Arc::from);
        self
    }

    /// Send one request; `body` is sent as `application/json` when given.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<HttpReply, ClientError> {
        let bad_url = |reason: String| ClientError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad_url(e.to_string()))?;
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(secret) = &self.bearer {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| bad_url(e.to_string()))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                let reason = error_chain(&e);
                if e.is_connect() {
                    ClientError::Connect {
                        url: url.to_string(),
                        reason,
                    }
                } else {
                    ClientError::Exchange {
                        url: url.to_string(),
                        reason,
                    }
                }
            })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Exchange {
                    url: url.to_string(),
                    reason: error_chain(&e),
                })?;
            Ok(HttpReply {
                status,
                body: body.to_bytes(),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                url: url.to_string(),
                timeout_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<HttpReply, ClientError> {
        self.send(Method::GET, url, None).await
    }

    /// `POST url` with an optional JSON body.
    pub async fn post(&self, url: &str, body: Option<Bytes>) -> Result<HttpReply, ClientError> {
        self.send(Method::POST, url, body).await
    }

    /// `DELETE url`.
    pub async fn delete(&self, url: &str) -> Result<HttpReply, ClientError> {
        self.send(Method::DELETE, url, None).await
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new(Duration::from_secs(30))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_fully_encoded() {
        assert_eq!(
            encode_segment("Like a Rolling Stone"),
            "Like%20a%20Rolling%20Stone"
        );
        assert_eq!(encode_segment("AC/DC?"), "AC%2FDC%3F");
        assert_eq!(encode_segment("*"), "%2A");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
