//! Tamper-proof tokens of the classic front door: the connection token handed out by
//! `/negotiate` and the groups token sent in envelopes (`G`).
//!
//! Clients never look inside either; they only send back what they got. So the format is ours:
//! `<payload>.<tag>`, both base64url without padding, where the payload is the UTF-8 text and
//! the tag an HMAC-SHA256 over the token's purpose and the payload. The payload is readable by
//! whoever holds the token (the client itself, and any log that records URLs); it holds the
//! connection id, the user name and group names, nothing secret, but nobody can change it
//! without the server's key.
//!
//! Why base64url without padding, when the real server's tokens are standard base64 with
//! `+ / =`: tokens travel in query strings, and a client that forgets to percent-encode one (the
//! classic `+` that arrives as a space) breaks on `+`, `/` and `=`. The URL-safe alphabet needs
//! no encoding at all, so such a token survives; clients that do encode it (jQuery's
//! `encodeURIComponent`, the .NET client) leave it unchanged.
//!
//! Keys are 32 random bytes per server by default, so tokens do not survive a restart (nor do
//! the connections they name). [`TokenProtector::with_keys`] takes a fixed key, and earlier keys
//! that are still accepted, for several servers behind one name or a key rotation.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The length of a key in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// A key of the protector.
pub(crate) type Key = [u8; KEY_LEN];

/// The longest token looked at; longer ones are refused without decoding. (A groups token of a
/// connection in many groups is the longest kind; request size limits bound it anyway.)
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The length of the HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// What a token is for. A token made for one purpose is refused for the other, so a groups
/// token cannot be passed off as a connection token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The connection token: `<connectionId>:<user>`.
    ConnectionToken,
    /// The groups token: `<connectionId>:<JSON array of group names>`.
    Groups,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ConnectionToken => b"signalr-rust classic connection token v1",
            Purpose::Groups => b"signalr-rust classic groups token v1",
        }
    }
}

/// Signs and checks tokens. Cheap to clone (the keys are shared).
#[derive(Clone)]
pub(crate) struct TokenProtector {
    /// The first key signs; every key is accepted.
    keys: Arc<[Key]>,
}

impl fmt::Debug for TokenProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("TokenProtector")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Default for TokenProtector {
    fn default() -> Self {
        TokenProtector::new()
    }
}

/// The parts of a connection token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionToken {
    /// The connection id.
    pub(crate) connection_id: String,
    /// The user name the connection was negotiated for (empty when anonymous).
    pub(crate) user: String,
}

/// The parts of a groups token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupsToken {
    /// The connection the groups belong to.
    pub(crate) connection_id: String,
    /// The group names.
    pub(crate) groups: Vec<String>,
}

impl TokenProtector {
    /// A protector with a fresh random key (from the operating system's generator, through
    /// `rand`'s thread generator).
    pub(crate) fn new() -> Self {
        TokenProtector::with_keys(rand::random(), [])
    }

    /// A protector that signs with `current` and also accepts tokens signed with any of
    /// `previous`.
    pub(crate) fn with_keys(current: Key, previous: impl IntoIterator<Item = Key>) -> Self {
        let keys: Vec<Key> = std::iter::once(current).chain(previous).collect();
        TokenProtector { keys: keys.into() }
    }

    fn mac(key: &Key, purpose: Purpose, payload: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key");
        let label = purpose.label();
        mac.update(&(label.len() as u32).to_be_bytes());
        mac.update(label);
        mac.update(payload);
        mac
    }

    /// The token for `payload`: `<base64url(payload)>.<base64url(tag)>`.
    pub(crate) fn protect(&self, purpose: Purpose, payload: &str) -> String {
        let tag = Self::mac(&self.keys[0], purpose, payload.as_bytes()).finalize();
        let mut token = URL_SAFE_NO_PAD.encode(payload);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.into_bytes(), &mut token);
        token
    }

    /// The payload of `token` when one of the keys made it for `purpose`; `None` for anything
    /// else (another purpose, another key, a changed byte, not a token at all). Tags are compared
    /// in constant time.
    pub(crate) fn unprotect(&self, purpose: Purpose, token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_LEN {
            return None;
        }
        let valid = self
            .keys
            .iter()
            .any(|key| Self::mac(key, purpose, &payload).verify_slice(&tag).is_ok());
        if !valid {
            return None;
        }
        String::from_utf8(payload).ok()
    }

    /// The connection token of `connection_id` for `user` (empty when anonymous).
    pub(crate) fn protect_connection_token(&self, connection_id: &str, user: &str) -> String {
        self.protect(
            Purpose::ConnectionToken,
            &connection_token_payload(connection_id, user),
        )
    }

    /// Checks and reads a connection token.
    pub(crate) fn unprotect_connection_token(&self, token: &str) -> Option<ConnectionToken> {
        let payload = self.unprotect(Purpose::ConnectionToken, token)?;
        let (connection_id, user) = parse_connection_token_payload(&payload)?;
        Some(ConnectionToken {
            connection_id: connection_id.to_owned(),
            user: user.to_owned(),
        })
    }

    /// The groups token of `connection_id` in `groups`.
    pub(crate) fn protect_groups(&self, connection_id: &str, groups: &[String]) -> String {
        self.protect(
            Purpose::Groups,
            &groups_token_payload(connection_id, groups),
        )
    }

    /// Checks and reads a groups token.
    pub(crate) fn unprotect_groups(&self, token: &str) -> Option<GroupsToken> {
        let payload = self.unprotect(Purpose::Groups, token)?;
        let (connection_id, groups) = parse_groups_token_payload(&payload)?;
        Some(GroupsToken {
            connection_id: connection_id.to_owned(),
            groups,
        })
    }
}

