//! Query parameters read the way ASP.NET Core reads them (docs/protocol.md, "Endpoints", "Negotiate request").
//!
//! ASP.NET Core keeps every value of a repeated key, matches keys ignoring case, and hands the
//! SignalR code a `StringValues` that it turns into one string. The rules below were checked
//! against the real ASP.NET Core 10 server:
//!
//! * `negotiateVersion=1&negotiateVersion=1` is the text `1,1`, so it is refused as a non-integer
//!   version; `negotiateVersion=&negotiateVersion=1` is `1` (empty values are left out of the
//!   joined text).
//! * `id=&id=TOKEN` finds the connection, `id=TOKEN&id=TOKEN` does not (`TOKEN,TOKEN`); only an
//!   absent `id` or a single empty `id=` counts as missing.
//! * Numbers are `Int32` text as .NET's `int.TryParse` takes it: ASCII white space around the
//!   digits, one leading sign, trailing NUL characters.
//! * `useStatefulReconnect` is `bool.TryParse` text: `true` in any case, with any Unicode white
//!   space or NUL characters around it.

use std::borrow::Cow;

/// Every value of one query parameter, as ASP.NET Core's `IQueryCollection` hands it over (a
/// `StringValues`).
///
/// Built from decoded query pairs (e.g. `form_urlencoded::parse`); keys equal to the name
/// ignoring ASCII case belong to it, in query order. (.NET compares keys with
/// `OrdinalIgnoreCase`; for the ASCII names SignalR looks up that is ASCII case folding: the real
/// server does not take `negotiateVer\u{17f}ion` or `negotiateVers\u{131}on` either.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParam<'a> {
    values: Vec<&'a str>,
}

impl<'a> QueryParam<'a> {
    /// Collects the values of `name` from decoded `(key, value)` pairs.
    pub fn find(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, name: &str) -> Self {
        let mut param = QueryParam::default();
        for (key, value) in pairs {
            param.offer(key, value, name);
        }
        param
    }

    /// Keeps `value` when `key` is `name` (ignoring ASCII case).
    fn offer(&mut self, key: &str, value: &'a str, name: &str) {
        if key.eq_ignore_ascii_case(name) {
            self.values.push(value);
        }
    }

    /// Whether the query has the key at all (`IQueryCollection.TryGetValue`), even as `name=`.
    pub fn is_present(&self) -> bool {
        !self.values.is_empty()
    }

    /// ASP.NET's `StringValues.IsNullOrEmpty`: the key is absent, or present once with an empty
    /// value. Two empty values (`id=&id=`) are *not* empty: their text is `""`.
    pub fn is_null_or_empty(&self) -> bool {
        match self.values.as_slice() {
            [] => true,
            [single] => single.is_empty(),
            _ => false,
        }
    }

    /// ASP.NET's `StringValues.ToString()`: `None` when absent, the single value when there is
    /// one, otherwise the non-empty values joined with `,` (possibly `""`).
    pub fn value(&self) -> Option<Cow<'a, str>> {
        match self.values.as_slice() {
            [] => None,
            [single] => Some(Cow::Borrowed(single)),
            many => {
                let kept: Vec<&str> = many.iter().copied().filter(|v| !v.is_empty()).collect();
                Some(match kept.as_slice() {
                    [] => Cow::Borrowed(""),
                    [one] => Cow::Borrowed(one),
                    _ => Cow::Owned(kept.join(",")),
                })
            }
        }
    }
}

/// Parses `Int32` text as .NET's `int.TryParse(text)` does (`NumberStyles.Integer`, invariant
/// signs): optional ASCII white space (tab, LF, VT, FF, CR, space), an optional `+` or `-`, one or
/// more ASCII digits, optional ASCII white space, then optional NUL characters. `None` for
/// anything else and for values outside `i32`.
pub fn parse_dotnet_int32(text: &str) -> Option<i32> {
    const WHITE: &[char] = &['\t', '\n', '\u{b}', '\u{c}', '\r', ' '];
    let core = text
        .trim_end_matches('\0')
        .trim_end_matches(WHITE)
        .trim_start_matches(WHITE);
    // What is left is Rust's `i32` syntax too: one optional sign, then at least one ASCII digit.
    core.parse().ok()
}

/// Whether `text` is `true` for .NET's `bool.TryParse`: `true` ignoring ASCII case, after removing
/// Unicode white space and NUL characters at both ends. (`false`, other text and `true,true`
/// are all `false` here.)
pub fn is_dotnet_true(text: &str) -> bool {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .eq_ignore_ascii_case("true")
}

/// Reads two parameters in one pass over `pairs` (for [`crate::NegotiateRequest::from_query`]).
pub(crate) fn find_two<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    first: &str,
    second: &str,
) -> (QueryParam<'a>, QueryParam<'a>) {
    let (mut a, mut b) = (QueryParam::default(), QueryParam::default());
    for (key, value) in pairs {
        a.offer(key, value, first);
        b.offer(key, value, second);
    }
    (a, b)
}
