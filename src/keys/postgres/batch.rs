//! Group commit for PostgreSQL: admissions that arrive together on this node go to the
//! database as one `pyexec_admit(ids, hashes, executions)` call — one statement, one lock per
//! key, one commit — instead of one statement each. Owns the queue and the task that drains
//! it; may not decide admissions (the SQL function does).
//!
//! One task takes everything queued (up to `max_batch`) as soon as one of `in_flight` batch
//! slots is free and runs it on a pooled connection; while a batch is being committed the
//! next one forms. A batch either commits as a whole or fails as a whole: every waiter gets
//! the same error, and a waiter is answered only after the commit's outcome is known.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::keys::error::StoreError;

/// One admission waiting for its batch.
pub(super) struct Request {
    pub(super) key_id: String,
    pub(super) hash: Vec<u8>,
    pub(super) execution_id: String,
    pub(super) reply: oneshot::Sender<Result<Decision, StoreError>>,
}

/// The database's decision for one admission (a row of `pyexec_admit`).
#[derive(Clone, Debug)]
pub(super) struct Decision {
    pub(super) outcome: String,
    pub(super) executions_left: i64,
    pub(super) rate_limit: i32,
    pub(super) tat_ns: i64,
    pub(super) now_ns: i64,
}

/// How batches are formed.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchShape {
    /// Most admissions in one statement (1: a statement per admission).
    pub(super) max_batch: usize,
    /// Batches being committed at once.
    pub(super) in_flight: usize,
    /// A batch that has not answered after this long fails (its outcome unknown).
    pub(super) deadline: Duration,
}

/// Starts the batching task; it ends when every sender is dropped.
pub(super) fn start(pool: Pool, shape: BatchShape) -> mpsc::UnboundedSender<Request> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(drain(pool, shape, receiver));
    sender
}

async fn drain(pool: Pool, shape: BatchShape, mut queue: mpsc::UnboundedReceiver<Request>) {
    let slots = Arc::new(Semaphore::new(shape.in_flight.max(1)));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < shape.max_batch {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let decided = tokio::time::timeout(shape.deadline, run(&pool, &batch))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "no answer from PostgreSQL within {:?}",
                        shape.deadline
                    )))
                });
            drop(slot);
            answer(batch, decided);
        });
    }
}

/// Runs one batch; the rows come back keyed by slot (1-based, in batch order).
async fn run(pool: &Pool, batch: &[Request]) -> Result<Vec<Decision>, StoreError> {
    let ids: Vec<&str> = batch.iter().map(|r| r.key_id.as_str()).collect();
    let hashes: Vec<&[u8]> = batch.iter().map(|r| r.hash.as_slice()).collect();
    let executions: Vec<&str> = batch.iter().map(|r| r.execution_id.as_str()).collect();
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT * FROM pyexec_admit($1, $2, $3)")
        .await?;
    let rows = match client
        .query(&statement, &[&ids, &hashes, &executions])
        .await
    {
        Ok(rows) => rows,
        Err(error) => {
            // The connection may be broken or mid-statement: never hand it out again.
            drop(Object::take(client));
            return Err(error.into());
        }
    };
    let mut decisions = vec![None; batch.len()];
    for row in rows {
        let slot: i64 = row.try_get(0)?;
        let decision = Decision {
            outcome: row.try_get(1)?,
            executions_left: row.try_get(2)?,
            rate_limit: row.try_get(3)?,
            tat_ns: row.try_get(4)?,
            now_ns: row.try_get(5)?,
        };
        if let Some(place) = usize::try_from(slot - 1)
            .ok()
            .and_then(|i| decisions.get_mut(i))
        {
            *place = Some(decision);
        }
    }
    decisions
        .into_iter()
        .map(|d| {
            d.ok_or_else(|| StoreError::Unavailable("pyexec_admit skipped an admission".into()))
        })
        .collect()
}

fn answer(batch: Vec<Request>, decided: Result<Vec<Decision>, StoreError>) {
    match decided {
        Ok(decisions) => {
            for (request, decision) in batch.into_iter().zip(decisions) {
                let _ = request.reply.send(Ok(decision));
            }
        }
        Err(error) => {
            let message = crate::error_chain(&error);
            tracing::warn!(error = %message, admissions = batch.len(), "admission batch failed");
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(StoreError::Unavailable(message.clone())));
            }
        }
    }
}
