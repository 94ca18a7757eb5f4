//! `dht shell`: an interactive client. It reads one command a line, with line editing and
//! history when stdin is a terminal (rustyline) and plain line reading otherwise (so a
//! script can be piped in), and prints each node's JSON answer on stdout. Problems of
//! its own (unknown command, missing argument, unreachable node) are one `error: ...`
//! line on stderr, and the shell carries on. It exits 0 at `exit` or end of input.
//!
//! The shell learns the ring's members when it starts (or takes them from the member
//! cache), and when its node does not answer it asks the other nodes given and those
//! members for everything but `join` and `depart`, saying on stderr which node answered
//! (see [`crate::reach`]). Its node stays the one chosen.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use serde_json::{json, Value};

use crate::client_cmd::{
    check_key, parse_node, pretty_output, print_error, print_line, render, Client, Op, Target,
    Unreachable,
};
use crate::reach::{nobody_answered, Aim, Reach, Reached};

/// The prompt shown when stdin is a terminal.
pub const PROMPT: &str = "DHT> ";

/// Arguments of `dht shell`.
#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub target: Target,
    /// Keep no history file (by default an interactive shell keeps ~/.dht_history).
    #[arg(long)]
    pub no_history: bool,
}

/// Which node `setnode` picks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeChoice {
    /// The N-th node of the overlay, 0 being the bootstrap.
    Index(usize),
    /// A `HOST:PORT`.
    Addr(String),
}

/// One parsed shell line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellCommand {
    /// A request to the current node.
    Op(Op),
    /// Change the current node.
    SetNode(NodeChoice),
    /// Show the current node.
    ShowNode,
    /// List the commands.
    Help,
    /// Leave the shell.
    Exit,
}

/// Command, usage and description, in the order `help` lists them.
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "insert",
        "insert KEY VALUE",
        "store VALUE under KEY (replacing any value)",
    ),
    (
        "query",
        "query KEY | query *",
        "the value of KEY; `*` lists every pair in the DHT",
    ),
    ("delete", "delete KEY", "remove KEY"),
    (
        "overlay",
        "overlay",
        "the nodes in ring order, from the bootstrap",
    ),
    ("join", "join", "make the current node join the ring"),
    (
        "depart",
        "depart",
        "make the current node leave the ring (its data is handed on)",
    ),
    (
        "setnode",
        "setnode N | setnode HOST:PORT",
        "talk to the N-th node of the overlay (0 = bootstrap) or to HOST:PORT",
    ),
    ("node", "node", "show the node the shell talks to"),
    ("help", "help", "this list"),
    ("exit", "exit | quit | Ctrl-D", "leave the shell"),
];

fn usage(command: &str) -> &'static str {
    COMMANDS
        .iter()
        .find(|(name, _, _)| *name == command)
        .map(|(_, usage, _)| *usage)
        .unwrap_or("help")
}

/// The text `help` prints.
pub fn help_text() -> String {
    let width = COMMANDS
        .iter()
        .map(|(_, usage, _)| usage.len())
        .max()
        .unwrap_or(0);
    let mut text =
        String::from("Commands (quote words with spaces or quotes, as in a Unix shell):\n");
    for (_, usage, description) in COMMANDS {
        text.push_str(&format!("  {usage:<width$}  {description}\n"));
    }
    text.push_str(concat!(
        "Example: insert \"Like a Rolling Stone\" \"http://download.nodeX\"\n",
        "A key named * is queried as query '*' (quoted); an unquoted * means every pair."
    ));
    text
}

fn command_names() -> String {
    let names: Vec<&str> = COMMANDS.iter().map(|(name, _, _)| *name).collect();
    names.join(", ")
}

