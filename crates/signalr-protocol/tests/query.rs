//! Query parameters as ASP.NET Core reads them. Every expectation here was checked against the
//! real ASP.NET Core 10 server (`POST /negotiate?...` and `GET ?id=...` on its test hub), where
//! our first reading (last value wins, Rust's integer syntax, first `id` wins) disagreed with it.

use signalr_protocol::{NegotiateRequest, QueryParam, is_dotnet_true, parse_dotnet_int32};

const NON_INTEGER: &str = "The client requested a non-integer protocol version.";

/// Decodes a raw query string the way the server does and reads the negotiate request.
fn negotiate(query: &str, minimum: u32) -> Result<NegotiateRequest, String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    NegotiateRequest::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), minimum)
}

fn version(query: &str) -> Result<u32, String> {
    negotiate(query, 0).map(|r| r.negotiate_version)
}

fn refused(n: i64) -> Result<u32, String> {
    Err(format!(
        "The client requested version '{n}', but the server does not support this version."
    ))
}

#[test]
fn repeated_negotiate_version_is_joined_with_commas() {
    // "1,1" and "1,0" are not integers.
    assert_eq!(
        version("negotiateVersion=1&negotiateVersion=1"),
        Err(NON_INTEGER.into())
    );
    assert_eq!(
        version("negotiateVersion=1&NegotiateVersion=0"),
        Err(NON_INTEGER.into())
    );
    assert_eq!(version("negotiateVersion=1,0"), Err(NON_INTEGER.into()));
    assert_eq!(
        version("negotiateVersion=x&negotiateVersion=1"),
        Err(NON_INTEGER.into())
    );
    // Empty values are left out of the joined text.
    assert_eq!(version("negotiateVersion=&negotiateVersion=1"), Ok(1));
    assert_eq!(version("negotiateVersion=1&negotiateVersion="), Ok(1));
    assert_eq!(version("negotiateVersion=%201&negotiateVersion="), Ok(1));
    // A single empty value, or a key without `=`, is present but not an integer.
    assert_eq!(version("negotiateVersion="), Err(NON_INTEGER.into()));
    assert_eq!(version("negotiateVersion"), Err(NON_INTEGER.into()));
    assert_eq!(
        version("negotiateVersion=&negotiateVersion="),
        Err(NON_INTEGER.into())
    );
}

#[test]
fn negotiate_version_uses_int32_try_parse_syntax() {
    for accepted in [
        "%201",
        "1%20",
        "%0A1",
        "%091%09",
        "%0B1",
        "%0C1",
        "%0D1",
        "+1", // `+` is a space
        "%2B1",
        "1%00",
        "1%00%00",
        "1%20%00",
        "1%20%00%00",
        "01",
        "0000000000000000000001",
        "%2B0001%0A%00",
        "2147483647",
        "5",
    ] {
        assert_eq!(
            version(&format!("negotiateVersion={accepted}")),
            Ok(1),
            "{accepted}"
        );
    }
    assert_eq!(version("negotiateVersion=-0"), Ok(0));
    for rejected in [
        "%001",        // NUL only at the end
        "1%00%20",     // white space after the NULs
        "1%00x",       // anything else after them
        "%C2%A01",     // U+00A0 is not ASCII white space
        "1%C2%A0",     //
        "%C2%851",     // nor U+0085
        "-%201",       // nothing between sign and digits
        "%2B%2B1",     // one sign only
        "%2B-1",       //
        "1-",          // no trailing sign
        "1%2B",        //
        "%E2%88%921",  // U+2212 is not a minus sign here
        "%EF%BC%91",   // nor is a full-width digit a digit
        "0x1",         //
        "1_0",         //
        "2147483648",  // outside Int32
        "-2147483649", //
        "%00",         //
    ] {
        assert_eq!(
            version(&format!("negotiateVersion={rejected}")),
            Err(NON_INTEGER.into()),
            "{rejected}"
        );
    }
    assert_eq!(version("negotiateVersion=%20-1"), refused(-1));
    assert_eq!(
        version("negotiateVersion=-2147483648"),
        refused(-2147483648)
    );
}

