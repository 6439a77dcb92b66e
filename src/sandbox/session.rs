//! Sessions: one instance of a runtime kept alive for one tenant across several turns, and the
//! registry of open sessions — their ids, who owns them, the caps on how many are open, and
//! their idle and lifetime deadlines, read from an injectable [`Clock`] and enforced both when
//! a session is touched and by a reaper thread, so an expired session's memory is returned
//! promptly. A turn runs on the worker pool like an execution (`Prepared`). Like the rest of
//! the sandbox, this knows tenants only as opaque strings: nothing of keys or HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use super::instance::{Kept, RunLimits};
use super::outcome::{Outcome, Rejected};
use super::runtime::Runtime;
use crate::clock::SharedClock;

/// How often the reaper looks for expired sessions.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// How sessions are bounded.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session that ran no turn for this long is closed, unless it asked for another
    /// idle timeout when it was opened.
    pub idle_timeout: Duration,
    /// The longest idle timeout a session may ask for.
    pub max_idle_timeout: Duration,
    /// A session is closed this long after it was opened, however busy.
    pub lifetime: Duration,
    /// Sessions one tenant may have open at once, unless the tenant has its own cap.
    pub per_tenant: usize,
    /// Sessions open at once on this node, all tenants together: each holds an instance's
    /// memory (and a slot of the pooling allocator) while it lives.
    pub max_open: usize,
    /// This node's name, part of every session id: a session lives in the memory of the node
    /// that opened it, and a request for it on another node names the node it belongs to.
    pub node: String,
    /// Where deadlines are read.
    pub clock: SharedClock,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5 * 60),
            max_idle_timeout: Duration::from_secs(60 * 60),
            lifetime: Duration::from_secs(60 * 60),
            per_tenant: 4,
            max_open: DEFAULT_MAX_OPEN,
            node: random_node_name(),
            clock: SharedClock::default(),
        }
    }
}

impl SessionConfig {
    /// How many sessions a tenant may have open: its own cap if it has one, else
    /// [`Self::per_tenant`].
    pub fn cap_for(&self, own_cap: Option<usize>) -> usize {
        own_cap.unwrap_or(self.per_tenant)
    }
}

/// Sessions open at once unless configured otherwise (see the README's measurements of the
/// memory an idle session holds).
pub const DEFAULT_MAX_OPEN: usize = 64;

/// A node name for a node that was not given one: 6 hexadecimal digits.
pub fn random_node_name() -> String {
    format!("{:06x}", rand::random::<u32>() >> 8)
}

/// Whether `name` can be a node name: 1–32 ASCII lowercase letters, digits and dashes (no
/// `_`, which separates an id's parts).
pub fn is_valid_node_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What opening a session asks for.
#[derive(Debug, Clone, Default)]
pub struct OpenSession {
    /// Who owns it (an API key's id); only its owner can see or use it.
    pub tenant: String,
    /// The runtime, by name; `None` is the default.
    pub runtime: Option<String>,
    /// Its idle timeout instead of the default, up to [`SessionConfig::max_idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// The tenant's own cap on open sessions instead of [`SessionConfig::per_tenant`].
    pub max_for_tenant: Option<usize>,
}

/// A session as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// `ses_<node>_<random>`.
    pub id: String,
    pub runtime: String,
    pub created_at: SystemTime,
    /// When it closes unless a turn runs before (then later, up to its lifetime).
    pub expires_at: SystemTime,
    pub idle_timeout: Duration,
    /// Turns run so far.
    pub turns: u64,
    /// Whether a turn is running now.
    pub busy: bool,
}

/// Why sessions were closed, counted for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Open now.
    pub open: usize,
    /// Closed after their idle timeout.
    pub expired_idle: u64,
    /// Closed at the end of their lifetime.
    pub expired_lifetime: u64,
    /// Closed because a turn hit a limit the host enforces (or the sandbox failed).
    pub closed_by_limit: u64,
    /// Closed by their owner.
    pub deleted: u64,
}

/// The open sessions of one node.
pub(super) struct Registry {
    config: SessionConfig,
    /// The wall-clock time at the clock's `origin`, to report deadlines as times of day.
    wall_origin: SystemTime,
    origin: Duration,
    sessions: Mutex<HashMap<String, Arc<Entry>>>,
    expired_idle: AtomicU64,
    expired_lifetime: AtomicU64,
    closed_by_limit: AtomicU64,
    deleted: AtomicU64,
}

struct Entry {
    id: String,
    tenant: String,
    runtime: Arc<dyn Runtime>,
    idle_timeout: Duration,
    /// On the registry's clock.
    opened: Duration,
    state: Mutex<EntryState>,
}

struct EntryState {
    instance: Slot,
    /// When the last turn ended (or the session opened), on the registry's clock.
    last_used: Duration,
    turns: u64,
}

enum Slot {
    /// Waiting for a turn.
    Idle(Kept),
    /// Being started, or running a turn: the instance is with the worker.
    Busy,
    /// Gone: deleted, expired or ended by a limit. Its instance has been dropped, or is
    /// dropped when its running turn ends.
    Closed,
}

