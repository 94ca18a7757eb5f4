//! `dht insert`, `dht query`, `dht delete`, `dht overlay`, `dht join` and `dht depart`:
//! one request, its JSON answer on stdout. Also the small blocking client that `dht shell`
//! uses for the same requests.
//!
//! `insert`, `query` and `delete` go straight to the node that serves the key (token
//! routing, `--routing token`, the default) when the ring is known: remembered in the
//! member cache (`ringkv_client::member_cache`) or learned first. Every command but `join`
//! and `depart` falls back to the other nodes given (`--node A,B,...`) and the remembered
//! members when a node does not answer (see [`crate::reach`]).
//!
//! Exit codes of the one-shot commands (see `docs/cli.md`):
//!
//! | code | when |
//! | --- | --- |
//! | 0 | the node answered 2xx |
//! | 1 | the node answered with an error: 404 (key not found) or any other 4xx/5xx |
//! | 2 | usage error (bad arguments, malformed `--node`) |
//! | 3 | the node could not be reached (refused, timed out, connection broken) |

use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use ringkv_client::{ClientRouting, LearnError, MemberCache, RingMap};
use ringkv_runtime::{encode_segment, ClientError, HttpClient, HttpReply};
use serde_json::{json, Value};

use crate::reach::{Aim, Reach, Reached};

/// Node used when neither `--node` nor `DHT_NODE` is given.
pub const DEFAULT_NODE: &str = "127.0.0.1:5000";

/// Longest `/insert/{key}/{value}` path sent as such; longer pairs go as the JSON body of
/// `POST /insert`.
pub const INSERT_PATH_BYTES_MAX: usize = 2000;

/// Exit code: the node answered 2xx.
pub const EXIT_OK: u8 = 0;
/// Exit code: the node answered 404 or another error status.
pub const EXIT_NODE_ERROR: u8 = 1;
/// Exit code: bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the node could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Longest wait for a connection to a node: one that takes longer is taken as down and
/// the next node tried (a refused connection fails at once anyway).
pub const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// Nodes given on the command line, in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nodes(pub Vec<String>);

impl Nodes {
    /// The first node given.
    pub fn first(&self) -> &str {
        self.0.first().map_or(DEFAULT_NODE, String::as_str)
    }
}

/// The node a command talks to, and how long it waits for it.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// HOST:PORT of the node to ask; a comma-separated list gives more nodes to try, in
    /// order, when one does not answer.
    #[arg(
        long,
        env = "DHT_NODE",
        default_value = DEFAULT_NODE,
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_parser = parse_nodes
    )]
    pub node: Nodes,
    /// Seconds to wait for the node's answer.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: f64,
    /// Neither read nor write the file of remembered ring members
    /// ($XDG_CACHE_HOME/ringkv/members.json or ~/.cache/ringkv/members.json).
    #[arg(long)]
    pub no_cache: bool,
}

impl Target {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// The member cache this command uses (an empty one that is never saved with
    /// `--no-cache` or without a home directory).
    pub fn cache(&self) -> MemberCache {
        if self.no_cache {
            MemberCache::default()
        } else {
            MemberCache::open(MemberCache::default_path())
        }
    }
}

/// How `insert`, `query` and `delete` pick their node.
#[derive(clap::Args, Clone, Debug)]
pub struct RoutingArg {
    /// token: straight to the node that serves the key (the ring is learned once and
    /// remembered); random: to the --node given, which routes the request through the
    /// ring.
    #[arg(long, default_value = "token", value_name = "token|random")]
    pub routing: ClientRouting,
}

/// Arguments of `dht insert`.
#[derive(clap::Args, Debug)]
pub struct InsertArgs {
    /// The key (e.g. a song title; quote it when it has spaces).
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// The value.
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub routing: RoutingArg,
}

/// Arguments of `dht query`.
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    /// The key; `*` asks for every pair in the DHT (quote it for your shell: '*').
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    /// Treat KEY literally, even when it is `*` (a key named `*`).
    #[arg(long)]
    pub literal: bool,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub routing: RoutingArg,
}

/// Arguments of `dht delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// The key.
    #[arg(allow_hyphen_values = true)]
    pub key: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub routing: RoutingArg,
}

/// Arguments of `dht overlay`, `dht join` and `dht depart`.
#[derive(clap::Args, Debug)]
pub struct NodeOnlyArgs {
    #[command(flatten)]
    pub target: Target,
}

