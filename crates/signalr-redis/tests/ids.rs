//! Server names and client-result invocation ids.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use signalr_redis::protocol::{ServerName, new_invocation_id};

/// Splits `{machine}_{32 lowercase hex}`, checking the random part.
fn machine_part(name: &ServerName) -> &str {
    let (machine, random) = name.as_str().rsplit_once('_').unwrap();
    assert_eq!(random.len(), 32, "{name}");
    assert!(
        random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{name}"
    );
    machine
}

#[test]
fn generated_server_names_have_the_aspnet_shape() {
    let name = ServerName::generate();
    let machine = machine_part(&name);
    assert!(!machine.is_empty() && machine.len() <= 63, "{name}");
    assert!(
        machine
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
        "{name}"
    );
    assert_eq!(name.to_string(), name.as_str());
    assert_eq!(name.as_ref() as &str, name.as_str());
    assert_eq!(String::from(name.clone()), name.clone().into_string());
}

#[test]
fn server_names_are_unique() {
    let names: HashSet<ServerName> = (0..1000).map(|_| ServerName::generate()).collect();
    assert_eq!(names.len(), 1000);
}

#[test]
fn machine_names_are_sanitised() {
    let cases = [
        ("vm", "vm"),
        ("web-1.example", "web-1.example"),
        ("my_box", "my_box"),
        // Whitespace and Redis pattern characters go.
        ("my host*?[x]\\ \t\n", "myhostx"),
        ("", "rust"),
        ("*?[ ]", "rust"),
        ("héllo", "hllo"),
    ];
    for (machine, expected) in cases {
        let name = ServerName::with_machine_name(machine);
        assert_eq!(machine_part(&name), expected, "{machine:?}");
    }
    let long = "a".repeat(300);
    let name = ServerName::with_machine_name(&long);
    assert_eq!(machine_part(&name), "a".repeat(63));
    assert_eq!(name.as_str().len(), 63 + 1 + 32);
}

#[test]
fn invocation_ids_are_22_chars_of_standard_base64() {
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let id = new_invocation_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "{id}"
        );
        let bytes = STANDARD.decode(format!("{id}==")).unwrap();
        assert_eq!(bytes.len(), 16);
        assert!(seen.insert(id));
    }
    // The recorded id has the same shape.
    let recorded = "pL4706asqUGOvBmtB+kzJQ";
    assert_eq!(STANDARD.decode(format!("{recorded}==")).unwrap().len(), 16);
}