/// Why a session is being closed.
#[derive(Clone, Copy)]
enum Closing {
    Idle,
    Lifetime,
    Limit,
    Deleted,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    pub(super) fn new(config: SessionConfig) -> Self {
        let origin = config.clock.0.now();
        Self {
            config,
            wall_origin: SystemTime::now(),
            origin,
            sessions: Mutex::default(),
            expired_idle: AtomicU64::new(0),
            expired_lifetime: AtomicU64::new(0),
            closed_by_limit: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
        }
    }

    pub(super) fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Duration {
        self.config.clock.0.now()
    }

    /// Reserves a place for a new session of `request.tenant` on `runtime`, busy until
    /// [`started`](Self::started) gives it its instance.
    pub(super) fn reserve(
        &self,
        request: &OpenSession,
        runtime: Arc<dyn Runtime>,
    ) -> Result<String, Rejected> {
        let idle_timeout = request
            .idle_timeout
            .unwrap_or(self.config.idle_timeout)
            .min(self.config.max_idle_timeout);
        let per_tenant = self.config.cap_for(request.max_for_tenant);
        self.reap();
        let mut sessions = self.lock();
        let owned = sessions
            .values()
            .filter(|entry| entry.tenant == request.tenant)
            .count();
        if owned >= per_tenant {
            return Err(Rejected::SessionLimit { limit: per_tenant });
        }
        if sessions.len() >= self.config.max_open {
            return Err(Rejected::Overloaded {
                capacity: self.config.max_open,
            });
        }
        let id = format!("ses_{}_{:032x}", self.config.node, rand::random::<u128>());
        let now = self.now();
        sessions.insert(
            id.clone(),
            Arc::new(Entry {
                id: id.clone(),
                tenant: request.tenant.clone(),
                runtime,
                idle_timeout,
                opened: now,
                state: Mutex::new(EntryState {
                    instance: Slot::Busy,
                    last_used: now,
                    turns: 0,
                }),
            }),
        );
        Ok(id)
    }

    /// Gives the session `id` reserved its instance, or, without one, gives up the place.
    pub(super) fn started(&self, id: &str, instance: Option<Kept>) -> Option<SessionInfo> {
        let entry = self.lock().get(id).cloned()?;
        let Some(instance) = instance else {
            self.lock().remove(id);
            return None;
        };
        let mut state = entry.lock();
        if matches!(state.instance, Slot::Busy) {
            state.instance = Slot::Idle(instance);
            state.last_used = self.now();
        }
        drop(state);
        self.info(&entry)
    }

    /// The session `id` if `tenant` owns it and it is open.
    fn find(&self, tenant: &str, id: &str) -> Result<Arc<Entry>, Rejected> {
        self.reap();
        let entry = self.lock().get(id).cloned();
        match entry {
            Some(entry) if entry.tenant == tenant => Ok(entry),
            _ => Err(self.not_found(id)),
        }
    }

