//! API key material: the `sk_test_…`/`sk_prod_…` format, generation from OS entropy, SHA-256
//! hashing, the public key ID, and the `KEY` references accepted by the admin commands.
//! Owns every place a plaintext key exists in memory; may not touch sled or do I/O.
//!
//! A key is `sk_<env>_` + 8 + 32 base62 characters, e.g.
//! `sk_test_AbCd1234` `0123456789abcdefghijABCDEFGHIJ01`. The first 16 characters are the
//! key's public **ID** (display prefix): shown by `list`, used as the database key and safe to
//! log. The remaining 32 characters (≈190 bits from the OS RNG) are the secret; only
//! `SHA-256(whole key)` is stored.

use std::fmt;
use std::str::FromStr;

use rand::TryRng;
use rand::rngs::SysRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `sk_test_` / `sk_prod_`.
const ENV_PREFIX_LEN: usize = 8;
/// Random characters in the public part of the ID (≈47.6 bits; collisions are re-drawn).
const ID_RANDOM_CHARS: usize = 8;
/// Random characters that are never stored or shown after creation (≈190.5 bits).
const SECRET_CHARS: usize = 32;
/// Length of a key ID such as `sk_test_AbCd1234`.
pub const KEY_ID_LEN: usize = ENV_PREFIX_LEN + ID_RANDOM_CHARS;
/// Length of a full plaintext key.
pub const API_KEY_LEN: usize = KEY_ID_LEN + SECRET_CHARS;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Which deployment a key belongs to. Test and prod keys are independent records with their
/// own quotas; the environment is also visible in the key's prefix.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// Keys for testing and development (`sk_test_…`).
    Test,
    /// Keys for production traffic (`sk_prod_…`).
    Prod,
}