#[test]
fn negotiate_keys_ignore_ascii_case_only() {
    assert_eq!(version("NEGOTIATEVERSION=1"), Ok(1));
    // U+017F (long s) and U+0131 (dotless i) fold to ASCII letters in Unicode, but the real server
    // does not take these keys for `negotiateVersion`: the request is version 0.
    assert_eq!(version("negotiateVer%C5%BFion=x"), Ok(0));
    assert_eq!(version("negotiateVers%C4%B1on=x"), Ok(0));
}

#[test]
fn use_stateful_reconnect_uses_bool_try_parse_syntax() {
    let stateful = |value: &str| {
        negotiate(
            &format!("negotiateVersion=1&useStatefulReconnect={value}"),
            0,
        )
        .expect("valid request")
        .use_stateful_reconnect
    };
    for yes in [
        "true",
        "tRuE",
        "%20TRUE%20",
        "%C2%A0true",
        "%00true",
        "true%00",
        "true%20%00%20",
        "%0Btrue",
        "%C2%85true",
        "%E2%80%83true",
        "%E2%80%A8true",
        "%00%20%00true%00",
    ] {
        assert!(stateful(yes), "{yes}");
    }
    for no in [
        "1",
        "false",
        "yes",
        "true%00x",
        "true,true",
        "true&useStatefulReconnect=true",
    ] {
        assert!(!stateful(no), "{no}");
    }
    assert!(stateful("&useStatefulReconnect=true"));
    assert!(
        negotiate("USESTATEFULRECONNECT=True", 0)
            .expect("valid")
            .use_stateful_reconnect
    );
}

#[test]
fn minimum_version_above_the_maximum_still_answers_the_maximum() {
    // ASP.NET refuses versions below `MinimumProtocolVersion` and answers higher ones with the
    // version it speaks, whatever the minimum.
    let request = negotiate("negotiateVersion=5", 2).expect("5 >= 2");
    assert_eq!(request.negotiate_version, NegotiateRequest::MAX_VERSION);
    assert_eq!(
        negotiate("negotiateVersion=1", 2).map(|r| r.negotiate_version),
        refused(1)
    );
}

#[test]
fn id_lookup_follows_string_values() {
    let lookup = |query: &str| -> (bool, Option<String>) {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = QueryParam::find(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), "id");
        (
            param.is_null_or_empty(),
            param.value().map(|v| v.into_owned()),
        )
    };
    // Missing ("Connection ID required"): absent, or one empty value.
    assert_eq!(lookup(""), (true, None));
    assert_eq!(lookup("other=1"), (true, None));
    assert_eq!(lookup("id="), (true, Some(String::new())));
    // Two empty values are an (unknown) empty id.
    assert_eq!(lookup("id=&id="), (false, Some(String::new())));
    // Repeated ids are joined: an empty one does not hurt, a second copy does.
    assert_eq!(lookup("id=&id=T"), (false, Some("T".into())));
    assert_eq!(lookup("id=T&id="), (false, Some("T".into())));
    assert_eq!(lookup("iD=&Id=T"), (false, Some("T".into())));
    assert_eq!(lookup("id=T&id=T"), (false, Some("T,T".into())));
    assert_eq!(lookup("id=a&ID=b"), (false, Some("a,b".into())));
    assert_eq!(lookup("ID=T"), (false, Some("T".into())));
    assert!(QueryParam::find([("Id", "")], "id").is_present());
    assert!(!QueryParam::find([("idx", "T")], "id").is_present());
}

#[test]
fn helpers_directly() {
    assert_eq!(parse_dotnet_int32(" \t-42 \r\n\0\0"), Some(-42));
    assert_eq!(parse_dotnet_int32("-2147483648"), Some(i32::MIN));
    assert_eq!(parse_dotnet_int32(""), None);
    assert_eq!(parse_dotnet_int32("-"), None);
    assert_eq!(parse_dotnet_int32("+"), None);
    assert_eq!(parse_dotnet_int32(" "), None);
    assert!(is_dotnet_true("\u{3000}TRUE\0"));
    assert!(!is_dotnet_true("\u{200b}true")); // zero-width space is not white space
    assert!(!is_dotnet_true(""));
}
