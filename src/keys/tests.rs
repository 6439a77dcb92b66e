//! Tests of the key store as a whole: races, durability, storage and logging hygiene, the
//! control socket. Unit tests of single parts live next to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use super::sled::{Modify, OpenOptions};
use super::*;
use crate::clock::ManualClock;

fn new_key(env: Env, executions_limit: u64) -> NewKey {
    NewKey {
        name: "ci".into(),
        description: "nightly builds".into(),
        env,
        executions_limit,
        rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
        fuel_limit: None,
        max_sessions: None,
    }
}

/// Opens the store, waiting out a lock that a handle dropped just before may still hold:
/// sled's background threads let go of the lock file a moment after the last handle is
/// dropped (CI saw `Locked` on the open right after a `drop`).
fn open(dir: &Path) -> SledStore {
    SledStore::open_waiting(dir, Duration::from_secs(10)).unwrap()
}

fn id_ref(record: &KeyRecord) -> KeyRef {
    KeyRef::Id(record.id.clone())
}

fn key_ref(key: &ApiKey) -> KeyRef {
    key.expose_secret().parse().unwrap()
}

/// A two-thread runtime, so that concurrent tasks really run side by side.
pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Accounting under concurrency

#[test]
fn exactly_l_admissions_under_a_32_thread_race() {
    const LIMIT: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, LIMIT)).unwrap();
    let start = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (store, id, start) = (store.clone(), record.id.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut lefts = Vec::new();
                loop {
                    match store.admit(&id) {
                        Ok(left) => lefts.push(left),
                        Err(AdmitError::LimitExceeded) => return lefts,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            })
        })
        .collect();
    let mut lefts: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(lefts.len() as u64, LIMIT, "admitted exactly L");
    lefts.sort_unstable();
    assert_eq!(lefts, (0..LIMIT).collect::<Vec<_>>(), "no double charge");
    let after = store.get(&id_ref(&record)).unwrap();
    assert_eq!(after.executions_used, LIMIT);
    assert_eq!(after.executions_left(), 0);
}

#[test]
fn admissions_and_concurrent_limit_updates_never_lose_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, 100)).unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    let updater_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admitters: Vec<_> = (0..8)
        .map(|_| {
            let (store, id) = (store.clone(), record.id.clone());
            let (admitted, done) = (Arc::clone(&admitted), Arc::clone(&updater_done));
            std::thread::spawn(move || {
                loop {
                    // Read the flag first so the final drain happens after the last update.
                    let finished = done.load(Ordering::SeqCst);
                    match store.admit(&id) {
                        Ok(_) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(AdmitError::LimitExceeded) if finished => return,
                        Err(AdmitError::LimitExceeded) => std::thread::yield_now(),
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            })
        })
        .collect();
    let mut limit = 100;
    for _ in 0..200 {
        limit += 10;
        let r = store.update_limit(&id_ref(&record), limit).unwrap();
        assert_eq!(r.executions_limit, limit);
    }
    updater_done.store(true, Ordering::SeqCst);
    for a in admitters {
        a.join().unwrap();
    }
    let after = store.get(&id_ref(&record)).unwrap();
    assert_eq!(after.executions_limit, limit, "no limit update was lost");
    assert_eq!(after.executions_used, limit, "no admission was lost");
    assert_eq!(
        admitted.load(Ordering::SeqCst),
        limit,
        "none double-charged"
    );
}

#[test]
fn admissions_and_concurrent_resets_never_lose_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, 50)).unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    let admitters: Vec<_> = (0..8)
        .map(|_| {
            let (store, id, admitted) = (store.clone(), record.id.clone(), Arc::clone(&admitted));
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    match store.admit(&id) {
                        Ok(_) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(AdmitError::LimitExceeded) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            })
        })
        .collect();
    // Reset through the same CAS loop as `reset_executions`, keeping what each reset cleared.
    let mut cleared = 0;
    for _ in 0..100 {
        let Ok((old, new)) = store.modify(&record.id, |s| {
            s.record.executions_used = 0;
            Ok::<(), ()>(())
        }) else {
            panic!("reset failed");
        };
        assert_eq!(new.executions_used, 0);
        cleared += old.executions_used;
        std::thread::sleep(Duration::from_micros(200));
    }
    for a in admitters {
        a.join().unwrap();
    }
    let used = store.get(&id_ref(&record)).unwrap().executions_used;
    assert_eq!(
        admitted.load(Ordering::SeqCst),
        cleared + used,
        "every admission is either still counted or was cleared by exactly one reset"
    );
    assert!(cleared > 0, "the race actually interleaved");
}