impl Env {
    /// `test` or `prod`.
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Test => "test",
            Env::Prod => "prod",
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            Env::Test => "sk_test_",
            Env::Prod => "sk_prod_",
        }
    }

    fn of_prefix(s: &str) -> Option<Env> {
        [Env::Test, Env::Prod]
            .into_iter()
            .find(|env| s.starts_with(env.key_prefix()))
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The public identifier of a key: its first 16 characters, e.g. `sk_test_AbCd1234`.
/// Not a secret; safe to print and log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Parses `sk_test_XXXXXXXX` / `sk_prod_XXXXXXXX`.
    pub fn parse(s: &str) -> Option<KeyId> {
        (s.len() == KEY_ID_LEN && Env::of_prefix(s).is_some() && is_base62(&s[ENV_PREFIX_LEN..]))
            .then(|| KeyId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The environment encoded in the ID's prefix.
    pub fn env(&self) -> Env {
        Env::of_prefix(&self.0).expect("KeyId is validated on construction")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyId {
    type Error = String;

    fn try_from(s: String) -> Result<KeyId, String> {
        KeyId::parse(&s).ok_or_else(|| format!("malformed key ID {:?}", shown_prefix(&s)))
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

/// A plaintext API key. It exists only at creation (to be shown once) and while a presented
/// key is being checked. `Debug` shows the public ID only; there is no `Display` and no
/// `Serialize`, so printing the secret takes an explicit [`ApiKey::expose_secret`].
pub struct ApiKey(String);

impl ApiKey {
    /// Draws a new key from the operating system's RNG.
    pub(crate) fn generate(env: Env) -> Result<ApiKey, rand::rngs::SysError> {
        let mut key = String::with_capacity(API_KEY_LEN);
        key.push_str(env.key_prefix());
        let mut buf = [0u8; 64];
        while key.len() < API_KEY_LEN {
            SysRng.try_fill_bytes(&mut buf)?;
            // Rejection sampling: 248 = 4 × 62, so accepted bytes are uniform modulo 62.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if key.len() == API_KEY_LEN {
                    break;
                }
                key.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
        Ok(ApiKey(key))
    }

    /// Checks the format (`sk_test_`/`sk_prod_` + 40 base62 characters); says nothing about
    /// whether the key exists.
    pub fn parse(s: &str) -> Option<ApiKey> {
        (s.len() == API_KEY_LEN && Env::of_prefix(s).is_some() && is_base62(&s[ENV_PREFIX_LEN..]))
            .then(|| ApiKey(s.to_owned()))
    }

    /// The plaintext. Call it only to hand the key to its owner, once, at creation.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The public ID (display prefix) of this key.
    pub fn id(&self) -> KeyId {
        KeyId(self.0[..KEY_ID_LEN].to_owned())
    }

    pub fn env(&self) -> Env {
        self.id().env()
    }

    pub(crate) fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id().as_str())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a plaintext key: what the store keeps. Compared in constant time; `Debug`
/// hides it; stored as lowercase hex.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyHash([u8; 32]);

impl KeyHash {
    pub(crate) fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The 32 bytes, as the PostgreSQL store keeps them.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A hash read back from the PostgreSQL store; `None` unless exactly 32 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<KeyHash> {
        bytes.try_into().ok().map(KeyHash)
    }

    #[cfg(test)]
    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

impl Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyHash, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(KeyHash(out))
    }
}

/// How an admin names a key on the command line: its public ID (`sk_test_AbCd1234`, as
/// shown by `list`) or the full plaintext key (hashed and checked against the stored hash).
///
/// `Display` and `Debug` show the ID only. The wire form used on the control socket is the
/// string the admin typed.
pub enum KeyRef {
    Id(KeyId),
    Key(ApiKey),
}

impl KeyRef {
    /// The ID the reference points at (for a plaintext key, its prefix; the secret part is
    /// still to be checked).
    pub fn id(&self) -> KeyId {
        match self {
            KeyRef::Id(id) => id.clone(),
            KeyRef::Key(key) => key.id(),
        }
    }

    /// The full string as typed, for the control socket.
    fn wire(&self) -> &str {
        match self {
            KeyRef::Id(id) => id.as_str(),
            KeyRef::Key(key) => key.expose_secret(),
        }
    }
}

impl FromStr for KeyRef {
    type Err = InvalidKeyRef;

    fn from_str(s: &str) -> Result<KeyRef, InvalidKeyRef> {
        if let Some(id) = KeyId::parse(s) {
            Ok(KeyRef::Id(id))
        } else if let Some(key) = ApiKey::parse(s) {
            Ok(KeyRef::Key(key))
        } else {
            Err(InvalidKeyRef {
                shown: shown_prefix(s),
            })
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Id(id) => write!(f, "{id}"),
            KeyRef::Key(key) => write!(f, "{}…", key.id()),
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Id(id) => f.debug_tuple("Id").field(&id.as_str()).finish(),
            KeyRef::Key(key) => f.debug_tuple("Key").field(key).finish(),
        }
    }
}

impl Serialize for KeyRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.wire())
    }
}

impl<'de> Deserialize<'de> for KeyRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyRef, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A `KEY` argument that is neither a key ID nor a well-formed key. Its message repeats at
/// most the first 16 characters of the input, so a mistyped secret is not echoed.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{shown}` is not an API key or key ID: expected a key ID such as sk_test_AbCd1234 \
     (as shown by `pyexec keys list`) or a full {API_KEY_LEN}-character key"
)]
pub struct InvalidKeyRef {
    shown: String,
}