/// Check a `HOST:PORT` and normalise it (a leading `http://` and a trailing `/` are
/// dropped).
pub fn parse_node(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let bare = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let hint = "expected HOST:PORT, e.g. 127.0.0.1:5000";
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(format!("'{text}' has no port; {hint}"));
    };
    let host_ok = !host.is_empty()
        && !host.contains(['/', '?', '#', '@', ' '])
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    if !host_ok {
        return Err(format!("'{text}' has no valid host; {hint}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(bare.to_string()),
        _ => Err(format!("'{text}' has no valid port (1-65535); {hint}")),
    }
}

/// Check a comma-separated list of `HOST:PORT` (at least one; repeats dropped).
pub fn parse_nodes(text: &str) -> Result<Nodes, String> {
    let mut nodes: Vec<String> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let node = parse_node(part)?;
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    if nodes.is_empty() {
        return Err(format!(
            "'{text}' names no node; expected HOST:PORT, e.g. 127.0.0.1:5000"
        ));
    }
    Ok(Nodes(nodes))
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "'{text}' is not a number of seconds above 0 and at most 86400"
        )),
    }
}

/// One request of the client API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST /insert/{key}/{value}` (or `POST /insert` with a JSON body when long).
    Insert {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `GET /query/{key}`.
    Query {
        /// The key (a key named `*` is sent as `%2A`).
        key: String,
    },
    /// `GET /query/*`.
    QueryAll,
    /// `DELETE /delete/{key}`.
    Delete {
        /// The key.
        key: String,
    },
    /// `GET /overlay`.
    Overlay,
    /// `POST /join`.
    Join,
    /// `POST /depart`.
    Depart,
}

/// HTTP method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

/// The HTTP form of an [`Op`]: method, path and optional JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The path, keys and values percent-encoded.
    pub path: String,
    /// A JSON body, for long inserts.
    pub body: Option<String>,
}

impl Op {
    /// The HTTP request for this operation.
    pub fn http(&self) -> HttpRequest {
        let (method, path, body) = match self {
            Op::Insert { key, value } => {
                let path = format!("/insert/{}/{}", encode_segment(key), encode_segment(value));
                if path.len() <= INSERT_PATH_BYTES_MAX {
                    (Method::Post, path, None)
                } else {
                    let body = json!({ "key": key, "value": value }).to_string();
                    (Method::Post, "/insert".to_string(), Some(body))
                }
            }
            Op::Query { key } => (Method::Get, format!("/query/{}", encode_segment(key)), None),
            Op::QueryAll => (Method::Get, "/query/*".to_string(), None),
            Op::Delete { key } => (
                Method::Delete,
                format!("/delete/{}", encode_segment(key)),
                None,
            ),
            Op::Overlay => (Method::Get, "/overlay".to_string(), None),
            Op::Join => (Method::Post, "/join".to_string(), None),
            Op::Depart => (Method::Post, "/depart".to_string(), None),
        };
        HttpRequest { method, path, body }
    }

    /// The key this operation names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Insert { key, .. } | Op::Query { key } | Op::Delete { key } => Some(key),
            _ => None,
        }
    }

    /// Whether the operation changes nothing, so that it may be sent again to another
    /// node whatever happened to it.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Op::Query { .. } | Op::QueryAll | Op::Overlay)
    }
}

/// A node's answer: its status and JSON body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON; a non-JSON body becomes `{"error": text, "status": code}`.
    pub body: Value,
}

