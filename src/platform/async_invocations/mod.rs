//! Async invocations: `POST /async/fn/{user}/{function}/…` is admitted like a normal call
//! (same invoke policy and body limit), stored (the body streamed to the spool on disk, see
//! [`super::async_spool`]), and answered 202 with an id at once. A worker
//! invokes it through the gateway as the caller, retrying with exponential back-off while the
//! instance is unavailable or answers 5xx/429, records the result and, when the request had
//! an `X-Callback-Url`, POSTs the result there.

use super::async_spool::{AsyncSpool, SpoolError};
use super::auth::Principal;
use super::gateway::{Gateway, GatewayError, Target, upstream_uri_of};
use super::model::{AsyncAccepted, AsyncState, AsyncStatus, FieldError};
use super::outbound::OutboundPolicy;
use super::store::{AsyncCall, AsyncRecord, AttemptResult, NewAsync, Store, StoreError};
use crate::platform::model::Named;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Attempts made before an invocation fails for good.
pub const MAX_ATTEMPTS: u32 = 5;
/// The wait after the first failed attempt; it doubles after each (1, 2, 4, 8 s).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Invocations running at once.
const PARALLEL: usize = 16;
/// How much of an answer is kept.
const RESPONSE_KEPT: usize = 256 * 1024;
/// Attempts to deliver a result to its callback URL.
const CALLBACK_ATTEMPTS: u32 = 3;
/// Unfinished invocations one instance may have queued.
pub const MAX_QUEUED_PER_INSTANCE: u64 = 1000;
/// Request bytes one instance's unfinished invocations may hold.
pub const MAX_QUEUED_BYTES_PER_INSTANCE: u64 = 256 * 1024 * 1024;
/// Request bytes all uploads being received for the queue may reserve at once (each reserves its
/// declared length, or its function's body limit): what a flood of slow uploads can hold open.
pub const MAX_UPLOADING_BYTES: u64 = 64 * 1024 * 1024;
/// How long a finished invocation's status and result stay readable.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often finished invocations past [`RETENTION`] are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Why an async invocation could not be queued or shown.
#[derive(Debug, thiserror::Error)]
pub enum AsyncError {
    /// The gateway would not admit it.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A request field is invalid.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The instance's queue is full.
    #[error("the async queue of this instance of {function} already holds {held}; wait for some to finish")]
    QueueFull {
        /// The function.
        function: String,
        /// What the queue holds: `1000 invocations` or `256 MiB of requests`.
        held: String,
    },
    /// Too many request bodies are being received for the queue at once.
    #[error("kubefn is receiving too many queued requests at once; try again in a second")]
    UploadsBusy,
    /// No such invocation, or not the caller's.
    #[error("no async invocation {id} of yours exists")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The request body did not arrive whole.
    #[error("the request body broke off before it was received; send it again")]
    BodyBroken(#[source] SpoolError),
    /// The spool on disk failed.
    #[error("the async queue cannot keep the request")]
    Spool(#[source] SpoolError),
    /// The store failed.
    #[error("the async queue failed")]
    Store(#[from] StoreError),
}

/// The queue and its worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct AsyncInvocations {
    store: Store,
    gateway: Gateway,
    queued: Arc<Notify>,
    /// Where callbacks may go.
    outbound: OutboundPolicy,
    /// KiB of request bodies being received, out of [`MAX_UPLOADING_BYTES`].
    uploading: Arc<Semaphore>,
    /// Where the queued requests' bodies are.
    spool: AsyncSpool,
}

/// Room reserved for one request body being received ([`AsyncInvocations::reserve_upload`]);
/// returned when dropped.
#[derive(Debug)]
pub struct UploadRoom(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl AsyncInvocations {
    /// The queue over the store, its bodies in `spool`, invoking through `gateway`, calling
    /// back only where `outbound` allows.
    pub fn new(store: Store, spool: AsyncSpool, gateway: Gateway, outbound: OutboundPolicy) -> AsyncInvocations {
        let kib = usize::try_from(MAX_UPLOADING_BYTES / 1024).unwrap_or(usize::MAX);
        AsyncInvocations {
            store,
            gateway,
            queued: Arc::new(Notify::new()),
            outbound,
            uploading: Arc::new(Semaphore::new(kib)),
            spool,
        }
    }

    /// Reserves room for a request body of up to `bytes` (its declared length, or the function's
    /// limit) before it is read, so a flood of large uploads is refused rather than buffered.
    pub fn reserve_upload(&self, bytes: u64) -> Result<UploadRoom, AsyncError> {
        let kib = u32::try_from(bytes.div_ceil(1024).clamp(1, MAX_UPLOADING_BYTES / 1024)).unwrap_or(u32::MAX);
        self.uploading.clone().try_acquire_many_owned(kib).map(UploadRoom).map_err(|_| AsyncError::UploadsBusy)
    }

    /// Deletes invocations that finished more than [`RETENTION`] before `now`.
    pub async fn purge_finished(&self, now: DateTime<Utc>) -> Result<u64, AsyncError> {
        let retention = chrono::Duration::from_std(RETENTION).unwrap_or(chrono::Duration::days(7));
        Ok(self.store.delete_finished_async(now - retention).await?)
    }

    /// Queues a request for `target`, which the gateway admitted for `caller`
    /// ([`Gateway::admit`]), streaming `body` to the spool as it arrives: up to the function's
    /// body limit, and the room left in the instance's queue.
    pub async fn enqueue<S, E>(
        &self,
        caller: Option<&Principal>,
        target: &Target,
        call: AsyncCall,
        body: S,
    ) -> Result<AsyncAccepted, AsyncError>
    where
        S: futures::Stream<Item = Result<hyper::body::Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(url) = &call.callback_url {
            let (host, port) = check_callback_url(url).map_err(AsyncError::Invalid)?;
            // Resolved now so the caller hears at once; resolved again when the callback is made.
            self.outbound
                .resolve(&host, port)
                .await
                .map_err(|error| AsyncError::Invalid(FieldError::new("X-Callback-Url", error.to_string())))?;
        }
        let (count, bytes) = self.store.unfinished_async(target.function_id, target.owner_id).await?;
        let queue_full = |held: String| AsyncError::QueueFull { function: target.function.clone(), held };
        let bytes_held = || queue_full(format!("{} MiB of requests", MAX_QUEUED_BYTES_PER_INSTANCE / (1024 * 1024)));
        if count >= MAX_QUEUED_PER_INSTANCE {
            return Err(queue_full(format!("{MAX_QUEUED_PER_INSTANCE} invocations")));
        }
        let room = MAX_QUEUED_BYTES_PER_INSTANCE.saturating_sub(bytes);
        let limit = target.policy.max_body_bytes.min(room);
        let id = uuid::Uuid::new_v4().to_string();
        let received = self.spool.receive(&id, body, limit).await.map_err(|error| match error {
            SpoolError::TooLarge { .. } if limit < target.policy.max_body_bytes => bytes_held(),
            SpoolError::TooLarge { .. } => {
                GatewayError::TooLarge { function: target.function.clone(), limit: target.policy.max_body_bytes }.into()
            }
            SpoolError::Broken(_) => AsyncError::BodyBroken(error),
            SpoolError::Io { .. } => AsyncError::Spool(error),
        })?;
        let new = NewAsync {
            id: id.clone(),
            function_id: target.function_id,
            user_id: target.owner_id,
            caller_id: caller.map(|c| c.id),
            call,
            body_bytes: received.bytes,
            inline_body: received.inline,
        };
        if let Err(error) = self.store.insert_async(&new, Utc::now()).await {
            self.spool.remove(&id).await;
            return Err(error.into());
        }
        self.queued.notify_one();
        Ok(AsyncAccepted { status_url: format!("/api/v1/async/{id}"), id })
    }

    /// An invocation's state and result, for whoever queued it, the instance's user and
    /// admins (an anonymous call's id is its own key: anyone holding it may look).
    pub async fn status(&self, caller: Option<&Principal>, id: &str) -> Result<AsyncStatus, AsyncError> {
        let not_found = || AsyncError::NotFound { id: id.to_string() };
        let (status, caller_id, user_id) = self.store.async_status(id).await?.ok_or_else(not_found)?;
        let allowed = match (caller_id, caller) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(asker), Some(caller)) => caller.id == asker || caller.id == user_id || caller.is_admin(),
        };
        if allowed { Ok(status) } else { Err(not_found()) }
    }

