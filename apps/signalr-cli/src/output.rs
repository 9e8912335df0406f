//! What the commands print: results on stdout (human-readable or JSON lines), progress and
//! errors on stderr.

use std::io::Write;

use serde_json::{Value, json};

use crate::run::Failure;

/// Where and how the commands print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per line on stdout.
    pub json: bool,
    /// No progress messages.
    pub quiet: bool,
}

/// stdout is gone (a closed pipe): the command should end.
#[derive(Debug)]
pub struct Closed;

impl Output {
    fn line(&self, text: &str) -> Result<(), Closed> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(|_| Closed)
    }

    /// The result of an invocation.
    pub fn result(&self, value: &Value) -> Result<(), Closed> {
        if self.json {
            self.line(&json!({"type": "result", "value": value}).to_string())
        } else {
            self.line(&value.to_string())
        }
    }

    /// One item of a stream.
    pub fn item(&self, value: &Value) -> Result<(), Closed> {
        if self.json {
            self.line(&json!({"type": "item", "value": value}).to_string())
        } else {
            self.line(&value.to_string())
        }
    }

    /// A call of a client method by the server: `Target arg1 arg2` (the syntax of `connect`'s
    /// lines), or its JSON object.
    pub fn invocation(&self, target: &str, arguments: &[Value]) -> Result<(), Closed> {
        if self.json {
            self.line(
                &json!({"type": "invocation", "target": target, "arguments": arguments})
                    .to_string(),
            )
        } else {
            let mut text = target.to_owned();
            for argument in arguments {
                text.push(' ');
                text.push_str(&argument.to_string());
            }
            self.line(&text)
        }
    }

    /// A failure: its text on stderr (and the error data of a classic hub error on the next
    /// line), and with `--json` its object on stdout too (with `"data"` when there is some).
    pub fn error(&self, failure: &Failure) {
        let _ = writeln!(std::io::stderr(), "error: {}", failure.message);
        if let Some(data) = &failure.data {
            let _ = writeln!(std::io::stderr(), "error data: {data}");
        }
        if self.json {
            let mut object =
                json!({"type": "error", "kind": failure.kind(), "message": failure.message});
            if let Some(data) = &failure.data {
                object["data"] = data.clone();
            }
            let _ = self.line(&object.to_string());
        }
    }

    /// A progress message on stderr.
    pub fn status(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }
}