/// `<connectionId>:<user>`, the payload of a connection token (as the real server's).
pub(crate) fn connection_token_payload(connection_id: &str, user: &str) -> String {
    format!("{connection_id}:{user}")
}

/// Splits a connection-token payload at its first `:` (connection ids have none; user names
/// may). `None` without a `:` or with an empty connection id.
pub(crate) fn parse_connection_token_payload(payload: &str) -> Option<(&str, &str)> {
    let (connection_id, user) = payload.split_once(':')?;
    (!connection_id.is_empty()).then_some((connection_id, user))
}

/// `<connectionId>:<JSON array of group names>`, the payload of a groups token (as the real
/// server's: `id:["TestHub.g1"]`).
pub(crate) fn groups_token_payload(connection_id: &str, groups: &[String]) -> String {
    // A list of strings always serializes.
    let groups = serde_json::to_string(groups).expect("strings serialize");
    format!("{connection_id}:{groups}")
}

/// Splits a groups-token payload into the connection id and the group names. `None` when it is
/// not `<id>:<JSON array of strings>`.
pub(crate) fn parse_groups_token_payload(payload: &str) -> Option<(&str, Vec<String>)> {
    let (connection_id, groups) = payload.split_once(':')?;
    if connection_id.is_empty() {
        return None;
    }
    let groups: Vec<String> = serde_json::from_str(groups).ok()?;
    Some((connection_id, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "a579f3c4-ea36-40a0-a85c-bea4335400fd";

    fn key(byte: u8) -> Key {
        [byte; KEY_LEN]
    }

    #[test]
    fn tokens_round_trip() {
        let protector = TokenProtector::new();
        for payload in [
            "",
            "x",
            "a579f3c4:",
            "id:user:with:colons",
            "ünï€ødé ✓",
            "a.b.c",
        ] {
            let token = protector.protect(Purpose::ConnectionToken, payload);
            assert_eq!(
                protector
                    .unprotect(Purpose::ConnectionToken, &token)
                    .as_deref(),
                Some(payload)
            );
        }
    }

    #[test]
    fn tokens_need_no_url_encoding() {
        let protector = TokenProtector::new();
        let token = protector.protect_groups(ID, &["TestHub.g1".into(), "a b+c/d=".into()]);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}"
        );
    }

    #[test]
    fn purposes_do_not_mix() {
        let protector = TokenProtector::new();
        let token = protector.protect(Purpose::Groups, "x:[]");
        assert_eq!(protector.unprotect(Purpose::ConnectionToken, &token), None);
        assert!(protector.unprotect(Purpose::Groups, &token).is_some());
        let groups = protector.protect_groups(ID, &[]);
        assert_eq!(protector.unprotect_connection_token(&groups), None);
    }

    #[test]
    fn another_key_or_a_changed_byte_is_refused() {
        let protector = TokenProtector::with_keys(key(1), []);
        let other = TokenProtector::with_keys(key(2), []);
        let token = protector.protect_connection_token(ID, "ann");
        assert_eq!(other.unprotect_connection_token(&token), None);

        // Every single-character change anywhere in the token is refused.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        for i in 0..token.len() {
            for &c in alphabet {
                let mut changed = token.clone().into_bytes();
                if changed[i] == c {
                    continue;
                }
                changed[i] = c;
                let changed = String::from_utf8(changed).expect("ASCII");
                // Base64 without padding can spell the same bytes twice in its last character
                // (unused low bits); only a token that decodes to other bytes must fail.
                let same = protector.unprotect(Purpose::ConnectionToken, &changed);
                if let Some(payload) = same {
                    assert_eq!(payload, connection_token_payload(ID, "ann"), "{changed}");
                }
            }
        }

        // A forged payload with the old tag is refused.
        let (_, tag) = token.split_once('.').expect("a dot");
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(connection_token_payload(ID, "admin"))
        );
        assert_eq!(protector.unprotect_connection_token(&forged), None);
    }

    #[test]
    fn garbage_is_refused() {
        let protector = TokenProtector::new();
        let token = protector.protect_connection_token(ID, "");
        let (payload, tag) = token.split_once('.').expect("a dot");
        for bad in [
            String::new(),
            ".".into(),
            "x".into(),
            payload.to_owned(),
            format!("{payload}."),
            format!(".{tag}"),
            format!("{payload}.{tag}."),
            format!("{payload}.{tag}.{tag}"),
            format!("{payload}.{}", &tag[..tag.len() - 2]),
            format!("{payload}.{tag}AA"),
            format!("{payload}=.{tag}"),
            format!("{payload} .{tag}"),
            token.replace('-', "+").replace('_', "/") + "+",
            format!("{}.{tag}", "A".repeat(MAX_TOKEN_LEN)),
            "%%%.%%%".into(),
        ] {
            assert_eq!(
                protector.unprotect(Purpose::ConnectionToken, &bad),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn non_utf8_payloads_are_refused() {
        // A correctly signed payload that is not UTF-8 cannot come from `protect`, but must not
        // be taken either.
        let protector = TokenProtector::with_keys(key(3), []);
        let payload = [0xff, 0xfe, b':'];
        let tag = TokenProtector::mac(&key(3), Purpose::ConnectionToken, &payload).finalize();
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag.into_bytes())
        );
        assert_eq!(protector.unprotect(Purpose::ConnectionToken, &token), None);
    }

    #[test]
    fn rotated_keys_still_accept_old_tokens() {
        let old = TokenProtector::with_keys(key(1), []);
        let rotated = TokenProtector::with_keys(key(2), [key(1)]);
        let token = old.protect_connection_token(ID, "ann");
        assert_eq!(
            rotated.unprotect_connection_token(&token),
            Some(ConnectionToken {
                connection_id: ID.into(),
                user: "ann".into()
            })
        );
        // New tokens are signed with the new key only.
        let fresh = rotated.protect_connection_token(ID, "ann");
        assert_ne!(fresh, token);
        assert_eq!(old.unprotect_connection_token(&fresh), None);
        assert!(
            TokenProtector::with_keys(key(2), [])
                .unprotect_connection_token(&fresh)
                .is_some()
        );
    }

    #[test]
    fn random_keys_differ() {
        let a = TokenProtector::new();
        let b = TokenProtector::new();
        let token = a.protect_connection_token(ID, "");
        assert_eq!(b.unprotect_connection_token(&token), None);
        assert_eq!(format!("{a:?}"), "TokenProtector { keys: 1 }");
    }

    #[test]
    fn connection_token_payloads() {
        assert_eq!(connection_token_payload(ID, ""), format!("{ID}:"));
        assert_eq!(
            parse_connection_token_payload(&format!("{ID}:")),
            Some((ID, ""))
        );
        assert_eq!(
            parse_connection_token_payload("id:a:b"),
            Some(("id", "a:b"))
        );
        assert_eq!(parse_connection_token_payload("no colon"), None);
        assert_eq!(parse_connection_token_payload(":user"), None);
        let protector = TokenProtector::new();
        let token = protector.protect_connection_token(ID, "DOMAIN\\ann:x");
        assert_eq!(
            protector.unprotect_connection_token(&token),
            Some(ConnectionToken {
                connection_id: ID.into(),
                user: "DOMAIN\\ann:x".into()
            })
        );
    }

    #[test]
    fn groups_token_payloads() {
        let groups: Vec<String> = vec!["TestHub.g1".into(), "Hub.\"quoted\", comma".into()];
        assert_eq!(groups_token_payload(ID, &[]), format!("{ID}:[]"));
        assert_eq!(
            groups_token_payload(ID, &groups[..1]),
            format!("{ID}:[\"TestHub.g1\"]")
        );
        let payload = groups_token_payload(ID, &groups);
        assert_eq!(
            parse_groups_token_payload(&payload),
            Some((ID, groups.clone()))
        );
        assert_eq!(parse_groups_token_payload("id:{}"), None);
        assert_eq!(parse_groups_token_payload("id:[1]"), None);
        assert_eq!(parse_groups_token_payload("id:"), None);
        assert_eq!(parse_groups_token_payload(":[]"), None);
        assert_eq!(parse_groups_token_payload("[]"), None);

        let protector = TokenProtector::new();
        let token = protector.protect_groups(ID, &groups);
        assert_eq!(
            protector.unprotect_groups(&token),
            Some(GroupsToken {
                connection_id: ID.into(),
                groups
            })
        );
    }
}