/// At most the ID-length prefix of untrusted input, with an ellipsis if cut.
fn shown_prefix(s: &str) -> String {
    let mut shown: String = s.chars().take(KEY_ID_LEN).collect();
    if shown.len() < s.len() {
        shown.push('…');
    }
    shown.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_format() {
        for env in [Env::Test, Env::Prod] {
            let key = ApiKey::generate(env).unwrap();
            let s = key.expose_secret();
            assert_eq!(s.len(), API_KEY_LEN);
            assert!(s.starts_with(&format!("sk_{env}_")));
            assert!(is_base62(&s[ENV_PREFIX_LEN..]));
            assert_eq!(key.env(), env);
            assert_eq!(key.id().as_str(), &s[..KEY_ID_LEN]);
            assert!(ApiKey::parse(s).is_some());
            assert!(KeyId::parse(key.id().as_str()).is_some());
        }
    }

    #[test]
    fn generated_keys_differ_and_use_the_whole_alphabet() {
        let keys: Vec<String> = (0..200)
            .map(|_| ApiKey::generate(Env::Test).unwrap().0)
            .collect();
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        let seen: std::collections::HashSet<u8> = keys
            .iter()
            .flat_map(|k| k.as_bytes()[ENV_PREFIX_LEN..].to_vec())
            .collect();
        assert_eq!(seen.len(), 62, "every base62 digit appears in 8000 draws");
    }

    #[test]
    fn debug_and_display_hide_the_secret() {
        let key = ApiKey::generate(Env::Prod).unwrap();
        let secret = &key.expose_secret()[KEY_ID_LEN..];
        let hash = key.hash();
        let key_ref: KeyRef = key.expose_secret().parse().unwrap();
        for shown in [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{hash:?}"),
            format!("{key_ref:?}"),
            format!("{key_ref}"),
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(&hash.to_hex()), "{shown}");
        }
        assert!(format!("{key:?}").contains(key.id().as_str()));
        assert_eq!(format!("{key_ref}"), format!("{}…", key.id()));
    }

    #[test]
    fn hash_is_sha256_of_the_whole_key_and_compares_equal_only_to_itself() {
        let a = ApiKey::generate(Env::Test).unwrap();
        let b = ApiKey::generate(Env::Test).unwrap();
        assert_eq!(
            a.hash().to_hex(),
            hex::encode(Sha256::digest(a.expose_secret()))
        );
        assert!(a.hash().ct_eq(&a.hash()));
        assert!(!a.hash().ct_eq(&b.hash()));
        let json = serde_json::to_string(&a.hash()).unwrap();
        let back: KeyHash = serde_json::from_str(&json).unwrap();
        assert!(back.ct_eq(&a.hash()));
    }

    #[test]
    fn key_refs_accept_ids_and_full_keys_only() {
        let key = ApiKey::generate(Env::Test).unwrap();
        assert!(matches!(
            key.id().as_str().parse::<KeyRef>(),
            Ok(KeyRef::Id(id)) if id == key.id()
        ));
        assert!(matches!(
            key.expose_secret().parse::<KeyRef>(),
            Ok(KeyRef::Key(k)) if k.id() == key.id()
        ));
        for bad in [
            "",
            "sk_test_",
            "sk_live_AbCd1234",
            "sk_test_AbCd123",
            "sk_test_AbCd1234x",
            "sk_test_AbCd-234",
            "sk_prod_4a5b6c7d8e9f",
        ] {
            assert!(bad.parse::<KeyRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_key_ref_message_does_not_echo_a_mistyped_secret() {
        let key = ApiKey::generate(Env::Test).unwrap();
        let typo = format!("{}!", key.expose_secret());
        let err = typo.parse::<KeyRef>().unwrap_err().to_string();
        assert!(err.contains(key.id().as_str()), "{err}");
        assert!(!err.contains(&key.expose_secret()[KEY_ID_LEN..]), "{err}");
    }

    #[test]
    fn key_ref_wire_form_round_trips() {
        let key = ApiKey::generate(Env::Prod).unwrap();
        for s in [key.expose_secret().to_owned(), key.id().to_string()] {
            let r: KeyRef = s.parse().unwrap();
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            let back: KeyRef = serde_json::from_str(&json).unwrap();
            assert_eq!(back.wire(), s);
        }
        assert!(serde_json::from_str::<KeyRef>("\"nope\"").is_err());
        assert!(serde_json::from_str::<KeyId>("\"nope\"").is_err());
    }
}
