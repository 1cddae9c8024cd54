//! Write locks of a warehouse in a bucket: a lease per table, an object `_pipe/locks/<relation>.lock` made with
//! conditional puts (S3's `If-None-Match: *` to take a free lease, `If-Match: <etag>` to renew one or take over
//! an expired one), so two builds never write one table at once, as the operating system's file lock ensures in a
//! warehouse folder.
//!
//! The holder renews its lease every [`RENEW_EVERY`]; a lease not renewed for [`TTL`] (its holder was killed or cut
//! off) is expired and the next writer takes it over. Expiry is judged by the waiter's clock against the time the
//! holder wrote, so clocks may differ by up to `TTL - RENEW_EVERY`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deltalake::logstore::object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use deltalake::{ObjectStore, ObjectStoreError, Path};
use serde::{Deserialize, Serialize};

use super::RunError;

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often its holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a waiter looks again.
const POLL: Duration = Duration::from_millis(200);

/// What a lease object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// Unique per acquisition: two holders never write the same bytes (S3's ETag is the bytes' MD5).
    owner: String,
    pid: u32,
    /// Milliseconds since the Unix epoch, by the holder's clock.
    expires_at: i64,
}

impl Body {
    fn new(owner: &str) -> Body {
        let expires_at = chrono::Utc::now().timestamp_millis() + TTL.as_millis() as i64;
        Body { owner: owner.to_string(), pid: std::process::id(), expires_at }
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The version of the lease object this holder wrote last, and whether the lease was lost (a renewal found it
/// taken over: this holder was cut off for longer than [`TTL`]).
#[derive(Debug)]
struct State {
    version: UpdateVersion,
    lost: bool,
}

/// A held lease: renewed in the background until [`Lease::release`] (or, as a fallback, drop).
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: Path,
    state: Arc<Mutex<State>>,
    renewer: tokio::task::JoinHandle<()>,
}

fn version_of(result: &deltalake::logstore::object_store::PutResult) -> UpdateVersion {
    UpdateVersion { e_tag: result.e_tag.clone(), version: result.version.clone() }
}

fn failed(path: &Path, err: impl std::fmt::Display) -> RunError {
    RunError::Internal(format!("the write lock `{path}` cannot be taken: {err}"))
}

impl Lease {
    /// Waits for the lease at `path` and takes it.
    pub async fn acquire(store: Arc<dyn ObjectStore>, path: Path, relation: &str) -> Result<Lease, RunError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let mut announced = false;
        loop {
            let create = PutOptions::from(PutMode::Create);
            match store.put_opts(&path, Body::new(&owner).bytes().into(), create).await {
                Ok(result) => return Ok(Lease::hold(store, path, version_of(&result), owner)),
                Err(ObjectStoreError::AlreadyExists { .. } | ObjectStoreError::Precondition { .. }) => {}
                Err(err) => return Err(failed(&path, err)),
            }
            // Taken: take it over when it expired, else wait.
            let current = match store.get(&path).await {
                Ok(current) => current,
                Err(ObjectStoreError::NotFound { .. }) => continue,
                Err(err) => return Err(failed(&path, err)),
            };
            let version = UpdateVersion { e_tag: current.meta.e_tag.clone(), version: current.meta.version.clone() };
            let held: Option<Body> = current.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok());
            let expired = held.as_ref().is_none_or(|b| b.expires_at < chrono::Utc::now().timestamp_millis());
            if expired {
                let update = PutOptions::from(PutMode::Update(version));
                match store.put_opts(&path, Body::new(&owner).bytes().into(), update).await {
                    Ok(result) => {
                        if let Some(held) = held {
                            tracing::warn!(
                                "{relation}: took over the write lock of process {} (not renewed for {}s)",
                                held.pid,
                                TTL.as_secs()
                            );
                        }
                        return Ok(Lease::hold(store, path, version_of(&result), owner));
                    }
                    Err(ObjectStoreError::Precondition { .. } | ObjectStoreError::NotFound { .. }) => continue,
                    Err(err) => return Err(failed(&path, err)),
                }
            }
            if !announced {
                tracing::info!("{relation}: waiting for another build's write lock");
                announced = true;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn hold(store: Arc<dyn ObjectStore>, path: Path, version: UpdateVersion, owner: String) -> Lease {
        let state = Arc::new(Mutex::new(State { version, lost: false }));
        let renewer = tokio::spawn(renew(Arc::clone(&store), path.clone(), Arc::clone(&state), owner));
        Lease { store, path, state, renewer }
    }

    /// Gives the lease back: stops renewing it and deletes it (unless it was lost to another holder).
    pub async fn release(self) {
        self.renewer.abort();
        let lost = self.state.lock().unwrap_or_else(|e| e.into_inner()).lost;
        if !lost {
            if let Err(err) = self.store.delete(&self.path).await {
                tracing::warn!("write lock `{}` not released (it expires in {}s): {err}", self.path, TTL.as_secs());
            }
        }
    }
}

impl Drop for Lease {
    /// Stops renewing: a lease dropped without [`Lease::release`] (a failed or cancelled write) expires.
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew(store: Arc<dyn ObjectStore>, path: Path, state: Arc<Mutex<State>>, owner: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let version = state.lock().unwrap_or_else(|e| e.into_inner()).version.clone();
        let update = PutOptions::from(PutMode::Update(version));
        match store.put_opts(&path, Body::new(&owner).bytes().into(), update).await {
            Ok(result) => state.lock().unwrap_or_else(|e| e.into_inner()).version = version_of(&result),
            Err(ObjectStoreError::Precondition { .. } | ObjectStoreError::NotFound { .. }) => {
                tracing::error!("write lock `{path}` was lost: it was not renewed for {}s", TTL.as_secs());
                state.lock().unwrap_or_else(|e| e.into_inner()).lost = true;
                return;
            }
            // A failed renewal is retried at the next tick; the lease lasts TTL since the last good one.
            Err(err) => tracing::warn!("write lock `{path}` not renewed: {err}"),
        }
    }
}