/// Parse one line. `Ok(None)`: nothing to do (blank line or `# comment`). `Err`: one line
/// saying what is wrong, with a usage hint.
pub fn parse_line(line: &str) -> Result<Option<ShellCommand>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let words = shell_words::split(line).map_err(|_| {
        "unbalanced quotes: close every ' and \" (e.g. insert \"Don't Stop\" 1979, or insert 'say \"hi\"' 1)"
            .to_string()
    })?;
    let Some((first, args)) = words.split_first() else {
        return Ok(None);
    };
    let command = first.to_ascii_lowercase();
    let arity = |n: usize| -> Result<(), String> {
        if args.len() == n {
            return Ok(());
        }
        let name = command.as_str();
        let mut message = match n {
            0 => format!("{name} takes no argument, got {}", args.len()),
            1 => format!("{name} takes 1 argument, got {}", args.len()),
            _ => format!("{name} takes {n} arguments, got {}", args.len()),
        };
        message.push_str(&format!("; usage: {}", usage(name)));
        if args.len() > n && matches!(name, "insert" | "query" | "delete") {
            message.push_str(" (quote a key or value that has spaces: insert \"Like a Rolling Stone\" \"http://...\")");
        }
        Err(message)
    };
    let key = |key: &str| -> Result<String, String> {
        check_key(key).map_err(|m| format!("{m}; usage: {}", usage(&command)))?;
        Ok(key.to_string())
    };
    let parsed = match command.as_str() {
        "insert" => {
            arity(2)?;
            ShellCommand::Op(Op::Insert {
                key: key(&args[0])?,
                value: args[1].clone(),
            })
        }
        "query" => {
            arity(1)?;
            // Only an unquoted `*` asks for every pair: the raw text after the command.
            let raw = line
                .split_once(char::is_whitespace)
                .map(|(_, rest)| rest.trim());
            if raw == Some("*") {
                ShellCommand::Op(Op::QueryAll)
            } else {
                ShellCommand::Op(Op::Query {
                    key: key(&args[0])?,
                })
            }
        }
        "delete" => {
            arity(1)?;
            ShellCommand::Op(Op::Delete {
                key: key(&args[0])?,
            })
        }
        "overlay" => {
            arity(0)?;
            ShellCommand::Op(Op::Overlay)
        }
        "join" => {
            arity(0)?;
            ShellCommand::Op(Op::Join)
        }
        "depart" => {
            arity(0)?;
            ShellCommand::Op(Op::Depart)
        }
        "setnode" => {
            arity(1)?;
            ShellCommand::SetNode(parse_choice(&args[0])?)
        }
        "node" => {
            arity(0)?;
            ShellCommand::ShowNode
        }
        "help" | "?" => ShellCommand::Help,
        "exit" | "quit" => ShellCommand::Exit,
        _ => {
            return Err(format!(
                "unknown command '{first}'; commands: {} (type help)",
                command_names()
            ))
        }
    };
    Ok(Some(parsed))
}

fn parse_choice(arg: &str) -> Result<NodeChoice, String> {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        return arg
            .parse()
            .map(NodeChoice::Index)
            .map_err(|_| format!("setnode: {arg} is too large a node number"));
    }
    parse_node(arg).map(NodeChoice::Addr).map_err(|_| {
        format!(
            "setnode: '{arg}' is neither a node number (0 = bootstrap) nor HOST:PORT; usage: {}",
            usage("setnode")
        )
    })
}

/// The shell's state: the node it talks to, and the ring it knows.
struct Shell {
    node: String,
    reach: Reach,
    pretty: bool,
}

impl Shell {
    /// Send `op` to the shell's node; all but `join` and `depart` fall back to other
    /// nodes when it does not answer.
    fn send(&mut self, op: &Op) -> Result<Reached, Vec<Unreachable>> {
        if matches!(op, Op::Join | Op::Depart) {
            let answer = self
                .reach
                .client()
                .call(&self.node, op)
                .map_err(|u| vec![u])?;
            return Ok(Reached {
                answer,
                node: self.node.clone(),
                silent: Vec::new(),
            });
        }
        self.reach.send(op, Aim::To(self.node.clone()))
    }

