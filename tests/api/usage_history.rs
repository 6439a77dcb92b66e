//! `GET /usage`'s `history` (executions per UTC hour and day) and the retention that prunes
//! it, on whichever store the binary's `backend` gives (sled here, PostgreSQL in `cluster`).

use pyexec::keys::{Env, KeyId, KeyStore, NewKey, UsageRetention};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::helpers::{TestApp, json, spawn_app};

const HOUR: time::Duration = time::Duration::HOUR;
const DAY: time::Duration = time::Duration::DAY;

fn hour_start(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap()
}

fn day_start(at: OffsetDateTime) -> OffsetDateTime {
    hour_start(at).replace_hour(0).unwrap()
}

/// `(start, executions)` of every bucket of a JSON window.
fn buckets(window: &Value) -> Vec<(OffsetDateTime, u64)> {
    window
        .as_array()
        .unwrap()
        .iter()
        .map(|bucket| {
            let start = bucket["start"].as_str().unwrap();
            (
                OffsetDateTime::parse(start, &Rfc3339).unwrap(),
                bucket["executions"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn total(buckets: &[pyexec::keys::UsageBucket]) -> u64 {
    buckets.iter().map(|b| b.executions).sum()
}

async fn history_of(app: &TestApp, key: &str) -> Value {
    let (status, body) = json(app.get("/usage", Some(key)).await).await;
    assert_eq!(status, 200, "{body}");
    body["history"].clone()
}

async fn run_code(app: &TestApp, key: &str) -> u16 {
    app.execute(key, r#"{"code": "result = 1"}"#)
        .await
        .status()
        .as_u16()
}

fn id_of(key: &str) -> KeyId {
    KeyId::parse(&key[..16]).unwrap()
}

#[tokio::test]
async fn history_counts_exactly_the_executions_charged() {
    let app = spawn_app().await;
    let key = app.key(5, 1000).await;
    let before = OffsetDateTime::now_utc();
    for _ in 0..5 {
        assert_eq!(run_code(&app, &key).await, 200);
    }
    // Refused requests are not charged, so not counted.
    assert_eq!(run_code(&app, &key).await, 429);
    assert_eq!(app.execute(&key, r#"{"code": 1}"#).await.status(), 422);
    let history = history_of(&app, &key).await;
    let after = OffsetDateTime::now_utc();

    assert_eq!(history["retention_days"], 30);
    let hourly = buckets(&history["hourly"]);
    let daily = buckets(&history["daily"]);
    assert_eq!((hourly.len(), daily.len()), (24, 30));
    assert_eq!(hourly.iter().map(|b| b.1).sum::<u64>(), 5, "{history}");
    assert_eq!(daily.iter().map(|b| b.1).sum::<u64>(), 5, "{history}");
    for (window, step) in [(&hourly, HOUR), (&daily, DAY)] {
        for pair in window.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, step, "consecutive, oldest first");
        }
        let (last, _) = window[window.len() - 1];
        assert!(
            last <= after && before < last + step,
            "ends with the current bucket"
        );
    }
    assert!(hourly.iter().all(|(start, _)| *start == hour_start(*start)));
    assert!(daily.iter().all(|(start, _)| *start == day_start(*start)));
}

#[tokio::test]
async fn a_key_sees_only_its_own_history() {
    let app = spawn_app().await;
    let (busy, idle) = (app.roomy_key().await, app.roomy_key().await);
    for _ in 0..3 {
        assert_eq!(run_code(&app, &busy).await, 200);
    }
    assert_eq!(run_code(&app, &idle).await, 200);
    for (key, executions) in [(&busy, 3), (&idle, 1)] {
        let history = history_of(&app, key).await;
        let hourly = buckets(&history["hourly"]);
        assert_eq!(hourly.iter().map(|b| b.1).sum::<u64>(), executions);
    }
}

/// Two executions in one hour, looked at from later and later instants: they move back one
/// bucket per hour (and per day), and leave each window exactly when it no longer covers them.
#[tokio::test]
async fn executions_move_through_the_buckets_as_time_passes() {
    let app = spawn_app().await;
    let (key, charged) = loop {
        let key = app.roomy_key().await;
        let before = OffsetDateTime::now_utc();
        assert_eq!(run_code(&app, &key).await, 200);
        assert_eq!(run_code(&app, &key).await, 200);
        let after = OffsetDateTime::now_utc();
        // Retry the rare pair that straddles an hour.
        if hour_start(before) == hour_start(after) {
            break (key, hour_start(after));
        }
    };
    let id = id_of(&key);
    let at = |at| {
        let keys = app.keys.clone();
        let id = id.clone();
        async move { keys.usage_history(&id, at).await.unwrap() }
    };

    let now = at(charged + 30 * time::Duration::MINUTE).await;
    assert_eq!(
        (now.hourly[23].start, now.hourly[23].executions),
        (charged, 2)
    );
    assert_eq!(now.daily[29].executions, 2);
    assert_eq!(at(charged + HOUR).await.hourly[22].executions, 2);
    let oldest_hour = at(charged + DAY - time::Duration::NANOSECOND).await;
    assert_eq!(
        (
            oldest_hour.hourly[0].start,
            oldest_hour.hourly[0].executions
        ),
        (charged, 2)
    );
    let next_day = at(charged + DAY).await;
    assert_eq!(total(&next_day.hourly), 0);
    assert_eq!(total(&next_day.daily), 2);

    let day = day_start(charged);
    let oldest_day = at(day + 30 * DAY - time::Duration::NANOSECOND).await;
    assert_eq!(
        (oldest_day.daily[0].start, oldest_day.daily[0].executions),
        (day, 2)
    );
    assert_eq!(total(&at(day + 30 * DAY).await.daily), 0);
}

/// Pruning deletes usage past the retention and keeps the rest. A store of its own: pruning
/// touches every key's records.
#[tokio::test]
async fn pruning_deletes_usage_past_the_retention_and_keeps_the_rest() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = crate::backend::private_key_store(data_dir.path()).await;
    let (key, _) = store
        .create(NewKey {
            name: "retention".into(),
            description: "usage history test".into(),
            env: Env::Test,
            executions_limit: 100,
            rate_limit_per_minute: 1000,
            fuel_limit: None,
            max_sessions: None,
        })
        .await
        .unwrap();
    let caller = store.authenticate(key.expose_secret()).await.unwrap();
    for _ in 0..3 {
        store.admit(&caller).await.unwrap();
    }
    store.commit().await.unwrap();
    let charged = OffsetDateTime::now_utc();
    let counted = |store: KeyStore| {
        let id = caller.record.id.clone();
        async move { total(&store.usage_history(&id, charged).await.unwrap().hourly) }
    };
    assert_eq!(counted(store.clone()).await, 3);

    // Default retention, 30 days: everything is 29 days old at most.
    store.prune_usage(charged + 29 * DAY).await.unwrap();
    assert_eq!(counted(store.clone()).await, 3, "kept within the retention");

    let week = store.clone().with_usage_retention(UsageRetention::days(7));
    assert_eq!(
        week.usage_history(&caller.record.id, charged)
            .await
            .unwrap()
            .daily
            .len(),
        7
    );
    // The charges' hour has not ended a week before this instant: kept.
    week.prune_usage(hour_start(charged) + 7 * DAY + time::Duration::MINUTE)
        .await
        .unwrap();
    assert_eq!(
        counted(store.clone()).await,
        3,
        "a partly retained hour is kept"
    );
    let pruned = week.prune_usage(charged + 7 * DAY + HOUR).await.unwrap();
    assert!(pruned >= 1, "{pruned}");
    assert_eq!(
        counted(store.clone()).await,
        0,
        "deleted past the retention"
    );
    // Charging goes on after pruning, and is counted again.
    store.admit(&caller).await.unwrap();
    store.commit().await.unwrap();
    let now = OffsetDateTime::now_utc();
    let history = store.usage_history(&caller.record.id, now).await.unwrap();
    assert_eq!(total(&history.hourly), 1);
}
