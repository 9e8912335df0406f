//! What the user types: JSON arguments on the command line and the lines of `signalr connect`.

use serde_json::Value;

/// The arguments of a call given on the command line: each one JSON value, or (with `--args`)
/// one JSON array holding them all.
///
/// # Errors
/// A message naming the argument that is not JSON.
pub fn parse_arguments(each: &[String], array: Option<&str>) -> Result<Vec<Value>, String> {
    if let Some(array) = array {
        return match serde_json::from_str::<Value>(array) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(_) => Err(format!(
                "--args must be a JSON array of the arguments, e.g. '[\"ann\", 42]'; got {array}"
            )),
            Err(err) => Err(format!("--args is not valid JSON ({err}): {array}")),
        };
    }
    each.iter()
        .enumerate()
        .map(|(index, text)| {
            serde_json::from_str(text).map_err(|err| {
                format!(
                    "argument {} is not valid JSON ({err}): {text}\n\
                     Each argument is one JSON value: strings need their quotes, e.g. '\"hi\"', \
                     numbers and objects are written as in JSON: 42 '{{\"a\":1}}'.",
                    index + 1
                )
            })
        })
        .collect()
}

/// One line typed to `signalr connect`.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// Nothing to do: an empty line or a `#` comment.
    Empty,
    /// `exit` or `quit`.
    Exit,
    /// Invoke `method` with `arguments`.
    Call {
        /// The hub method.
        method: String,
        /// Its arguments.
        arguments: Vec<Value>,
    },
}

/// Reads one line: `Method arg1 arg2 …` (each argument a JSON value, separated by white space),
/// or the whole call as one JSON array `["Method", arg1, arg2, …]`.
///
/// # Errors
/// A message saying what is wrong with the line.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    if line == "exit" || line == "quit" {
        return Ok(Line::Exit);
    }
    if line.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(line)
            .map_err(|err| format!("the line is not a valid JSON array ({err})"))?;
        let mut items = items.into_iter();
        return match items.next() {
            Some(Value::String(method)) if !method.is_empty() => Ok(Line::Call {
                method,
                arguments: items.collect(),
            }),
            _ => Err(
                "a JSON array line starts with the method name as a string: [\"Method\", arg1, …]"
                    .to_owned(),
            ),
        };
    }
    let (method, rest) = match line.find(char::is_whitespace) {
        Some(at) => (&line[..at], &line[at..]),
        None => (line, ""),
    };
    if method.starts_with(['"', '{']) {
        return Err("a line starts with the method name: Method arg1 arg2 …".to_owned());
    }
    let mut arguments = Vec::new();
    for (index, value) in serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .enumerate()
    {
        arguments.push(value.map_err(|err| {
            format!(
                "argument {} is not valid JSON ({err}); each argument is one JSON value, \
                 strings in quotes: Echo \"hi\" 42",
                index + 1
            )
        })?);
    }
    Ok(Line::Call {
        method: method.to_owned(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(method: &str, arguments: Vec<Value>) -> Line {
        Line::Call {
            method: method.to_owned(),
            arguments,
        }
    }

    #[test]
    fn command_line_arguments() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_arguments(&args(&["\"hi\"", "42", "{\"a\":[1]}", "null"]), None),
            Ok(vec![json!("hi"), json!(42), json!({"a": [1]}), Value::Null])
        );
        let err = parse_arguments(&args(&["1", "hi"]), None).expect_err("bare word");
        assert!(err.starts_with("argument 2 is not valid JSON"), "{err}");
        assert_eq!(
            parse_arguments(&args(&[]), Some("[\"a\", 1]")),
            Ok(vec![json!("a"), json!(1)])
        );
        assert!(parse_arguments(&[], Some("{\"a\":1}")).is_err());
        assert!(parse_arguments(&[], Some("[1,")).is_err());
        assert_eq!(parse_arguments(&[], None), Ok(vec![]));
    }

    #[test]
    fn interactive_lines() {
        assert_eq!(parse_line("  "), Ok(Line::Empty));
        assert_eq!(parse_line("# a comment"), Ok(Line::Empty));
        assert_eq!(parse_line("exit"), Ok(Line::Exit));
        assert_eq!(parse_line(" quit "), Ok(Line::Exit));
        assert_eq!(parse_line("Ping"), Ok(call("Ping", vec![])));
        assert_eq!(
            parse_line("Send \"ann\"   \"hello world\" 3 [1, 2] {\"k\": true}"),
            Ok(call(
                "Send",
                vec![
                    json!("ann"),
                    json!("hello world"),
                    json!(3),
                    json!([1, 2]),
                    json!({"k": true})
                ]
            ))
        );
        assert_eq!(
            parse_line("[\"Send\", \"ann\", [1]]"),
            Ok(call("Send", vec![json!("ann"), json!([1])]))
        );
        assert!(parse_line("Send hello").is_err());
        assert!(parse_line("Send \"unterminated").is_err());
        assert!(parse_line("[1, 2]").is_err());
        assert!(parse_line("[\"Send\", ").is_err());
        assert!(parse_line("\"Send\" 1").is_err());
    }
}
