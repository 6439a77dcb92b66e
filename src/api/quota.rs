//! A key's budgets as the client sees them: the `RateLimit-*` headers (IETF draft names) and
//! `X-Executions-Left` on every authenticated response, and the per-key cap on executions in
//! flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::error::{ApiError, whole_seconds};
use crate::keys::{Caller, KeyId, RateLimitStatus};

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static EXECUTIONS_LEFT: HeaderName = HeaderName::from_static("x-executions-left");

/// What the quota headers of a response say.
pub struct QuotaHeaders {
    pub rate: RateLimitStatus,
    pub executions_left: u64,
}

impl QuotaHeaders {
    /// The key's budgets as they stood when it authenticated, without consuming anything.
    pub fn peek(caller: &Caller) -> Self {
        Self {
            rate: caller.rate,
            executions_left: caller.record.executions_left(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(self.rate.limit));
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.rate.remaining),
        );
        headers.insert(
            RATELIMIT_RESET.clone(),
            HeaderValue::from(whole_seconds(self.rate.reset_after)),
        );
        headers.insert(
            EXECUTIONS_LEFT.clone(),
            HeaderValue::from(self.executions_left),
        );
    }
}

/// Caps the executions one key has in flight (queued or running), so that one tenant's burst
/// cannot fill the whole queue.
#[derive(Clone)]
pub struct KeyConcurrency {
    limit: usize,
    in_flight: Arc<Mutex<HashMap<KeyId, usize>>>,
}

/// One execution in flight for a key; dropping it frees the place.
pub struct KeySlot {
    owner: KeyConcurrency,
    key: KeyId,
}

impl KeyConcurrency {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            in_flight: Arc::default(),
        }
    }

    pub fn acquire(&self, key: &KeyId) -> Result<KeySlot, ApiError> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = in_flight.entry(key.clone()).or_default();
        if *count >= self.limit {
            return Err(ApiError::TooManyConcurrent { limit: self.limit });
        }
        *count += 1;
        Ok(KeySlot {
            owner: self.clone(),
            key: key.clone(),
        })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut in_flight = self
            .owner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}