impl Answer {
    /// The answer in `reply`.
    pub fn from_reply(reply: &HttpReply) -> Answer {
        let body = match serde_json::from_slice::<Value>(&reply.body) {
            Ok(value) => value,
            Err(_) => json!({ "error": reply.text().trim(), "status": reply.status }),
        };
        Answer {
            status: reply.status,
            body,
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error` field of the body, or a description of the status.
    pub fn error_message(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => format!("HTTP {}", self.status),
        }
    }

    /// Exit code of a one-shot command that got this answer.
    pub fn exit_code(&self) -> u8 {
        if self.is_success() {
            EXIT_OK
        } else {
            EXIT_NODE_ERROR
        }
    }
}

/// Why no answer came from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// The node's `HOST:PORT`.
    pub node: String,
    /// What went wrong.
    pub reason: String,
    /// Whether the request may still have been applied (timeout, broken exchange).
    pub maybe_applied: bool,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot reach node {}: {}", self.node, self.reason)?;
        if self.maybe_applied {
            write!(f, " (the request may still have been applied)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unreachable {}

impl Unreachable {
    /// "Is a node running there? " when no connection could be made, else "".
    pub fn question(&self) -> &'static str {
        if self.maybe_applied {
            ""
        } else {
            "Is a node running there? "
        }
    }
}

/// A blocking client: one request at a time, each on a fresh connection (a shell may sit
/// idle for hours, so no connection is kept between requests).
pub struct Client {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Client({:?})", self.timeout)
    }
}

impl Client {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> std::io::Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client { runtime, timeout })
    }

    /// Send `op` to the node at `node` (`HOST:PORT`) and wait for its answer.
    pub fn call(&self, node: &str, op: &Op) -> Result<Answer, Unreachable> {
        self.reply(node, op).map(|reply| Answer::from_reply(&reply))
    }

    /// Send `op` to the node at `node` and return its raw answer.
    pub fn reply(&self, node: &str, op: &Op) -> Result<HttpReply, Unreachable> {
        let request = op.http();
        let url = format!("http://{node}{}", request.path);
        let http = self.http();
        let result = self.runtime.block_on(async move {
            match request.method {
                Method::Get => http.get(&url).await,
                Method::Post => http.post(&url, request.body.map(Into::into)).await,
                Method::Delete => http.delete(&url).await,
            }
        });
        result.map_err(|err| unreachable(node, &err))
    }

    /// Learn the ring from `seed` ([`ringkv_client::learn`]).
    pub fn learn(&self, seed: &str) -> Result<RingMap, LearnError> {
        let http = self.http();
        let seeds = [seed.to_string()];
        self.runtime.block_on(ringkv_client::learn(&http, &seeds))
    }

    fn http(&self) -> HttpClient {
        HttpClient::with_connect_timeout(self.timeout, CONNECT_WAIT)
    }
}

fn unreachable(node: &str, err: &ClientError) -> Unreachable {
    let (reason, maybe_applied) = match err {
        ClientError::BadUrl { reason, .. } => (format!("bad address: {reason}"), false),
        // "client error (Connect): tcp connect error: Connection refused (os error 111)":
        // the innermost cause says it all.
        ClientError::Connect { reason, .. } => (innermost(reason).to_string(), false),
        ClientError::Exchange { reason, .. } => (format!("the connection broke: {reason}"), true),
        ClientError::Timeout { timeout_ms, .. } => {
            (format!("no answer within {timeout_ms} ms"), true)
        }
    };
    Unreachable {
        node: node.to_string(),
        reason,
        maybe_applied,
    }
}

fn innermost(chain: &str) -> &str {
    chain.rsplit(": ").next().unwrap_or(chain)
}

/// Render a JSON answer: indented when `pretty`, else on one line.
pub fn render(body: &Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    };
    text.unwrap_or_else(|_| body.to_string())
}

/// Whether answers should be pretty-printed: when stdout is a terminal.
pub fn pretty_output() -> bool {
    std::io::stdout().is_terminal()
}

/// Print a line on stdout and flush it (pipes and tests read it at once).
pub fn print_line(text: &str) {
    crate::stdout::line(text);
}

/// Print a line on stderr.
pub fn print_error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

/// Refuse an empty key before it reaches the node.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("the key is empty".to_string())
    } else {
        Ok(())
    }
}

/// Run one operation and print its answer; the exit code as documented at the top of
/// this module.
fn run_op(op: Op, target: &Target, routing: ClientRouting) -> anyhow::Result<ExitCode> {
    if let Some(key) = op.key() {
        if let Err(message) = check_key(key) {
            print_error(&format!("error: {message}; give a non-empty KEY"));
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    }
    let client = Client::new(target.timeout())?;
    let mut reach = Reach::new(client, target.node.0.clone(), target.cache());
    let aim = match (routing, op.key()) {
        (ClientRouting::Token, Some(_)) => Aim::Token,
        _ => Aim::To(target.node.first().to_string()),
    };
    let reached = reach.send(&op, aim);
    print_outcome(reached)
}

/// Run `join` or `depart`: they act on one node, so they go to the first node given and
/// nowhere else.
fn run_on_node(op: Op, target: &Target) -> anyhow::Result<ExitCode> {
    let node = target.node.first();
    if target.node.0.len() > 1 {
        print_error(&format!(
            "error: {} acts on one node; --node lists {} (give one HOST:PORT)",
            if op == Op::Join { "join" } else { "depart" },
            target.node.0.len()
        ));
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let client = Client::new(target.timeout())?;
    let reached = client.call(node, &op).map(|answer| Reached {
        answer,
        node: node.to_string(),
        silent: Vec::new(),
    });
    print_outcome(reached.map_err(|u| vec![u]))
}

fn print_outcome(reached: Result<Reached, Vec<Unreachable>>) -> anyhow::Result<ExitCode> {
    match reached {
        Ok(reached) => {
            if let Some(note) = reached.note() {
                print_error(&note);
            }
            let answer = &reached.answer;
            print_line(&render(&answer.body, pretty_output()));
            if !answer.is_success() {
                print_error(&format!(
                    "error: {} (HTTP {})",
                    answer.error_message(),
                    answer.status
                ));
            }
            Ok(ExitCode::from(answer.exit_code()))
        }
        Err(silent) => {
            print_error(&format!(
                "error: {} Give another node with --node HOST:PORT or DHT_NODE.",
                crate::reach::nobody_answered(&silent)
            ));
            Ok(ExitCode::from(EXIT_UNREACHABLE))
        }
    }
}

/// `dht insert KEY VALUE`.
pub fn run_insert(args: InsertArgs) -> anyhow::Result<ExitCode> {
    let op = Op::Insert {
        key: args.key,
        value: args.value,
    };
    run_op(op, &args.target, args.routing.routing)
}

/// `dht query KEY` (`*`: every pair, unless `--literal`).
pub fn run_query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let op = if args.key == "*" && !args.literal {
        Op::QueryAll
    } else {
        Op::Query { key: args.key }
    };
    run_op(op, &args.target, args.routing.routing)
}

/// `dht delete KEY`.
pub fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    run_op(
        Op::Delete { key: args.key },
        &args.target,
        args.routing.routing,
    )
}

/// `dht overlay`.
pub fn run_overlay(args: NodeOnlyArgs) -> anyhow::Result<ExitCode> {
    run_op(Op::Overlay, &args.target, ClientRouting::Random)
}

/// `dht join`.
pub fn run_join(args: NodeOnlyArgs) -> anyhow::Result<ExitCode> {
    run_on_node(Op::Join, &args.target)
}

/// `dht depart`.
pub fn run_depart(args: NodeOnlyArgs) -> anyhow::Result<ExitCode> {
    run_on_node(Op::Depart, &args.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_single_encoded_segments() {
        let op = Op::Insert {
            key: "Like a Rolling Stone".into(),
            value: "http://download.nodeX/a?b#c 100%".into(),
        };
        let request = op.http();
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.path,
            "/insert/Like%20a%20Rolling%20Stone/http%3A%2F%2Fdownload.nodeX%2Fa%3Fb%23c%20100%25"
        );
        assert_eq!(request.body, None);
        let query = Op::Query {
            key: "Don't Stop".into(),
        };
        assert_eq!(query.http().path, "/query/Don%27t%20Stop");
        assert_eq!(Op::Query { key: "*".into() }.http().path, "/query/%2A");
        assert_eq!(Op::QueryAll.http().path, "/query/*");
        let delete = Op::Delete { key: "a/b".into() }.http();
        assert_eq!(
            (delete.method, delete.path.as_str()),
            (Method::Delete, "/delete/a%2Fb")
        );
    }

    #[test]
    fn long_inserts_go_as_json() {
        let value = "x".repeat(INSERT_PATH_BYTES_MAX);
        let request = Op::Insert {
            key: "k".into(),
            value: value.clone(),
        }
        .http();
        assert_eq!(request.path, "/insert");
        let body: Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({ "key": "k", "value": value }));
    }

    #[test]
    fn node_addresses_are_checked() {
        assert_eq!(parse_node("127.0.0.1:5000"), Ok("127.0.0.1:5000".into()));
        assert_eq!(
            parse_node("http://localhost:5001/"),
            Ok("localhost:5001".into())
        );
        assert_eq!(parse_node("[::1]:5002"), Ok("[::1]:5002".into()));
        for bad in [
            "127.0.0.1",
            ":5000",
            "host:0",
            "host:70000",
            "host:port",
            "a/b:1",
            "::1:5000",
        ] {
            assert!(parse_node(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unreachable_nodes_are_reported_with_the_address() {
        let client = Client::new(Duration::from_secs(5)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = client.call(&addr, &Op::Overlay).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach node {addr}: ")),
            "{err}"
        );
        assert!(!err.maybe_applied);
    }
}