// ---------------------------------------------------------------------------------------
// Authentication and admission

#[test]
fn authenticate_accepts_only_the_exact_unrevoked_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (key, record) = store.create(new_key(Env::Prod, 5)).unwrap();
    assert_eq!(store.authenticate(key.expose_secret()).unwrap(), record);

    let mut wrong_secret = key.expose_secret().to_owned();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'a' { 'b' } else { 'a' });
    let (unknown, _) = {
        let other_dir = tempfile::tempdir().unwrap();
        open(other_dir.path())
            .create(new_key(Env::Prod, 1))
            .unwrap()
    };
    for bad in [
        "",
        "Bearer x",
        record.id.as_str(),
        wrong_secret.as_str(),
        unknown.expose_secret(),
    ] {
        assert!(
            matches!(store.authenticate(bad), Err(AuthError::Invalid)),
            "{bad:?}"
        );
    }

    store.revoke(&id_ref(&record)).unwrap();
    assert!(matches!(
        store.authenticate(key.expose_secret()),
        Err(AuthError::Revoked)
    ));
    // A wrong secret for a revoked ID is still just "invalid".
    assert!(matches!(
        store.authenticate(&wrong_secret),
        Err(AuthError::Invalid)
    ));
}

#[test]
fn admit_refuses_without_charging() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, 2)).unwrap();
    assert_eq!(store.admit(&record.id).unwrap(), 1);
    assert_eq!(store.admit(&record.id).unwrap(), 0);
    assert!(matches!(
        store.admit(&record.id),
        Err(AdmitError::LimitExceeded)
    ));
    assert_eq!(store.get(&id_ref(&record)).unwrap().executions_used, 2);

    store.update_limit(&id_ref(&record), 3).unwrap();
    store.revoke(&id_ref(&record)).unwrap();
    assert!(matches!(store.admit(&record.id), Err(AdmitError::Revoked)));
    assert_eq!(store.get(&id_ref(&record)).unwrap().executions_used, 2);

    let unknown = KeyId::parse("sk_test_AAAAAAAA").unwrap();
    assert!(matches!(store.admit(&unknown), Err(AdmitError::NotFound)));
}

#[test]
fn test_and_prod_keys_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (test_key, test) = store.create(new_key(Env::Test, 1)).unwrap();
    let (prod_key, prod) = store.create(new_key(Env::Prod, 1)).unwrap();
    assert!(test_key.expose_secret().starts_with("sk_test_"));
    assert!(prod_key.expose_secret().starts_with("sk_prod_"));
    assert_eq!((test.env, prod.env), (Env::Test, Env::Prod));
    store.admit(&test.id).unwrap();
    assert!(store.admit(&test.id).is_err());
    store.admit(&prod.id).unwrap();
    store.revoke(&id_ref(&prod)).unwrap();
    assert!(store.authenticate(test_key.expose_secret()).is_ok());
    assert!(store.authenticate(prod_key.expose_secret()).is_err());
}

#[test]
fn check_rate_consumes_and_rate_status_peeks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let store = SledStore::open_with(
        dir.path(),
        OpenOptions {
            clock: clock.clone(),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let (_, record) = store
        .create(NewKey {
            rate_limit_per_minute: 2,
            ..new_key(Env::Test, 10)
        })
        .unwrap();
    assert_eq!(store.rate_status(&record).remaining, 2);
    assert_eq!(store.rate_status(&record).remaining, 2);
    assert_eq!(store.check_rate(&record).remaining, 1);
    assert_eq!(store.check_rate(&record).remaining, 0);
    let denied = store.check_rate(&record);
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, Some(Duration::from_secs(30)));
    assert!(!store.rate_status(&record).allowed);
    clock.advance(Duration::from_secs(30));
    assert!(store.check_rate(&record).allowed);
    // Rate limiting and execution quota are separate: nothing was charged.
    assert_eq!(store.get(&id_ref(&record)).unwrap().executions_used, 0);
}

