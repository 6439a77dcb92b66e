//! The guest's view of the world: WASI preview 1 from wasmtime-wasi with nothing granted (no
//! preopened directories, environment, arguments or sockets), plus four things of ours: the
//! request document as stdin (which the guest reads to the end before any Python runs),
//! stdout/stderr captured into one capped buffer, clocks coarsened to [`CLOCK_RESOLUTION`], and
//! a `poll_oneoff` (what `time.sleep` and `select` block in) that never sleeps past the
//! execution's deadline.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use wasmtime::{Caller, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use super::instance::{ExecutionState, Stop};

/// Clocks advance in steps of this much: enough for timing code, too coarse for timing
/// side channels.
pub const CLOCK_RESOLUTION: Duration = Duration::from_micros(100);

/// The WASI context of one execution or session, with `input` as its stdin.
pub fn context(input: &RequestInput, output: &OutputCapture) -> WasiP1Ctx {
    builder(input, output).build_p1()
}

/// [`context`], for a runtime to add what its guest needs (read-only directories) before it
/// builds it.
pub fn builder(input: &RequestInput, output: &OutputCapture) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdin(input.clone())
        .stdout(output.stream(StreamId::Stdout))
        .stderr(output.stream(StreamId::Stderr))
        .wall_clock(CoarseWallClock)
        .monotonic_clock(CoarseMonotonicClock::new());
    builder
}

/// The guest's stdin: the request document of the current run, which the guest reads to the
/// end. A session's instance lives on, so its host puts each turn's request here
/// ([`refill`](Self::refill)) before the turn; the guest then reads it as it read the first.
#[derive(Clone, Default)]
pub struct RequestInput {
    /// What is left to read; clones (the guest's stdin handles) share it.
    unread: Arc<Mutex<Bytes>>,
}

impl RequestInput {
    pub fn new(request: Vec<u8>) -> Self {
        let input = Self::default();
        input.refill(request);
        input
    }

    /// Makes `request` what stdin holds, replacing anything unread.
    pub fn refill(&self, request: Vec<u8>) {
        *self.lock() = Bytes::from(request);
    }

    fn lock(&self) -> MutexGuard<'_, Bytes> {
        self.unread.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl IsTerminal for RequestInput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for RequestInput {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

impl InputStream for RequestInput {
    /// Up to `size` bytes; at the end, `Closed`, which the guest reads as end of file (and
    /// which does not stick: the next turn's request is read after it).
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let mut unread = self.lock();
        if unread.is_empty() {
            return Err(StreamError::Closed);
        }
        let size = size.min(unread.len());
        Ok(unread.split_to(size))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for RequestInput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncRead for RequestInput {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut unread = self.lock();
        let size = buf.remaining().min(unread.len());
        buf.put_slice(&unread.split_to(size));
        Poll::Ready(Ok(()))
    }
}

/// Which output stream a write came from.
#[derive(Clone, Copy)]
pub enum StreamId {
    Stdout,
    Stderr,
}

/// stdout and stderr of one execution, sharing one byte budget. A write past the budget keeps
/// what fits and stops the execution with [`Stop::OutputLimit`].
#[derive(Clone)]
pub struct OutputCapture {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    limit: usize,
}

impl OutputCapture {
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured {
                stdout: Vec::new(),
                stderr: Vec::new(),
                limit,
            })),
        }
    }

    pub fn stream(&self, id: StreamId) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends what fits; `Err` when some of `bytes` did not.
    fn write(&self, id: StreamId, bytes: &[u8]) -> Result<(), Stop> {
        let mut captured = self.lock();
        let room = captured
            .limit
            .saturating_sub(captured.stdout.len() + captured.stderr.len());
        let fits = bytes.len().min(room);
        let buffer = match id {
            StreamId::Stdout => &mut captured.stdout,
            StreamId::Stderr => &mut captured.stderr,
        };
        buffer.extend_from_slice(&bytes[..fits]);
        if fits < bytes.len() {
            Err(Stop::OutputLimit)
        } else {
            Ok(())
        }
    }

    /// Starts capturing a session's next turn: nothing captured, `limit` bytes of room.
    pub fn restart(&self, limit: usize) {
        let mut captured = self.lock();
        captured.stdout.clear();
        captured.stderr.clear();
        captured.limit = limit;
    }

    /// The captured (stdout, stderr), invalid UTF-8 replaced.
    pub fn take(&self) -> (String, String) {
        let mut captured = self.lock();
        let stdout = String::from_utf8_lossy(&std::mem::take(&mut captured.stdout)).into_owned();
        let stderr = String::from_utf8_lossy(&std::mem::take(&mut captured.stderr)).into_owned();
        (stdout, stderr)
    }
}