    /// Works off the queue until aborted (with the attempts under way): invocations left
    /// running by a stopped kubefn, or by a leader that stepped down, go back to the queue first.
    /// Run in one process at a time (the leader): an attempt cut short is made again, so a
    /// function may see a call twice, never zero times.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            match this.store.requeue_interrupted_async(Utc::now()).await {
                Ok(0) => {}
                Ok(requeued) => {
                    tracing::warn!(requeued, "async invocations cut short by a stop of kubefn are queued again")
                }
                Err(error) => tracing::error!(error = %super::error_chain(&error), "cannot requeue async invocations"),
            }
            if let Err(error) = this.sweep_spool().await {
                tracing::error!(error = %super::error_chain(&error), "cannot clear the async spool of bodies nobody waits for");
            }
            let slots = Arc::new(Semaphore::new(PARALLEL));
            // Held here so that aborting the worker (kubefn stops, or no longer leads) stops its
            // attempts too: the next leader puts them back in the queue.
            let mut attempts = tokio::task::JoinSet::new();
            let mut purged_at: Option<std::time::Instant> = None;
            loop {
                while attempts.try_join_next().is_some() {}
                if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    purged_at = Some(std::time::Instant::now());
                    match this.purge_finished(Utc::now()).await {
                        Ok(0) => {}
                        Ok(deleted) => {
                            tracing::info!(deleted, "finished async invocations past their retention deleted")
                        }
                        Err(error) => {
                            tracing::error!(error = %super::error_chain(&error), "cannot delete old async invocations")
                        }
                    }
                }
                let free = u32::try_from(slots.available_permits()).unwrap_or(0);
                let claimed =
                    if free == 0 { Ok(Vec::new()) } else { this.store.claim_due_async(Utc::now(), free).await };
                match claimed {
                    Ok(records) => {
                        for record in records {
                            let Ok(permit) = slots.clone().acquire_owned().await else { return };
                            let this = this.clone();
                            attempts.spawn(async move {
                                this.attempt(record).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(error) => tracing::error!(error = %super::error_chain(&error), "cannot read the async queue"),
                }
                // Woken at once by a new invocation; otherwise look for due retries twice a second.
                let _ = tokio::time::timeout(Duration::from_millis(500), this.queued.notified()).await;
            }
        })
    }

    /// Deletes the spooled bodies no unfinished invocation names: those of a kubefn that
    /// stopped between keeping a body and queueing its invocation, or before deleting a
    /// finished one's. Runs before the worker's first claim; how many.
    pub async fn sweep_spool(&self) -> Result<usize, AsyncError> {
        let unfinished = self.store.unfinished_spooled_async().await?;
        let deleted = self.spool.sweep(&unfinished).await.map_err(AsyncError::Spool)?;
        if deleted > 0 {
            tracing::info!(deleted, "async request bodies that no queued invocation needs were deleted");
        }
        Ok(deleted)
    }

    /// One attempt: invoke, then record the result (and deliver it when final).
    async fn attempt(&self, record: AsyncRecord) {
        let attempts = u32::try_from(record.attempts).unwrap_or(u32::MAX);
        let outcome = self.invoke(&record).await;
        let result = attempt_result(attempts, outcome, Utc::now());
        if let Err(error) = self.store.finish_attempt(&record.id, &result).await {
            tracing::error!(id = %record.id, error = %super::error_chain(&error), "cannot record an async attempt");
            return;
        }
        if result.state != AsyncState::Queued {
            self.spool.remove(&record.id).await;
        }
        if result.state != AsyncState::Queued
            && let Some(url) = &record.call.callback_url
        {
            let delivered = deliver(&self.outbound, url, &record.id, &result).await;
            if let Err(error) = self.store.set_callback_result(&record.id, &delivered).await {
                tracing::error!(id = %record.id, error = %super::error_chain(&error), "cannot record a callback");
            }
        }
    }

    /// Invokes as the caller: the status, the answer (cut at [`RESPONSE_KEPT`]) and its type,
    /// or whether to retry and why not.
    async fn invoke(&self, record: &AsyncRecord) -> Result<Answered, NoAnswer> {
        let caller = match record.caller_id {
            Some(id) => match self.store.user_by_id(id).await {
                Ok(Some(user)) => Some(Principal::from(&user)),
                Ok(None) => return Err(NoAnswer::new(false, "the account that queued it no longer exists")),
                Err(error) => return Err(NoAnswer::new(true, super::error_chain(&error))),
            },
            None => None,
        };
        let uri = upstream_uri_of(&record.call.path)
            .map_err(|e| NoAnswer::new(false, format!("the path cannot be sent: {e}")))?;
        let mut request = http::Request::builder()
            .method(record.call.method.as_str())
            .uri(uri)
            .header("x-kubefn-async-id", record.id.as_str());
        if let Some(content_type) = &record.call.content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type.as_str());
        }
        // Read from the spool as it is sent, never whole; a body queued before bodies moved
        // there is still inline.
        let body: http_body_util::combinators::BoxBody<hyper::body::Bytes, std::io::Error> = if record.body_spooled {
            let chunks = self.spool.body(&record.id).await.map_err(|e| {
                NoAnswer::new(false, format!("the queued request body is gone: {}", super::error_chain(&e)))
            })?;
            http_body_util::StreamBody::new(chunks.map_ok(hyper::body::Frame::data)).boxed()
        } else {
            http_body_util::Full::new(hyper::body::Bytes::from(record.inline_body.clone()))
                .map_err(|never| match never {})
                .boxed()
        };
        let request =
            request.body(body).map_err(|e| NoAnswer::new(false, format!("the request cannot be built: {e}")))?;
        let response =
            self.gateway.invoke(caller.as_ref(), &record.user, &record.function, request, None).await.map_err(
                |error| {
                    // Unavailable, overloaded or broken on the way: worth another try; refusals are not.
                    NoAnswer::new(error.is_transient(), super::error_chain(&error))
                },
            )?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = response
            .into_body()
            .read_start(RESPONSE_KEPT)
            .await
            .map_err(|e| NoAnswer::new(true, format!("the answer broke off: {e}")))?
            .bytes;
        Ok(Answered { status, body, content_type })
    }
}

