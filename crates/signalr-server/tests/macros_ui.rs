//! Compile errors of `#[hub]` and `#[hub_client]` (tests/ui/*.rs with their expected .stderr).
//!
//! Regenerate the expected output after a deliberate change with
//! `TRYBUILD=overwrite cargo test -p signalr-server --test macros_ui`.

#[test]
fn macro_misuse_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