// ---------------------------------------------------------------------------------------
// Admin operations

#[test]
fn admin_operations_accept_the_id_or_the_full_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (key, record) = store.create(new_key(Env::Test, 10)).unwrap();
    assert_eq!(store.get(&id_ref(&record)).unwrap(), record);
    assert_eq!(store.get(&key_ref(&key)).unwrap(), record);
    for _ in 0..4 {
        store.admit(&record.id).unwrap();
    }

    let r = store.update_limit(&key_ref(&key), 3).unwrap();
    assert_eq!((r.executions_limit, r.executions_used), (3, 4));
    assert_eq!(r.executions_left(), 0, "floored at 0");
    assert!(store.admit(&record.id).is_err());
    let r = store.update_limit(&id_ref(&record), 6).unwrap();
    assert_eq!(r.executions_left(), 2);

    let r = store.reset_executions(&key_ref(&key)).unwrap();
    assert_eq!((r.executions_used, r.executions_left()), (0, 6));

    let first = store.revoke(&key_ref(&key)).unwrap().revoked_at.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let again = store.revoke(&id_ref(&record)).unwrap();
    assert_eq!(
        again.revoked_at,
        Some(first),
        "revoking twice keeps the first time"
    );
    // Admin commands still find a revoked key (to show or reset it).
    assert!(store.get(&key_ref(&key)).unwrap().is_revoked());
}

#[test]
fn admin_operations_report_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (key, record) = store.create(new_key(Env::Test, 10)).unwrap();
    let unknown_id: KeyRef = "sk_test_ZZZZZZZZ".parse().unwrap();
    // Right ID, wrong secret: must not resolve to the record.
    let forged: KeyRef = format!("{}{}", record.id, "A".repeat(32)).parse().unwrap();
    assert!(!matches!(forged, KeyRef::Id(_)));
    for key_ref in [&unknown_id, &forged] {
        let results = [
            store.get(key_ref),
            store.revoke(key_ref),
            store.reset_executions(key_ref),
            store.update_limit(key_ref, 1),
        ];
        for result in results {
            match result {
                Err(AdminError::NotFound(shown)) => {
                    assert_eq!(shown, key_ref.to_string());
                    assert!(!shown.contains(&"A".repeat(32)));
                }
                other => panic!("expected NotFound, got {other:?}"),
            }
        }
    }
    let untouched = store.get(&key_ref(&key)).unwrap();
    assert_eq!(untouched, record);
}

#[test]
fn create_validates_and_stores_nothing_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.is_empty().unwrap());
    let bad = NewKey {
        name: " ".into(),
        ..new_key(Env::Test, 1)
    };
    assert!(matches!(
        store.create(bad),
        Err(StoreError::Invalid { field: "name", .. })
    ));
    assert!(store.is_empty().unwrap());
    store.create(new_key(Env::Test, 1)).unwrap();
    assert!(!store.is_empty().unwrap());
}

#[test]
fn list_is_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<KeyId> = (0..5)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(2));
            let env = if i % 2 == 0 { Env::Test } else { Env::Prod };
            store.create(new_key(env, i)).unwrap().1.id
        })
        .collect();
    let listed: Vec<KeyId> = store.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(listed, ids);
}

// ---------------------------------------------------------------------------------------
// Opening, locking, corruption

#[test]
fn open_creates_a_private_data_dir_and_a_second_open_is_locked() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("nested/data");
    let store = open(&data_dir);
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let db_mode = std::fs::metadata(data_dir.join(DB_DIR))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(db_mode & 0o777, 0o700);

    match SledStore::open(&data_dir) {
        Err(StoreError::Locked { path }) => assert_eq!(path, data_dir.join(DB_DIR)),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    open(&data_dir);
}