/// What the function answered to an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// Its HTTP status.
    pub status: u16,
    /// Its body (cut at 256 KiB).
    pub body: Vec<u8>,
    /// Its Content-Type.
    pub content_type: Option<String>,
}

/// Why an attempt got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoAnswer {
    /// Whether another try may help (the instance unavailable or overloaded).
    pub retryable: bool,
    /// What happened.
    pub reason: String,
}

impl NoAnswer {
    fn new(retryable: bool, reason: impl Into<String>) -> NoAnswer {
        NoAnswer { retryable, reason: reason.into() }
    }
}

/// What attempt number `attempts` leads to, given the function's answer (status, body,
/// type) or the reason it got none and whether that is worth another try: success below
/// 400; another attempt after 5xx, 429 or an unavailable instance, with the wait doubling
/// from [`FIRST_BACKOFF`]; failure for other 4xx and after [`MAX_ATTEMPTS`].
pub fn attempt_result(attempts: u32, outcome: Result<Answered, NoAnswer>, now: DateTime<Utc>) -> AttemptResult {
    let retry_at = || {
        let wait = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)));
        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
    };
    let (status, response, response_type, retryable, error) = match outcome {
        Ok(Answered { status, body, content_type }) => {
            let error = if status < 400 {
                String::new()
            } else {
                format!("attempt {attempts}: the function answered {status}")
            };
            (Some(status), Some(body), content_type, status >= 500 || status == 429, error)
        }
        Err(NoAnswer { retryable, reason }) => (None, None, None, retryable, format!("attempt {attempts}: {reason}")),
    };
    let state = if status.is_some_and(|s| s < 400) {
        AsyncState::Succeeded
    } else if retryable && attempts < MAX_ATTEMPTS {
        AsyncState::Queued
    } else {
        AsyncState::Failed
    };
    AttemptResult {
        state,
        next_attempt_at: (state == AsyncState::Queued).then(retry_at),
        status,
        response,
        response_type,
        error,
        finished_at: (state != AsyncState::Queued).then_some(now),
    }
}