    fn execute(&mut self, command: ShellCommand) {
        match command {
            ShellCommand::Op(op) => match self.send(&op) {
                Ok(reached) => {
                    if let Some(note) = reached.note() {
                        print_error(&note);
                    }
                    self.print(&reached.answer.body);
                }
                Err(silent) => print_error(&format!(
                    "error: {} Pick another node with setnode N or setnode HOST:PORT.",
                    nobody_answered(&silent)
                )),
            },
            ShellCommand::SetNode(choice) => match self.resolve(&choice) {
                Ok(node) => {
                    self.node = node;
                    let mut body = json!({
                        "message": format!("now talking to node {}", self.node),
                        "node": self.node,
                    });
                    if let NodeChoice::Index(index) = choice {
                        body["index"] = json!(index);
                    }
                    self.print(&body);
                }
                Err(message) => print_error(&format!("error: {message}")),
            },
            ShellCommand::ShowNode => self.print(&json!({ "node": self.node })),
            ShellCommand::Help => print_line(&help_text()),
            ShellCommand::Exit => {}
        }
    }

    /// The `HOST:PORT` a `setnode` argument names; an index is looked up in the overlay
    /// the current node reports.
    fn resolve(&mut self, choice: &NodeChoice) -> Result<String, String> {
        let index = match choice {
            NodeChoice::Addr(addr) => return Ok(addr.clone()),
            NodeChoice::Index(index) => *index,
        };
        let hint = "use setnode HOST:PORT";
        let reached = self.send(&Op::Overlay).map_err(|silent| {
            format!(
                "setnode {index}: cannot read the overlay: {}; {hint}",
                nobody_answered(&silent).trim_end_matches('.')
            )
        })?;
        if let Some(note) = reached.note() {
            print_error(&note);
        }
        let answer = reached.answer;
        if !answer.is_success() {
            return Err(format!(
                "setnode {index}: node {} could not list the overlay: {}; {hint}",
                self.node,
                answer.error_message()
            ));
        }
        let nodes: Vec<&str> = answer
            .body
            .get("overlay")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match nodes.get(index) {
            Some(node) => Ok(node.to_string()),
            None if nodes.is_empty() => {
                Err(format!("setnode {index}: the overlay is empty; {hint}"))
            }
            None => Err(format!(
                "setnode {index}: there are {} nodes in the overlay, numbered 0 to {}",
                nodes.len(),
                nodes.len() - 1
            )),
        }
    }

    fn print(&self, body: &Value) {
        print_line(&render(body, self.pretty));
    }
}

/// Where lines come from: rustyline on a terminal, plain reads otherwise.
enum Input {
    Editor {
        editor: Box<DefaultEditor>,
        history: Option<PathBuf>,
    },
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    fn new(interactive: bool, keep_history: bool) -> Input {
        if interactive {
            match DefaultEditor::new() {
                Ok(mut editor) => {
                    let history = keep_history.then(history_path).flatten();
                    if let Some(path) = &history {
                        let _ = editor.load_history(path);
                    }
                    return Input::Editor {
                        editor: Box::new(editor),
                        history,
                    };
                }
                Err(err) => print_error(&format!(
                    "warning: no line editing ({err}); reading plain lines"
                )),
            }
        }
        Input::Plain(std::io::stdin().lock())
    }

    /// The next line; `None` at the end of input (Ctrl-D).
    fn next_line(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Input::Editor { editor, .. } => loop {
                match editor.readline(PROMPT) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line));
                    }
                    // Ctrl-C drops the line being typed, as in a Unix shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(ReadlineError::Io(err)) => return Err(err),
                    Err(err) => return Err(std::io::Error::other(err.to_string())),
                }
            },
            Input::Plain(stdin) => {
                let mut bytes = Vec::new();
                if stdin.read_until(b'\n', &mut bytes)? == 0 {
                    return Ok(None);
                }
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
    }

    fn save_history(&mut self) {
        if let Input::Editor {
            editor,
            history: Some(path),
        } = self
        {
            let _ = editor.save_history(path);
        }
    }
}

fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".dht_history"))
}