#[test]
fn open_waiting_outlasts_a_short_lock_but_not_a_long_one() {
    let dir = tempfile::tempdir().unwrap();
    let held = open(dir.path());
    let started = Instant::now();
    assert!(matches!(
        SledStore::open_waiting(dir.path(), Duration::from_millis(200)),
        Err(StoreError::Locked { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(200));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
    });
    SledStore::open_waiting(dir.path(), Duration::from_secs(10)).unwrap();
    release.join().unwrap();
}

#[test]
fn open_reports_an_uncreatable_data_dir() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    match SledStore::open(&file.join("data")) {
        Err(StoreError::CreateDir { path, .. }) => assert_eq!(path, file.join("data")),
        other => panic!("expected CreateDir, got {other:?}"),
    }
}

#[test]
fn a_corrupt_record_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, 1)).unwrap();
    store
        .db()
        .open_tree("keys")
        .unwrap()
        .insert(record.id.as_str(), &b"{garbage"[..])
        .unwrap();
    assert!(matches!(store.list(), Err(StoreError::Corrupt { .. })));
    assert!(matches!(
        store.admit(&record.id),
        Err(AdmitError::Store(StoreError::Corrupt { .. }))
    ));
    assert!(matches!(
        store.get(&id_ref(&record)),
        Err(AdminError::Store(StoreError::Corrupt { .. }))
    ));
    assert!(matches!(
        store.authenticate("sk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Err(AuthError::Invalid)
    ));
}

#[test]
fn modify_reports_refusal_and_absence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, 1)).unwrap();
    assert!(matches!(
        store.modify(&record.id, |_| Err("no")),
        Err(Modify::Refused("no"))
    ));
    let unknown = KeyId::parse("sk_prod_AAAAAAAA").unwrap();
    assert!(matches!(
        store.modify(&unknown, |_| Ok::<(), ()>(())),
        Err(Modify::NotFound)
    ));
}

// ---------------------------------------------------------------------------------------
// Secrets at rest and in logs

/// Every byte sled holds, through its API and in its files on disk.
fn all_stored_bytes(store: &SledStore, data_dir: &Path) -> Vec<u8> {
    store.flush_blocking().unwrap();
    let mut bytes = Vec::new();
    let db = store.db();
    for name in db.tree_names() {
        for entry in db.open_tree(&name).unwrap().iter() {
            let (k, v) = entry.unwrap();
            bytes.extend_from_slice(&k);
            bytes.extend_from_slice(&v);
        }
    }
    for entry in std::fs::read_dir(data_dir.join(DB_DIR)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn only_the_hash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let keys: Vec<ApiKey> = (0..3)
        .map(|_| store.create(new_key(Env::Prod, 1)).unwrap().0)
        .collect();
    let bytes = all_stored_bytes(&store, dir.path());
    for key in &keys {
        let plaintext = key.expose_secret();
        // The scan works: the ID and the hash are found…
        assert!(contains(&bytes, key.id().as_str()));
        assert!(contains(&bytes, &key.hash().to_hex()));
        // …and the secret is not, in any form.
        assert!(!contains(&bytes, plaintext));
        assert!(!contains(&bytes, &plaintext[token::KEY_ID_LEN..]));
        assert!(!contains(&bytes, &hex::encode(plaintext)));
    }
}

#[test]
fn key_store_is_a_cheap_shareable_handle() {
    fn assert_handle<T: Clone + Send + Sync + 'static>() {}
    assert_handle::<SledStore>();
}

#[test]
fn debug_of_control_messages_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (key, record) = store.create(new_key(Env::Test, 1)).unwrap();
    let secret = &key.expose_secret()[token::KEY_ID_LEN..];
    let request = control::Request::Revoke { key: key_ref(&key) };
    let again = ApiKey::parse(key.expose_secret()).unwrap();
    let reply = control::Reply::Created { key: again, record };
    for shown in [
        format!("{request:?}"),
        format!("{reply:?}"),
        format!("{store:?}"),
    ] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains(&key.hash().to_hex()), "{shown}");
    }
    // The wire form of a `created` reply is the one place the plaintext is sent.
    assert!(
        serde_json::to_string(&reply)
            .unwrap()
            .contains(key.expose_secret())
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish()
    }
}

