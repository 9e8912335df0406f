//! Nothing to use: this package depends on the `signalr` facade crate alone, the way an
//! application does, and checks that everything works through it.
//!
//! - The repository README's Rust examples compile here as doctests (`cargo test --doc`), so the
//!   paths they show (`signalr::Hub`, `signalr::client::...`) are the ones users write.
//! - `tests/facade.rs` serves a `#[signalr::hub]` with a `#[signalr::hub_client]` and calls it
//!   with `signalr::client`.

/// The repository README's Rust examples, compiled as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
