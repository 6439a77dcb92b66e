//! What is stored per key: the public [`KeyRecord`], the [`NewKey`] request that creates one,
//! and the on-disk [`StoredKey`] (record + hash) with its JSON encoding. Owns validation of
//! admin input; may not touch sled.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::StoreError;
use super::token::{ApiKey, Env, KeyHash, KeyId};

/// The rate limit a key gets when none is given.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 60;
/// Longest accepted key name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// Everything about a key except its secret and its hash. Safe to print, log and send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public ID, the display prefix of the key (`sk_test_AbCd1234`).
    pub id: KeyId,
    pub name: String,
    pub description: String,
    pub env: Env,
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
    /// Total executions this key may ever run (until reset or changed).
    pub executions_limit: u64,
    /// Executions charged so far.
    pub executions_used: u64,
    pub rate_limit_per_minute: u32,
    /// Per-execution fuel, overriding the server default when set.
    pub fuel_limit: Option<u64>,
    /// Sessions the key may have open at once, overriding the server's `--sessions-per-key`
    /// when set (0: none). Absent from records written before sessions.
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// Set once, when the key is revoked; a revoked key never authenticates again.
    #[serde(with = "rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl KeyRecord {
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// `executions_limit − executions_used`, never negative.
    pub fn executions_left(&self) -> u64 {
        self.executions_limit.saturating_sub(self.executions_used)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// The fields an admin chooses when creating a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    pub name: String,
    pub description: String,
    pub env: Env,
    pub executions_limit: u64,
    pub rate_limit_per_minute: u32,
    pub fuel_limit: Option<u64>,
    /// See [`KeyRecord::max_sessions`].
    #[serde(default)]
    pub max_sessions: Option<u32>,
}

impl NewKey {
    /// Draws a fresh key (OS randomness) and the record a store keeps for it: its SHA-256,
    /// never the plaintext, which only the returned [`ApiKey`] holds.
    pub(crate) fn draw(&self) -> Result<(ApiKey, StoredKey), StoreError> {
        let key = ApiKey::generate(self.env).map_err(StoreError::Entropy)?;
        let stored = StoredKey {
            hash: key.hash(),
            record: KeyRecord {
                id: key.id(),
                name: self.name.clone(),
                description: self.description.clone(),
                env: self.env,
                created_at: now(),
                executions_limit: self.executions_limit,
                executions_used: 0,
                rate_limit_per_minute: self.rate_limit_per_minute,
                fuel_limit: self.fuel_limit,
                max_sessions: self.max_sessions,
                revoked_at: None,
            },
        };
        Ok((key, stored))
    }

    /// Rejects an empty or over-long name, an over-long description, a zero rate limit and a
    /// zero fuel limit. The same checks run whether the request came from the CLI directly or
    /// over the control socket.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |field, reason: &str| {
            Err(StoreError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.name.trim().is_empty() {
            return invalid("name", "must not be empty");
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            return invalid(
                "name",
                &format!("must be at most {MAX_NAME_CHARS} characters"),
            );
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return invalid(
                "description",
                &format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        }
        if self.rate_limit_per_minute == 0 {
            return invalid("rate limit per minute", "must be at least 1");
        }
        if self.fuel_limit == Some(0) {
            return invalid("fuel limit", "must be at least 1");
        }
        Ok(())
    }
}

/// The time now to the microsecond, the resolution of PostgreSQL's `timestamptz`: a key's
/// timestamps then read the same from either store, before and after `pyexec store copy`
/// (and `keys add` shows what PostgreSQL keeps).
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("whole microseconds are a valid nanosecond count")
}

/// One value in the `keys` tree: the record plus the SHA-256 of the plaintext key, as JSON
/// `{"hash":"<64 hex>","record":{…}}`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    pub(crate) hash: KeyHash,
    pub(crate) record: KeyRecord,
}

impl StoredKey {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("StoredKey serialises to JSON infallibly")
    }

    pub(crate) fn decode(id: &[u8], bytes: &[u8]) -> Result<StoredKey, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            key: String::from_utf8_lossy(id).into_owned(),
            source,
        })
    }
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("hash", &self.hash)
            .field("record", &self.record)
            .finish()
    }
}

/// RFC 3339 timestamps in JSON (the `time` crate's serde feature is not enabled).
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(crate) fn format(t: &OffsetDateTime) -> String {
        t.format(&Rfc3339)
            .expect("timestamps from now_utc() are RFC 3339 formattable")
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::token::ApiKey;

    fn new_key() -> NewKey {
        NewKey {
            name: "ci".into(),
            description: "nightly".into(),
            env: Env::Test,
            executions_limit: 10,
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
            fuel_limit: None,
            max_sessions: None,
        }
    }

    #[test]
    fn validation_rejects_each_bad_field() {
        assert!(new_key().validate().is_ok());
        type Case = (fn(&mut NewKey), &'static str);
        let cases: [Case; 6] = [
            (|k| k.name = String::new(), "name"),
            (|k| k.name = "  \t".into(), "name"),
            (|k| k.name = "x".repeat(MAX_NAME_CHARS + 1), "name"),
            (
                |k| k.description = "x".repeat(MAX_DESCRIPTION_CHARS + 1),
                "description",
            ),
            (|k| k.rate_limit_per_minute = 0, "rate limit per minute"),
            (|k| k.fuel_limit = Some(0), "fuel limit"),
        ];
        for (mutate, expected_field) in cases {
            let mut k = new_key();
            mutate(&mut k);
            match k.validate() {
                Err(StoreError::Invalid { field, .. }) => assert_eq!(field, expected_field),
                other => panic!("expected Invalid({expected_field}), got {other:?}"),
            }
        }
    }

    #[test]
    fn executions_left_never_goes_negative() {
        let key = ApiKey::generate(Env::Test).unwrap();
        let mut r = KeyRecord {
            id: key.id(),
            name: "n".into(),
            description: String::new(),
            env: Env::Test,
            created_at: OffsetDateTime::now_utc(),
            executions_limit: 5,
            executions_used: 3,
            rate_limit_per_minute: 60,
            fuel_limit: None,
            max_sessions: None,
            revoked_at: None,
        };
        assert_eq!(r.executions_left(), 2);
        r.executions_used = 9;
        assert_eq!(r.executions_left(), 0);
    }

    #[test]
    fn stored_key_round_trips_and_reports_corruption() {
        let key = ApiKey::generate(Env::Prod).unwrap();
        let stored = StoredKey {
            hash: key.hash(),
            record: KeyRecord {
                id: key.id(),
                name: "n".into(),
                description: "d".into(),
                env: Env::Prod,
                created_at: OffsetDateTime::now_utc(),
                executions_limit: 5,
                executions_used: 3,
                rate_limit_per_minute: 7,
                fuel_limit: Some(1_000),
                max_sessions: None,
                revoked_at: Some(OffsetDateTime::now_utc()),
            },
        };
        let bytes = stored.encode();
        let back = StoredKey::decode(b"id", &bytes).unwrap();
        assert_eq!(back.record, stored.record);
        assert!(back.hash.ct_eq(&stored.hash));
        assert!(!format!("{stored:?}").contains(&key.hash().to_hex()));

        match StoredKey::decode(b"sk_test_AbCd1234", b"{not json") {
            Err(e @ StoreError::Corrupt { .. }) => {
                assert!(e.to_string().contains("sk_test_AbCd1234"))
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