pub struct CaptureStream {
    capture: OutputCapture,
    id: StreamId,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CaptureStream {
            capture: self.capture.clone(),
            id: self.id,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(CaptureStream {
            capture: self.capture.clone(),
            id: self.id,
        })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.capture
            .write(self.id, &bytes)
            .map_err(|stop| StreamError::Trap(stop.into()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept a whole chunk: `write` keeps what fits and stops the guest.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.capture
                .write(self.id, buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn coarsen(nanos: u128) -> u128 {
    let step = CLOCK_RESOLUTION.as_nanos();
    nanos - nanos % step
}

struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = coarsen(since_epoch.as_nanos());
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }
}

/// Monotonic time since the execution started: reveals nothing about the host's uptime.
struct CoarseMonotonicClock {
    start: Instant,
}

impl CoarseMonotonicClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        coarsen(self.start.elapsed().as_nanos()) as u64
    }
}

// WASI preview 1 ABI of `poll_oneoff` (see wasi_snapshot_preview1.witx).
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const CLOCKID_REALTIME: u32 = 0;
const CLOCKID_MONOTONIC: u32 = 1;
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: u16 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;

/// Replaces wasmtime-wasi's `poll_oneoff`, which would block the worker thread for as long as
/// the guest asks. Ours answers file-descriptor subscriptions at once (stdin is at end of file
/// once the guest has read the request, before any Python runs; stdout and stderr are always
/// writable) and sleeps for clock subscriptions only
/// until the execution's deadline, where it stops the execution with [`Stop::Timeout`].
pub fn add_poll_oneoff(linker: &mut Linker<ExecutionState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |mut caller: Caller<'_, ExecutionState>,
         subscriptions: u32,
         events: u32,
         count: u32,
         event_count_out: u32|
         -> wasmtime::Result<i32> {
            poll_oneoff(&mut caller, subscriptions, events, count, event_count_out)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

struct Subscription {
    userdata: u64,
    kind: SubscriptionKind,
}

enum SubscriptionKind {
    /// Wakes at this instant.
    Clock(Instant),
    Fd {
        event_type: u8,
        fd: u32,
    },
}

fn poll_oneoff(
    caller: &mut Caller<'_, ExecutionState>,
    subscriptions_ptr: u32,
    events_ptr: u32,
    count: u32,
    event_count_out: u32,
) -> wasmtime::Result<i32> {
    if count == 0 {
        return Ok(ERRNO_INVAL);
    }
    let Some(memory) = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
    else {
        return Ok(ERRNO_FAULT);
    };
    let count = count as usize;
    let mut raw = vec![0u8; count * SUBSCRIPTION_SIZE];
    if memory
        .read(&caller, subscriptions_ptr as usize, &mut raw)
        .is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    let now = Instant::now();
    let mut subscriptions = Vec::with_capacity(count);
    for chunk in raw.chunks_exact(SUBSCRIPTION_SIZE) {
        let userdata = u64::from_le_bytes(chunk[0..8].try_into().expect("8 bytes"));
        let kind = match chunk[8] {
            EVENTTYPE_CLOCK => {
                let clock_id = u32::from_le_bytes(chunk[16..20].try_into().expect("4 bytes"));
                let timeout = u64::from_le_bytes(chunk[24..32].try_into().expect("8 bytes"));
                let flags = u16::from_le_bytes(chunk[40..42].try_into().expect("2 bytes"));
                let wait = if flags & SUBCLOCKFLAGS_ABSTIME == 0 {
                    Duration::from_nanos(timeout)
                } else if clock_id == CLOCKID_REALTIME {
                    let now_ns = CoarseWallClock.now().as_nanos() as u64;
                    Duration::from_nanos(timeout.saturating_sub(now_ns))
                } else if clock_id == CLOCKID_MONOTONIC {
                    // CPython's `time.sleep` sleeps until a deadline on the monotonic clock,
                    // which counts from the start of the execution.
                    Duration::from_nanos(timeout).saturating_sub(caller.data().elapsed())
                } else {
                    return Ok(ERRNO_NOTSUP);
                };
                SubscriptionKind::Clock(
                    now.checked_add(wait)
                        .unwrap_or(now + Duration::from_secs(1 << 32)),
                )
            }
            event_type @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => SubscriptionKind::Fd {
                event_type,
                fd: u32::from_le_bytes(chunk[16..20].try_into().expect("4 bytes")),
            },
            _ => return Ok(ERRNO_INVAL),
        };
        subscriptions.push(Subscription { userdata, kind });
    }

    let fd_ready = subscriptions
        .iter()
        .any(|s| matches!(s.kind, SubscriptionKind::Fd { .. }));
    if !fd_ready {
        let wake = subscriptions
            .iter()
            .filter_map(|s| match s.kind {
                SubscriptionKind::Clock(at) => Some(at),
                SubscriptionKind::Fd { .. } => None,
            })
            .min()
            .expect("at least one subscription, none of them fds");
        caller.data().sleep_until(wake)?;
    }

    let woke = Instant::now();
    let mut out = Vec::new();
    for subscription in &subscriptions {
        let (event_type, errno, fd_ready) = match subscription.kind {
            SubscriptionKind::Clock(at) if at <= woke => (EVENTTYPE_CLOCK, 0, false),
            SubscriptionKind::Clock(_) => continue,
            SubscriptionKind::Fd { event_type, fd } if fd <= 2 => (event_type, 0, true),
            SubscriptionKind::Fd { event_type, .. } => (event_type, ERRNO_BADF, false),
        };
        let mut event = [0u8; EVENT_SIZE];
        event[0..8].copy_from_slice(&subscription.userdata.to_le_bytes());
        event[8..10].copy_from_slice(&errno.to_le_bytes());
        event[10] = event_type;
        if fd_ready && event_type == EVENTTYPE_FD_READ {
            // End of file: nothing to read, ever.
            event[24..26].copy_from_slice(&1u16.to_le_bytes());
        } else if fd_ready {
            event[16..24].copy_from_slice(&(64u64 * 1024).to_le_bytes());
        }
        out.extend_from_slice(&event);
    }
    let written = (out.len() / EVENT_SIZE) as u32;
    if memory
        .write(&mut *caller, events_ptr as usize, &out)
        .is_err()
        || memory
            .write(
                &mut *caller,
                event_count_out as usize,
                &written.to_le_bytes(),
            )
            .is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    Ok(ERRNO_SUCCESS)
}