#[test]
fn nothing_logs_a_key_or_its_hash() {
    let logs = Captured::default();
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = tracing::subscriber::with_default(logs.subscriber(), || {
        let store = open(dir.path());
        let (key, record) = store.create(new_key(Env::Test, 1)).unwrap();
        let mut wrong = key.expose_secret().to_owned();
        wrong.replace_range(20..21, if &wrong[20..21] == "x" { "y" } else { "x" });
        store.authenticate(key.expose_secret()).unwrap();
        let _ = store.authenticate(&wrong);
        store.admit(&record.id).unwrap();
        let _ = store.admit(&record.id);
        store.get(&key_ref(&key)).unwrap();
        store.update_limit(&key_ref(&key), 5).unwrap();
        store.reset_executions(&key_ref(&key)).unwrap();
        store.revoke(&key_ref(&key)).unwrap();
        let _ = store.authenticate(key.expose_secret());
        let _ = store.get(&wrong.parse().unwrap());
        tracing::info!(?key, "a careless Debug of the key");

        // The control socket, on this thread (current-thread runtime).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = store.bind_control_socket().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_control(listener, store.clone(), async {
                let _ = stopped.await;
            }));
            let path = control_socket_path(dir.path());
            let lines = [
                format!(r#"{{"op":"show","key":"{}"}}"#, key.expose_secret()),
                format!(r#"{{"op":"revoke","key":"{wrong}"}}"#),
                format!(r#"{{"op":"nonsense","key":"{}"}}"#, key.expose_secret()),
                r#"{"op":"add","new_key":{"name":"n","description":"","env":"test","executions_limit":1,"rate_limit_per_minute":60,"fuel_limit":null}}"#.to_owned(),
            ];
            for line in lines {
                async_call(&path, &line).await;
            }
            stop.send(()).unwrap();
            server.await.unwrap();
        });
        (key, record)
    });
    let text = logs.text();
    assert!(
        text.contains(record.id.as_str()),
        "logs were captured:\n{text}"
    );
    assert!(
        text.contains("control socket"),
        "server logs were captured:\n{text}"
    );
    assert!(
        !text.contains(&key.expose_secret()[token::KEY_ID_LEN..]),
        "{text}"
    );
    assert!(!text.contains(&key.hash().to_hex()), "{text}");
}

/// Sends one raw line to the control socket, returns the raw reply line.
async fn async_call(path: &Path, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(line.as_bytes()).await.unwrap();
    write.write_all(b"\n").await.unwrap();
    let mut reply = String::new();
    tokio::io::BufReader::new(read)
        .read_line(&mut reply)
        .await
        .unwrap();
    reply
}

// ---------------------------------------------------------------------------------------
// Durability

const CHILD_DIR_VAR: &str = "PYEXEC_TEST_DURABILITY_DIR";
const CHILD_KEY_VAR: &str = "PYEXEC_TEST_DURABILITY_KEY";

/// Child process of `acknowledged_admissions_survive_kill_9`: admits and commits from 8
/// tasks forever, printing `ack` after each commit, until killed. sled's periodic flush is
/// off, so only `commit()` makes anything durable.
#[test]
#[ignore = "helper process, run by acknowledged_admissions_survive_kill_9"]
fn durability_child() {
    let (Ok(dir), Ok(id)) = (std::env::var(CHILD_DIR_VAR), std::env::var(CHILD_KEY_VAR)) else {
        return;
    };
    let store = SledStore::open_with(
        Path::new(&dir),
        OpenOptions {
            background_flush: false,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let id = KeyId::parse(&id).unwrap();
    runtime().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (store, id) = (store.clone(), id.clone());
            tasks.spawn(async move {
                loop {
                    store.admit(&id).unwrap();
                    store.commit().await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack").unwrap();
                    out.flush().unwrap();
                }
            });
        }
        let stopped = tasks.join_next().await;
        panic!("an admission task stopped: {stopped:?}");
    });
}