    /// The answer for a session that is not here: a session of another node says so.
    fn not_found(&self, id: &str) -> Rejected {
        let node = id
            .strip_prefix("ses_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(node, _)| node)
            .filter(|node| *node != self.config.node);
        Rejected::SessionNotFound {
            id: id.to_owned(),
            other_node: node.map(str::to_owned),
        }
    }

    pub(super) fn get(&self, tenant: &str, id: &str) -> Result<SessionInfo, Rejected> {
        let entry = self.find(tenant, id)?;
        self.info(&entry).ok_or_else(|| self.not_found(id))
    }

    /// `tenant`'s open sessions, oldest first.
    pub(super) fn list(&self, tenant: &str) -> Vec<SessionInfo> {
        self.reap();
        let entries: Vec<_> = (self.lock().values())
            .filter(|entry| entry.tenant == tenant)
            .cloned()
            .collect();
        let mut infos: Vec<_> = entries.iter().filter_map(|e| self.info(e)).collect();
        infos.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        infos
    }

    /// Closes `tenant`'s session `id`; its instance's memory is returned now, or when its
    /// running turn ends.
    pub(super) fn delete(&self, tenant: &str, id: &str) -> Result<(), Rejected> {
        let entry = self.find(tenant, id)?;
        self.close(&entry, Closing::Deleted);
        Ok(())
    }

    /// Takes the instance of `tenant`'s session `id` for a turn.
    pub(super) fn claim(self: &Arc<Self>, tenant: &str, id: &str) -> Result<Claim, Rejected> {
        let entry = self.find(tenant, id)?;
        let mut state = entry.lock();
        match std::mem::replace(&mut state.instance, Slot::Busy) {
            Slot::Idle(instance) => Ok(Claim {
                registry: self.clone(),
                entry: entry.clone(),
                instance: Some(instance),
                ran: false,
            }),
            Slot::Busy => Err(Rejected::SessionBusy { id: id.to_owned() }),
            Slot::Closed => {
                state.instance = Slot::Closed;
                Err(self.not_found(id))
            }
        }
    }

    fn info(&self, entry: &Entry) -> Option<SessionInfo> {
        let state = entry.lock();
        if matches!(state.instance, Slot::Closed) {
            return None;
        }
        Some(SessionInfo {
            id: entry.id.clone(),
            runtime: entry.runtime.info().name.clone(),
            created_at: self.wall(entry.opened),
            expires_at: self.wall(self.deadline(entry, &state).0),
            idle_timeout: entry.idle_timeout,
            turns: state.turns,
            busy: matches!(state.instance, Slot::Busy),
        })
    }

    /// When `entry` expires, and for which reason, as things stand.
    fn deadline(&self, entry: &Entry, state: &EntryState) -> (Duration, Closing) {
        let idle = state.last_used + entry.idle_timeout;
        let end = entry.opened + self.config.lifetime;
        if idle < end {
            (idle, Closing::Idle)
        } else {
            (end, Closing::Lifetime)
        }
    }

    fn wall(&self, at: Duration) -> SystemTime {
        self.wall_origin + at.saturating_sub(self.origin)
    }

    /// Closes every expired session that is not running a turn (a running turn's session is
    /// checked again when the turn ends).
    pub(super) fn reap(&self) {
        let now = self.now();
        let entries: Vec<_> = self.lock().values().cloned().collect();
        for entry in entries {
            let state = entry.lock();
            let (deadline, why) = self.deadline(&entry, &state);
            let idle = matches!(state.instance, Slot::Idle(_));
            drop(state);
            if idle && now >= deadline {
                self.close(&entry, why);
            }
        }
    }

    /// Removes `entry` and drops its instance unless a turn has it.
    fn close(&self, entry: &Entry, why: Closing) {
        self.lock().remove(&entry.id);
        let instance = {
            let mut state = entry.lock();
            if matches!(state.instance, Slot::Closed) {
                return;
            }
            std::mem::replace(&mut state.instance, Slot::Closed)
        };
        drop(instance);
        let counter = match why {
            Closing::Idle => &self.expired_idle,
            Closing::Lifetime => &self.expired_lifetime,
            Closing::Limit => &self.closed_by_limit,
            Closing::Deleted => &self.deleted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> SessionStats {
        SessionStats {
            open: self.lock().len(),
            expired_idle: self.expired_idle.load(Ordering::Relaxed),
            expired_lifetime: self.expired_lifetime.load(Ordering::Relaxed),
            closed_by_limit: self.closed_by_limit.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
        }
    }

    /// Closes every session (a server that stops).
    pub(super) fn close_all(&self) {
        let entries: Vec<_> = self.lock().drain().map(|(_, entry)| entry).collect();
        for entry in entries {
            let instance = std::mem::replace(&mut entry.lock().instance, Slot::Closed);
            drop(instance);
        }
    }

    /// Starts the thread that closes expired sessions; it ends with the registry.
    pub(super) fn start_reaper(registry: Weak<Registry>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("pyexec-sessions".into())
            .spawn(move || {
                while let Some(registry) = registry.upgrade() {
                    registry.reap();
                    drop(registry);
                    std::thread::sleep(REAP_INTERVAL);
                }
            })?;
        Ok(())
    }
}

/// A session's instance, taken for one turn. Dropped without running (the caller gave up
/// before the turn started), it gives the instance back; after a turn, [`Claim::turn`] has
/// given it back or closed the session.
pub(super) struct Claim {
    registry: Arc<Registry>,
    entry: Arc<Entry>,
    instance: Option<Kept>,
    ran: bool,
}

impl Claim {
    pub(super) fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.entry.runtime
    }

    /// Runs the turn; a turn stopped by a host-enforced limit or a failure closes the session
    /// (the interpreter is in an undefined state), and says so in its outcome.
    pub(super) fn turn(
        mut self,
        request: Vec<u8>,
        limits: RunLimits,
        cancelled: Arc<std::sync::atomic::AtomicBool>,
    ) -> Outcome {
        self.ran = true;
        let instance = self.instance.as_mut().expect("a claim holds its instance");
        let (mut outcome, usable) = instance.turn(&*self.entry.runtime, request, limits, cancelled);
        if usable {
            self.give_back();
        } else {
            outcome.session_closed = true;
        }
        outcome
    }

    fn give_back(&mut self) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        let mut state = self.entry.lock();
        if matches!(state.instance, Slot::Busy) {
            state.instance = Slot::Idle(instance);
            if self.ran {
                state.last_used = self.registry.now();
                state.turns += 1;
            }
        }
        // Otherwise the session was closed while the turn ran: the instance is dropped here.
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.ran && self.instance.is_some() {
            // The turn failed (or panicked) in a way that leaves the instance unusable.
            self.instance = None;
            self.registry.close(&self.entry, Closing::Limit);
        } else {
            self.give_back();
        }
    }
}
