//! The pipeline's deploy lease, as a run past its approval gate holds it: a heartbeat that
//! rides out store hiccups, and the fence every migrate/deploy change passes first.
//!
//! - The heartbeat confirms the lease every third of its time to live. A store error (SQLite
//!   busy, DynamoDB throttling, a network blip) is retried with backoff for as long as the
//!   lease would still be valid from the last confirmation; only then is it given up as lost.
//! - Confirming is a conditional write on the lease's generation (see
//!   [`Store::confirm_lease`]): once anyone else (or this run in another process) took the
//!   lease, every confirmation fails and the lease is lost for good.
//! - Before each RegisterTaskDefinition, RunTask and UpdateService (a rollback's too) the ECS
//!   stages call [`GateLease::confirm`] through [`Fence`]: a run whose lease is lost stops
//!   before the change, and says why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::exec::ecs::fence::Fence;
use crate::store::Store;

/// The first pause before retrying a failed confirmation; it doubles up to a sixth of the TTL.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// A held deploy lease and its heartbeat. Cheap to clone; the heartbeat stops with
/// [`GateLease::release`] (or when the lease is lost).
#[derive(Clone)]
pub struct GateLease {
    inner: Arc<Inner>,
    heartbeat: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

struct Inner {
    store: Arc<dyn Store>,
    key: String,
    holder: String,
    generation: u64,
    ttl: Duration,
    /// When the last successful confirmation was sent: the lease is valid at least `ttl`
    /// from then.
    confirmed: Mutex<Instant>,
    /// Why the lease is lost, once it is.
    lost: Mutex<Option<String>>,
    /// Only one confirmation at a time (the heartbeat and a fence may meet).
    confirming: tokio::sync::Mutex<()>,
}

impl GateLease {
    /// Starts the heartbeat of a lease just granted under `generation` for `ttl`.
    pub fn start(
        store: Arc<dyn Store>,
        key: String,
        holder: String,
        generation: u64,
        ttl: Duration,
    ) -> Self {
        let inner = Arc::new(Inner {
            store,
            key,
            holder,
            generation,
            ttl,
            confirmed: Mutex::new(Instant::now()),
            lost: Mutex::new(None),
            confirming: tokio::sync::Mutex::new(()),
        });
        let beat = inner.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(beat.ttl / 3).await;
                if beat.confirm().await.is_err() {
                    break;
                }
            }
        });
        GateLease {
            inner,
            heartbeat: Arc::new(Mutex::new(Some(heartbeat))),
        }
    }

    /// Why the lease is lost, if it is.
    pub fn lost(&self) -> Option<String> {
        self.inner.lost.lock().expect("lease lock").clone()
    }

    /// Confirms the lease in the store now (retrying store errors while it is still valid).
    pub async fn confirm(&self) -> Result<(), String> {
        self.inner.confirm().await
    }

    /// Stops the heartbeat and gives the lease up if this run still has it.
    pub async fn release(self) {
        self.stop_heartbeat();
        let _ = self
            .inner
            .store
            .release_lease(&self.inner.key, &self.inner.holder)
            .await;
    }

    /// Stops the heartbeat and keeps the lease until it expires: for a run stopped to be
    /// resumed, which keeps the pipeline's lock meanwhile (see the driver's `deploy_lock`).
    pub fn keep_until_expiry(self) {
        self.stop_heartbeat();
    }

    fn stop_heartbeat(&self) {
        if let Some(heartbeat) = self.heartbeat.lock().expect("lease lock").take() {
            heartbeat.abort();
        }
    }
}

impl Inner {
    async fn confirm(&self) -> Result<(), String> {
        let _one = self.confirming.lock().await;
        if let Some(reason) = self.lost.lock().expect("lease lock").clone() {
            return Err(reason);
        }
        let valid_until = *self.confirmed.lock().expect("lease lock") + self.ttl;
        let mut pause = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            let sent = Instant::now();
            let error = match self
                .store
                .confirm_lease(&self.key, &self.holder, self.generation, self.ttl)
                .await
            {
                Ok(true) => {
                    *self.confirmed.lock().expect("lease lock") = sent;
                    if failures > 0 {
                        tracing::info!(key = %self.key, failures, "the store answered again; the deploy lease is still held");
                    }
                    return Ok(());
                }
                Ok(false) => {
                    return Err(self.lose(format!(
                        "this run lost the pipeline's deploy lock `{}`: another run (or this one in \
                         another process) took it after it expired",
                        self.key
                    )));
                }
                Err(error) => error,
            };
            failures += 1;
            tracing::warn!(key = %self.key, failures, %error, "could not confirm the deploy lease; retrying");
            let now = Instant::now();
            // A confirmation that succeeds late still proves nobody took the lease meanwhile;
            // give up only once it has certainly expired.
            if now >= valid_until {
                return Err(self.lose(format!(
                    "this run lost the pipeline's deploy lock `{}`: the store could not confirm it \
                     before it expired ({} tries over {:.0?}; last error: {error})",
                    self.key,
                    failures,
                    now.saturating_duration_since(valid_until - self.ttl),
                )));
            }
            tokio::time::sleep(pause.min(valid_until - now)).await;
            pause = (pause * 2).min((self.ttl / 6).max(FIRST_RETRY));
        }
    }

    fn lose(&self, reason: String) -> String {
        let mut lost = self.lost.lock().expect("lease lock");
        lost.get_or_insert(reason).clone()
    }
}

#[async_trait::async_trait]
impl Fence for GateLease {
    async fn confirm(&self, _change: &str) -> Result<(), String> {
        self.inner.confirm().await
    }
}

/// Asks for the lease, retrying store errors with backoff for up to `ttl`: a run waiting its
/// turn outlasts a store hiccup as the holder's heartbeat does.
pub async fn acquire(
    store: &dyn Store,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<crate::store::LeaseOutcome, crate::store::StoreError> {
    retrying(
        ttl,
        "could not ask for the deploy lease; retrying",
        key,
        || store.acquire_lease(key, holder, ttl),
    )
    .await
}

/// Reads who holds the lease, retrying store errors as [`acquire`] does.
pub async fn read(
    store: &dyn Store,
    key: &str,
    ttl: Duration,
) -> Result<Option<crate::store::LeaseState>, crate::store::StoreError> {
    retrying(
        ttl,
        "could not read the deploy lease; retrying",
        key,
        || store.lease(key),
    )
    .await
}

/// `call` until it answers, retrying errors with backoff for up to `ttl`: what a run waiting
/// for the lease asks the store.
pub(crate) async fn retrying<T, F, Fut>(
    ttl: Duration,
    warning: &str,
    key: &str,
    call: F,
) -> Result<T, crate::store::StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let give_up = Instant::now() + ttl;
    let mut pause = FIRST_RETRY;
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(error) if Instant::now() + pause < give_up => {
                tracing::warn!(key, %error, "{warning}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min((ttl / 6).max(FIRST_RETRY));
            }
            Err(error) => return Err(error),
        }
    }
}