#[test]
fn acknowledged_admissions_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open(dir.path());
        let (_, record) = store.create(new_key(Env::Test, u64::MAX)).unwrap();
        store.flush_blocking().unwrap();
        record.id
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "keys::tests::durability_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .env(CHILD_KEY_VAR, id.as_str())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = 0u64;
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < 300 && Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // The harness's `test … ... ` line has no newline, so the first ack ends it.
        acked += u64::from(line.trim_end().ends_with("ack"));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks printed before the kill are still in the pipe.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    acked += rest
        .lines()
        .filter(|l| l.trim_end().ends_with("ack"))
        .count() as u64;
    assert!(acked >= 300, "child acknowledged only {acked} admissions");

    let used = open(dir.path())
        .get(&KeyRef::Id(id))
        .unwrap()
        .executions_used;
    assert!(
        used >= acked,
        "acknowledged {acked}, but only {used} survived"
    );
    assert!(
        used <= acked + 8,
        "at most one unacknowledged admission per task: used {used}, acknowledged {acked}"
    );
}

#[test]
fn concurrent_commits_all_resolve_after_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, record) = store.create(new_key(Env::Test, 1_000)).unwrap();
    let left = runtime().block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (store, id) = (store.clone(), record.id.clone());
                tokio::spawn(async move {
                    for _ in 0..10 {
                        store.admit(&id).unwrap();
                        store.commit().await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        store.flush().await.unwrap();
        store.get(&id_ref(&record)).unwrap().executions_left()
    });
    assert_eq!(left, 1_000 - 160);
}