/// `dht shell`: read commands until `exit` or the end of input.
pub fn run(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let node = args.target.node.first().to_string();
    let client = Client::new(args.target.timeout())?;
    let mut reach = Reach::new(client, args.target.node.0.clone(), args.target.cache());
    if reach.ring().is_none() {
        // Members to fall back on later; a node that is down now is no error yet.
        reach.learn(Some(&node));
    }
    let mut shell = Shell {
        node,
        reach,
        pretty: pretty_output(),
    };
    let mut input = Input::new(interactive, !args.no_history);
    if interactive {
        print_line(&format!(
            "ringkv shell, talking to node {}; type help for the commands, exit or Ctrl-D to leave",
            shell.node
        ));
    }
    while let Some(line) = input.next_line()? {
        match parse_line(&line) {
            Ok(None) => {}
            Ok(Some(ShellCommand::Exit)) => break,
            Ok(Some(command)) => shell.execute(command),
            Err(message) => print_error(&format!("error: {message}")),
        }
    }
    input.save_history();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(line: &str) -> Op {
        match parse_line(line) {
            Ok(Some(ShellCommand::Op(op))) => op,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn quoting_follows_unix_shell_rules() {
        assert_eq!(
            op(r#"insert "Like a Rolling Stone" "http://download.nodeX""#),
            Op::Insert {
                key: "Like a Rolling Stone".into(),
                value: "http://download.nodeX".into()
            }
        );
        assert_eq!(
            op(r#"insert 'say "hi"' Don\'t"#),
            Op::Insert {
                key: "say \"hi\"".into(),
                value: "Don't".into()
            }
        );
        assert_eq!(
            op("  QUERY   Hey\\ Jude  "),
            Op::Query {
                key: "Hey Jude".into()
            }
        );
    }

    #[test]
    fn only_an_unquoted_star_queries_everything() {
        assert_eq!(op("query *"), Op::QueryAll);
        assert_eq!(op("query   *  "), Op::QueryAll);
        assert_eq!(op("query '*'"), Op::Query { key: "*".into() });
        assert_eq!(op("query \"*\""), Op::Query { key: "*".into() });
        assert_eq!(op("query \\*"), Op::Query { key: "*".into() });
    }

    #[test]
    fn setnode_takes_an_index_or_an_address() {
        assert_eq!(
            parse_line("setnode 2"),
            Ok(Some(ShellCommand::SetNode(NodeChoice::Index(2))))
        );
        assert_eq!(
            parse_line("setnode 127.0.0.1:5003"),
            Ok(Some(ShellCommand::SetNode(NodeChoice::Addr(
                "127.0.0.1:5003".into()
            ))))
        );
        let err = parse_line("setnode nowhere").unwrap_err();
        assert!(
            err.contains("usage: setnode N | setnode HOST:PORT"),
            "{err}"
        );
        assert!(parse_line("setnode")
            .unwrap_err()
            .contains("takes 1 argument, got 0"));
    }

    #[test]
    fn mistakes_are_one_line_with_a_hint() {
        let err = parse_line("insert onlykey").unwrap_err();
        assert_eq!(
            err,
            "insert takes 2 arguments, got 1; usage: insert KEY VALUE"
        );
        let err = parse_line("insert Like a Rolling Stone x").unwrap_err();
        assert!(
            err.contains("quote a key or value that has spaces"),
            "{err}"
        );
        let err = parse_line("frobnicate x").unwrap_err();
        assert!(
            err.starts_with("unknown command 'frobnicate'; commands: insert,"),
            "{err}"
        );
        let err = parse_line("insert \"unclosed value").unwrap_err();
        assert!(err.starts_with("unbalanced quotes"), "{err}");
        let err = parse_line("query ''").unwrap_err();
        assert!(err.starts_with("the key is empty"), "{err}");
        assert!(parse_line("overlay now")
            .unwrap_err()
            .contains("takes no argument"));
        for err in [parse_line("x"), parse_line("insert a")] {
            assert!(!err.unwrap_err().contains('\n'));
        }
    }

    #[test]
    fn blank_lines_and_comments_do_nothing() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   \n"), Ok(None));
        assert_eq!(parse_line("# a comment"), Ok(None));
        assert_eq!(parse_line("exit"), Ok(Some(ShellCommand::Exit)));
        assert_eq!(parse_line("quit"), Ok(Some(ShellCommand::Exit)));
        assert_eq!(parse_line("help"), Ok(Some(ShellCommand::Help)));
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text();
        for (name, _, _) in COMMANDS {
            assert!(help.contains(name), "{name}");
        }
    }
}