/// Checks an `X-Callback-Url`: an absolute `http://` URL; its host and port.
pub fn check_callback_url(url: &str) -> Result<(String, u16), FieldError> {
    let field =
        || FieldError::new("X-Callback-Url", format!("X-Callback-Url must be an absolute http:// URL (got {url:?})"));
    let uri: http::Uri = url.parse().map_err(|_| field())?;
    match uri.host() {
        Some(host) if uri.scheme_str() == Some("http") && !host.is_empty() => {
            Ok((host.to_string(), uri.port_u16().unwrap_or(80)))
        }
        _ => Err(field()),
    }
}

/// POSTs the result to the callback URL (a few tries); what happened, in words.
async fn deliver(outbound: &OutboundPolicy, url: &str, id: &str, result: &AttemptResult) -> String {
    let mut last = String::new();
    for attempt in 1..=CALLBACK_ATTEMPTS {
        match post_callback(outbound, url, id, result).await {
            Ok(status) if status < 400 => return format!("delivered: {url} answered {status}"),
            Ok(status) => last = format!("{url} answered {status}"),
            Err(reason) => last = reason,
        }
        if attempt < CALLBACK_ATTEMPTS {
            tokio::time::sleep(FIRST_BACKOFF * attempt).await;
        }
    }
    format!("not delivered after {CALLBACK_ATTEMPTS} tries: {last}")
}

async fn post_callback(outbound: &OutboundPolicy, url: &str, id: &str, result: &AttemptResult) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let (host, port) = check_callback_url(url).map_err(|e| e.message)?;
    // Only the addresses just checked are dialled: a name that changed meanwhile (DNS
    // rebinding) cannot lead inside.
    let addresses = outbound.resolve(&host, port).await.map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&addresses[..]))
        .await
        .map_err(|_| format!("cannot connect to {host}:{port} within 10 s"))?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::post(path)
        .header(http::header::HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
        .header("x-kubefn-async-id", id)
        .header("x-kubefn-async-state", result.state.as_str());
    if let Some(status) = result.status {
        request = request.header("x-kubefn-function-status", status.to_string());
    }
    if !result.error.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&result.error.replace(['\r', '\n'], " "))
    {
        request = request.header("x-kubefn-error", value);
    }
    if let Some(content_type) = &result.response_type {
        request = request.header(http::header::CONTENT_TYPE, content_type.as_str());
    }
    let body = http_body_util::Full::new(hyper::body::Bytes::from(result.response.clone().unwrap_or_default()));
    let request = request.body(body).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests;