/// Measures group commit against a flush per request (and against no durability at all).
/// Run with `cargo test --lib keys::tests::bench_ -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; prints numbers"]
fn bench_group_commit_vs_flush_per_request() {
    #[derive(Clone, Copy, Debug)]
    enum Durability {
        None,
        FlushPerRequest,
        GroupCommit,
    }
    const TASKS: usize = 16;
    const PER_TASK: usize = 200;
    let rt = runtime();
    println!("{TASKS} tasks x {PER_TASK} admissions, each followed by the durability wait:");
    for round in 0..3 {
        for mode in [
            Durability::None,
            Durability::FlushPerRequest,
            Durability::GroupCommit,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            let (_, record) = store.create(new_key(Env::Test, u64::MAX)).unwrap();
            store.flush_blocking().unwrap();
            let started = Instant::now();
            let mut latencies: Vec<Duration> = rt.block_on(async {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (store, id) = (store.clone(), record.id.clone());
                        tokio::spawn(async move {
                            let mut latencies = Vec::with_capacity(PER_TASK);
                            for _ in 0..PER_TASK {
                                let t = Instant::now();
                                store.admit(&id).unwrap();
                                match mode {
                                    Durability::None => {}
                                    Durability::FlushPerRequest => store.flush().await.unwrap(),
                                    Durability::GroupCommit => store.commit().await.unwrap(),
                                }
                                latencies.push(t.elapsed());
                            }
                            latencies
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            });
            let elapsed = started.elapsed();
            latencies.sort();
            let n = latencies.len();
            println!(
                "round {round} {:<16} {:>8.0} admissions/s  p50 {:>9.1?}  p99 {:>9.1?}  \
                 group-commit flushes: {}",
                format!("{mode:?}"),
                n as f64 / elapsed.as_secs_f64(),
                latencies[n / 2],
                latencies[n * 99 / 100],
                store.group_commit_flushes(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Control socket and KeyAdmin

/// A control server on `store`, on its own runtime; stops when dropped.
struct ControlServer {
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ControlServer {
    fn start(store: &SledStore) -> ControlServer {
        let rt = runtime();
        let listener = rt.block_on(async { store.bind_control_socket() }).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(serve_control(listener, store.clone(), async {
            let _ = stopped.await;
        }));
        ControlServer {
            rt,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let (Some(stop), Some(task)) = (self.stop.take(), self.task.take()) {
            let _ = stop.send(());
            self.rt.block_on(task).unwrap();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// One raw request line over a blocking socket; the raw reply.
fn raw_call(data_dir: &Path, line: &[u8]) -> String {
    let mut stream =
        std::os::unix::net::UnixStream::connect(control_socket_path(data_dir)).unwrap();
    stream.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

#[test]
fn key_admin_goes_direct_or_through_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let direct = KeyAdmin::open(dir.path()).unwrap();
    assert!(!direct.is_via_server());
    drop(direct);

    let store = open(dir.path());
    let server = ControlServer::start(&store);
    let mut admin = KeyAdmin::open(dir.path()).unwrap();
    assert!(admin.is_via_server());
    // A second client while the first is connected.
    assert!(KeyAdmin::open(dir.path()).unwrap().is_via_server());

    let (key, created) = admin.create(new_key(Env::Test, 1)).unwrap();
    assert_eq!(store.authenticate(key.expose_secret()).unwrap(), created);
    assert_eq!(admin.list().unwrap(), vec![created.clone()]);
    assert_eq!(admin.show(key_ref(&key)).unwrap(), created);

    store.admit(&created.id).unwrap();
    assert!(store.admit(&created.id).is_err());
    assert_eq!(
        admin
            .reset_executions(id_ref(&created))
            .unwrap()
            .executions_used,
        0
    );
    store.admit(&created.id).unwrap();
    assert_eq!(
        admin
            .update_limit(key_ref(&key), 2)
            .unwrap()
            .executions_left(),
        1
    );
    store.admit(&created.id).unwrap();
    assert!(admin.revoke(id_ref(&created)).unwrap().is_revoked());
    assert!(matches!(
        store.authenticate(key.expose_secret()),
        Err(AuthError::Revoked)
    ));

    match admin.show("sk_prod_ZZZZZZZZ".parse().unwrap()) {
        Err(AdminError::Server { kind, message }) => {
            assert_eq!(kind, control::ErrorKind::NotFound);
            assert_eq!(message, "unknown API key sk_prod_ZZZZZZZZ");
        }
        other => panic!("expected a not-found error from the server, got {other:?}"),
    }
    match admin.create(NewKey {
        rate_limit_per_minute: 0,
        ..new_key(Env::Test, 1)
    }) {
        Err(AdminError::Server { kind, message }) => {
            assert_eq!(kind, control::ErrorKind::Invalid);
            assert_eq!(message, "invalid rate limit per minute: must be at least 1");
        }
        other => panic!("expected an invalid-input error from the server, got {other:?}"),
    }

    // Stopping the server removes the socket; with the database still locked the CLI
    // cannot fall back to opening it.
    server.stop();
    assert!(!control_socket_path(dir.path()).exists());
    match KeyAdmin::open(dir.path()) {
        Err(AdminError::Unreachable { path, .. }) => {
            assert_eq!(path, control_socket_path(dir.path()))
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn key_admin_waits_briefly_for_a_starting_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let server_store = store.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ControlServer::start(&server_store)
    });
    let mut admin = KeyAdmin::open(dir.path()).unwrap();
    assert!(admin.is_via_server());
    assert_eq!(admin.list().unwrap(), vec![]);
    starter.join().unwrap().stop();
}

#[test]
fn mutations_through_the_socket_are_durable_before_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    // sled's periodic flush is off: only commit() persists.
    let store = SledStore::open_with(
        dir.path(),
        OpenOptions {
            background_flush: false,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let server = ControlServer::start(&store);
    let (_, record) = KeyAdmin::open(dir.path())
        .unwrap()
        .create(new_key(Env::Test, 7))
        .unwrap();
    // Read what is on disk through a copy of the database files, without closing the store.
    let copy = tempfile::tempdir().unwrap();
    let copy_db = copy.path().join(DB_DIR);
    std::fs::create_dir(&copy_db).unwrap();
    for entry in std::fs::read_dir(dir.path().join(DB_DIR)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy_db.join(path.file_name().unwrap())).unwrap();
        }
    }
    let on_disk = open(copy.path()).get(&id_ref(&record)).unwrap();
    assert_eq!(on_disk, record);
    server.stop();
}

#[test]
fn control_socket_is_private_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = control_socket_path(dir.path());
    let store = open(dir.path());
    std::fs::write(&path, b"stale").unwrap();
    let server = ControlServer::start(&store);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(raw_call(dir.path(), b"{\"op\":\"list\"}\n").starts_with("{\"ok\":{\"records\":[]"));
    server.stop();
}

#[test]
fn control_socket_bind_failure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::fs::create_dir(control_socket_path(dir.path())).unwrap();
    std::fs::write(control_socket_path(dir.path()).join("x"), b"").unwrap();
    let rt = runtime();
    match rt.block_on(async { store.bind_control_socket() }) {
        Err(StoreError::Bind { path, .. }) => assert_eq!(path, control_socket_path(dir.path())),
        other => panic!("expected Bind, got {other:?}"),
    }
}

#[test]
fn control_socket_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (key, _) = store.create(new_key(Env::Test, 1)).unwrap();
    let _server = ControlServer::start(&store);
    let reply = raw_call(dir.path(), b"not json\n");
    assert!(
        reply.starts_with(r#"{"error":{"kind":"bad_request","message":"malformed request"#),
        "{reply}"
    );
    let reply = raw_call(dir.path(), b"{\"op\":\"show\",\"key\":\"sk_nope\"}\n");
    assert!(reply.contains(r#""kind":"bad_request""#), "{reply}");
    let reply = raw_call(
        dir.path(),
        b"{\"op\":\"show\",\"key\":\"sk_test_ZZZZZZZZ\"}\n",
    );
    assert_eq!(
        reply,
        "{\"error\":{\"kind\":\"not_found\",\"message\":\"unknown API key sk_test_ZZZZZZZZ\"}}\n"
    );
    // Over-long lines are refused and the connection closed.
    let mut long = vec![b' '; 70 * 1024];
    long.push(b'\n');
    let reply = raw_call(dir.path(), &long);
    assert!(reply.contains("longer than"), "{reply}");
    // A last request without a newline, followed by EOF, is still answered.
    let mut stream =
        std::os::unix::net::UnixStream::connect(control_socket_path(dir.path())).unwrap();
    stream.write_all(b"{\"op\":\"list\"}").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("{\"ok\":{\"records\":"), "{reply}");
    // Several requests on one connection are answered in order.
    let show = format!("{{\"op\":\"show\",\"key\":\"{}\"}}\n", key.expose_secret());
    let mut stream =
        std::os::unix::net::UnixStream::connect(control_socket_path(dir.path())).unwrap();
    stream.write_all(show.as_bytes()).unwrap();
    stream.write_all(b"{\"op\":\"list\"}\n").unwrap();
    let mut replies = BufReader::new(stream).lines();
    let first = replies.next().unwrap().unwrap();
    assert!(first.starts_with("{\"ok\":{\"record\":"), "{first}");
    assert!(!first.contains(&key.expose_secret()[token::KEY_ID_LEN..]));
    assert!(!first.contains(&key.hash().to_hex()));
    assert!(
        replies
            .next()
            .unwrap()
            .unwrap()
            .starts_with("{\"ok\":{\"records\":")
    );
}

/// A fake server that answers every request line with `reply` (or hangs up if empty).
fn fake_server(data_dir: &Path, reply: &'static str) -> std::thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(control_socket_path(data_dir)).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        reader.read_line(&mut line).unwrap();
        (&stream).write_all(reply.as_bytes()).unwrap();
    })
}

#[test]
fn control_client_reports_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let _lock = open(dir.path());
    for (reply, expected) in [
        ("", "closed the connection"),
        ("garbage\n", "unexpected reply"),
        ("{\"ok\":{\"records\":[]}}\n", "unexpected `records` reply"),
    ] {
        let _ = std::fs::remove_file(control_socket_path(dir.path()));
        let server = fake_server(dir.path(), reply);
        let mut admin = KeyAdmin::open(dir.path()).unwrap();
        let err = admin.show("sk_test_AAAAAAAA".parse().unwrap()).unwrap_err();
        assert!(matches!(err, AdminError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
        server.join().unwrap();
    }
}
