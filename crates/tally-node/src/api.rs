//! The HTTP JSON API: submit signed entries, follow them to a block, query the ledger.
//!
//! Errors always have the same shape, `{"error": {"code": "...", "detail": "..."}}`, with the
//! stable codes of docs/entries.md, so the CLI and field apps can act on them.

use crate::ledger::EntryStatus;
use crate::Shared;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tally_state::records::{AttestationStatus, VoucherStatus};
use tally_state::StateRead;
use tally_types::{
    decode_entries, EntriesFormatError, EntryId, EntryOutcome, Name, PublicKey, SignedEntry,
    SubjectToken, ENTRY_BYTES_MAX,
};

/// An API error: an HTTP status, a stable code and a message for a person.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    fn bad_path(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", format!("{what}: {e}"))
    }
}

impl From<crate::NodeError> for ApiError {
    fn from(e: crate::NodeError) -> Self {
        tracing::error!(error = %e, "internal error serving API request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<tally_state::StateError> for ApiError {
    fn from(e: tally_state::StateError) -> Self {
        crate::NodeError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "code": self.code, "detail": self.detail } })),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;
type Ctx = AxState<Arc<Shared>>;

/// How far past its limit (`api.body_bytes_max`, `api.batch_bytes_max`) a body is read and
/// thrown away before the 413 goes out. HTTP/1.1 clients commonly send the whole body before
/// they read the answer; cut off mid-body, they see a broken connection instead of the reason.
/// A body that declares more is cut off at once.
pub const DRAIN_BYTES_MAX: usize = 1024 * 1024;

/// How long that draining may take, so a client that stops sending cannot hold the request.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(5);

/// The router; the request body limits are `api.body_bytes_max` and, for batches,
/// `api.batch_bytes_max`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/admin/backup", post(backup))
        .route("/v1/entries", post(submit))
        .route("/v1/entries/batch", post(submit_batch))
        .route("/v1/entries/{id}", get(entry))
        .route("/v1/entries/{id}/proof", get(proof))
        .route("/v1/keys/{key}", get(key))
        .route("/v1/keys/{key}/signing", get(signing))
        .route("/v1/programmes", get(programmes))
        .route("/v1/programmes/{id}", get(programme))
        .route("/v1/programmes/{id}/vendors/{vendor}", get(vendor_account))
        .route("/v1/vouchers/{id}", get(voucher))
        .route("/v1/attestations/{id}", get(attestation))
        .route("/v1/registry/{id}", get(registry_record))
        .route("/v1/subjects/{token}", get(subject))
        .route("/v1/titles/{parcel}", get(title))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/blocks/{height}/raw", get(raw_block))
        .fallback(|| async { ApiError::not_found("such route; see docs/api.md") })
        .layer(axum::middleware::map_response(in_error_shape))
        .with_state(shared)
}

/// The HTTP framework's own refusals (a wrong method, a path that is not UTF-8 once decoded)
/// come as plain text or empty; clients read every error in one shape, so they are rewritten
/// to it, keeping their status, their headers (`Allow` says which methods a route takes) and
/// their text as the detail.
async fn in_error_shape(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_string(),
        text => text.to_string(),
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "malformed",
    };
    let mut shaped = ApiError::new(status, code, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().append(name.clone(), value.clone());
        }
    }
    shaped
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| ApiError::bad_path(what, e))
}

/// Alive: the process serves HTTP. Says nothing of the chain; that is `/readyz`.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "alive", "version": crate::metrics::VERSION }))
}

/// 200 when the node is fit to take traffic, 503 otherwise, with each check either way. Off
/// the async workers: it waits for the engine's lock, which a block's check holds.
async fn readyz(AxState(shared): Ctx) -> Response {
    let readiness = match blocking(move || Ok(crate::metrics::readiness(&shared))).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let status = match readiness.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(readiness)).into_response()
}

/// The figures: OpenMetrics to a scraper that asks for it (Prometheus does), Prometheus's
/// classic text format to anyone else.
async fn metrics(AxState(shared): Ctx, headers: HeaderMap) -> Result<Response, ApiError> {
    // Off the async workers: the engine's lock, RocksDB's properties and a walk of the data
    // directory.
    let page = blocking(move || crate::metrics::render(&shared)).await?;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    Ok(match openmetrics {
        true => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            page,
        )
            .into_response(),
        false => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::classic_text(&page),
        )
            .into_response(),
    })
}

/// Writes a backup on this node's host, into `node.backup_dir`. Only for callers on the
/// node's own host (a loopback address), since it writes to the node's disk; one at a time.
async fn backup(
    AxState(shared): Ctx,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> Result<Response, ApiError> {
    // `::ffff:127.0.0.1` (IPv4 on a dual-stack listener) is loopback too.
    if !peer.is_some_and(|p| p.0 .0.ip().to_canonical().is_loopback()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "backups are asked for from the node's own host (a loopback address)",
        ));
    }
    match blocking(move || shared.backup()).await? {
        Ok(b) => Ok((StatusCode::CREATED, Json(b)).into_response()),
        Err(crate::NotNow::Running) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_running",
            "another backup is being written; try again when it is done",
        )),
        Err(crate::NotNow::TooSoon { wait_s }) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_soon",
            format!(
                "a backup was written less than {} s ago; try again in {wait_s} s",
                crate::BACKUP_INTERVAL_MIN.as_secs()
            ),
        )),
    }
}

async fn status(AxState(shared): Ctx) -> ApiResult {
    // Off the async workers: it waits for the engine's lock, which a block's check holds.
    blocking(move || status_now(&shared)).await
}

fn status_now(shared: &Shared) -> Result<Json<Value>, crate::NodeError> {
    let readiness = crate::metrics::readiness(shared);
    let engine = shared.engine()?;
    let l = engine.ledger();
    let head = l.head();
    Ok(Json(json!({
        "version": crate::metrics::VERSION,
        "ready": readiness.ready,
        "readiness": readiness.checks,
        "chain_id": l.genesis.chain_id,
        "genesis_hash": l.genesis.hash(),
        "height": head.height,
        "head_hash": head.hash,
        "state_root": head.state_root,
        "head_timestamp_ms": head.timestamp.0,
        "mempool_entries": l.mempool().len(),
        "validators": l.state().validators()?,
        "node_key": shared.node_key,
        "limits": {
            "body_bytes_max": shared.api.body_bytes_max,
            "batch_entries_max": shared.api.batch_entries_max,
            "batch_bytes_max": shared.api.batch_bytes_max,
        },
        "signature_verifications": tally_types::verifications(),
        "consensus": shared.consensus_status(),
        "api": shared.http_status(),
        "network": shared.network_status().map(|(peers, dropped)| json!({
            "connected_peers": peers,
            "dropped": dropped,
        })),
    })))
}

async fn submit(AxState(shared): Ctx, headers: HeaderMap, body: Body) -> Response {
    let submitted = async {
        let body = read_body_in_time(&shared, &headers, body, shared.api.body_bytes_max).await?;
        let entry = if binary(&headers) {
            SignedEntry::from_bytes(&body).map_err(|e| malformed(e.to_string()))?
        } else {
            let e: SignedEntry = serde_json::from_slice(&body)
                .map_err(|e| malformed(format!("not a signed entry in JSON: {e}")))?;
            within_limit(&e)?;
            e
        };
        match admit(&shared, vec![entry]).await?.pop() {
            Some((id, Ok(()))) => Ok(id),
            Some((_, Err(r))) => Err(refusal(r)),
            None => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an entry went unanswered",
            )),
        }
    };
    match submitted.await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "status": "pending" })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Many entries in one request, for a gateway or a device syncing its outbox: one round trip,
/// and one batch check of their signatures. Each entry is admitted or refused on its own, in
/// the order sent, and answered in that order; a body that does not decode, or holds more than
/// `api.batch_entries_max` entries, admits none.
async fn submit_batch(
    AxState(shared): Ctx,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchAnswers>, ApiError> {
    let body = read_body_in_time(&shared, &headers, body, shared.api.batch_bytes_max).await?;
    let max = shared.api.batch_entries_max;
    let too_many = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("more than {max} entries in one batch"),
        )
    };
    let entries = if binary(&headers) {
        decode_entries(&body, max).map_err(|e| match e {
            EntriesFormatError::TooMany(_) => too_many(),
            e => malformed(e.to_string()),
        })?
    } else {
        let entries: Vec<SignedEntry> = serde_json::from_slice(&body)
            .map_err(|e| malformed(format!("not a JSON array of signed entries: {e}")))?;
        if entries.len() > max {
            return Err(too_many());
        }
        for (i, e) in entries.iter().enumerate() {
            within_limit(e).map_err(|e| malformed(format!("entry {i}: {}", e.detail)))?;
        }
        entries
    };
    let results = admit(&shared, entries)
        .await?
        .into_iter()
        .map(|(id, result)| match result {
            Ok(()) => BatchAnswer {
                id,
                status: "pending",
                error: None,
            },
            Err(r) => BatchAnswer {
                id,
                status: "refused",
                error: Some(BatchRefusal {
                    code: r.code.as_str(),
                    detail: r.detail,
                }),
            },
        })
        .collect();
    Ok(Json(BatchAnswers { results }))
}

/// The answer to a batch, written straight from these types rather than through a
/// `serde_json::Value` per entry: a gateway's batches are thousands of answers a second.
#[derive(Serialize)]
struct BatchAnswers {
    results: Vec<BatchAnswer>,
}

#[derive(Serialize)]
struct BatchAnswer {
    id: EntryId,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<BatchRefusal>,
}

#[derive(Serialize)]
struct BatchRefusal {
    code: &'static str,
    detail: String,
}

/// Admits entries off the async workers ([`blocking`]): admission checks signatures and waits
/// for the ledger lock, which the consensus driver holds while it commits.
async fn admit(
    shared: &Arc<Shared>,
    entries: Vec<SignedEntry>,
) -> Result<Vec<crate::Answer>, ApiError> {
    let shared = shared.clone();
    blocking(move || shared.submit(entries)).await
}

/// Runs work that may wait (on a lock, a disk read, a signature check) on the blocking pool,
/// so that it never stalls the workers that serve every other request.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::NodeError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

fn binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"))
}

fn malformed(detail: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", detail)
}

/// An entry that came as JSON must still fit [`ENTRY_BYTES_MAX`] once encoded.
fn within_limit(e: &SignedEntry) -> Result<(), ApiError> {
    let size = e.to_bytes().len();
    if size > ENTRY_BYTES_MAX {
        return Err(malformed(format!(
            "entry encodes to {size} bytes; the limit is {ENTRY_BYTES_MAX}"
        )));
    }
    Ok(())
}

/// The answer to a refused submission: the rejection's code, under the HTTP status a client
/// acts on (503: try later; 409: already there; 422: never valid as sent).
fn refusal(r: tally_state::Rejection) -> ApiError {
    let status = match r.code {
        tally_types::RejectCode::MempoolFull => StatusCode::SERVICE_UNAVAILABLE,
        tally_types::RejectCode::DuplicateEntry => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, r.code.as_str(), r.detail)
}

/// [`read_body`] within `api.body_timeout_ms`: a client that sends its headers and then its
/// body a byte at a time (or never) holds a connection and a worker no longer than that.
async fn read_body_in_time(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Bytes, ApiError> {
    let limit = std::time::Duration::from_millis(shared.api.body_timeout_ms);
    match tokio::time::timeout(limit, read_body(headers, body, max)).await {
        Ok(read) => read,
        Err(_) => {
            shared.body_timed_out();
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    shared.api.body_timeout_ms
                ),
            ))
        }
    }
}

/// Reads a request body of at most `max` bytes. A longer one is refused with 413 after the
/// rest of it is drained (up to [`DRAIN_BYTES_MAX`] past `max`, for at most [`DRAIN_TIME_MAX`]),
/// so that the client reads the refusal rather than a reset connection. A client that asked
/// to hear first (`Expect: 100-continue`) is refused before it sends anything.
async fn read_body(headers: &HeaderMap, mut body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {max} bytes"),
        )
    };
    // The length the connection's framing promises (a Content-Length beside chunked
    // encoding is not one), at least what is sent.
    let declared = body.size_hint().lower();
    if declared > max as u64 {
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if declared <= (max + DRAIN_BYTES_MAX) as u64 && !waits {
            drain(body, 0, max + DRAIN_BYTES_MAX).await;
        }
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > max {
            drain(body, buf.len() + data.len(), max + DRAIN_BYTES_MAX).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops the rest of a body of which `seen` bytes were read, until it has read
/// `until` bytes in all or [`DRAIN_TIME_MAX`] has passed.
async fn drain(mut body: Body, mut seen: usize, until: usize) {
    let read = async {
        while seen <= until {
            let Some(Ok(frame)) = body.frame().await else {
                break;
            };
            seen += frame.data_ref().map_or(0, |d| d.len());
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME_MAX, read).await;
}

async fn entry(AxState(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let id: EntryId = parse("entry id", &id)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let v = match l.status(&id)? {
        EntryStatus::Pending => json!({ "id": id, "status": "pending" }),
        EntryStatus::Ordered(rec) => match (rec.outcome, rec.rejection) {
            (EntryOutcome::Accepted, _) => {
                json!({ "id": id, "status": "committed", "height": rec.height, "index": rec.index })
            }
            (EntryOutcome::Rejected(code), r) => json!({
                "id": id, "status": "rejected", "height": rec.height, "index": rec.index,
                "reason": { "code": code, "detail": r.map(|r| r.detail).unwrap_or_default() },
            }),
        },
        EntryStatus::Refused(r) => json!({ "id": id, "status": "rejected", "reason": r }),
        EntryStatus::Unknown => return Err(ApiError::not_found(format_args!("entry {id}"))),
    };
    Ok(Json(v))
}

/// Runs a read of committed storage on the blocking pool, through a clone of the store: off the
/// async workers and without the ledger lock, for reads that touch many records.
async fn read_store<T: Send + 'static>(
    shared: &Shared,
    read: impl FnOnce(tally_storage::Store) -> Result<T, tally_storage::StorageError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = shared.store.clone();
    blocking(move || read(store).map_err(crate::NodeError::from)).await
}

/// The inclusion proof of an ordered entry; it reads every outcome of the entry's block.
async fn proof(AxState(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let id: EntryId = parse("entry id", &id)?;
    let p = read_store(&shared, move |store| store.inclusion_proof(&id))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format_args!("entry {id} in a committed block (yet)"))
        })?;
    Ok(Json(json!({
        "id": id,
        "height": p.header.height,
        "index": p.index,
        "outcome": p.outcome,
        "block_hash": p.header.hash(),
        "proof": hex::encode(p.to_bytes()),
    })))
}

async fn key(AxState(shared): Ctx, Path(k): Path<String>) -> ApiResult {
    let k: PublicKey = parse("public key", &k)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let rec = l
        .state()
        .key_record(&k)?
        .ok_or_else(|| ApiError::not_found(format_args!("registered key {k}")))?;
    let next_free = l.next_sequence(&k)?.unwrap_or(rec.next_sequence);
    Ok(Json(json!({
        "key": k,
        "agency": rec.agency,
        "roles": rec.roles,
        "next_sequence": rec.next_sequence,
        "next_free_sequence": next_free,
        "retired_for": rec.retired_for,
    })))
}

/// Everything a device needs to sign its next entry, in one answer, so that signing costs one
/// round trip before the post: the chain id the signature binds and the key's next free
/// sequence number. An unregistered key is an answer here (`registered: false`), not a 404,
/// because the device still needs the chain id to say which chain refused it.
async fn signing(AxState(shared): Ctx, Path(k): Path<String>) -> ApiResult {
    let k: PublicKey = parse("public key", &k)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let next_free = l.next_sequence(&k)?;
    Ok(Json(json!({
        "chain_id": l.genesis.chain_id,
        "key": k,
        "registered": next_free.is_some(),
        "next_free_sequence": next_free,
    })))
}

async fn programmes(AxState(shared): Ctx) -> ApiResult {
    let engine = shared.engine()?;
    let l = engine.ledger();
    let list: Vec<Value> = l
        .state()
        .programmes()?
        .into_iter()
        .map(|(id, p)| programme_json(&id, &p))
        .collect();
    Ok(Json(json!({ "programmes": list })))
}

fn programme_json(id: &Name, p: &tally_state::records::Programme) -> Value {
    let mut v = json!(p);
    v["id"] = json!(id);
    v["committed"] = json!(p.committed());
    v["available"] = json!(p.budget - p.committed());
    v
}

async fn programme(AxState(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let id: Name = parse("programme id", &id)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let p = l
        .state()
        .programme(&id)?
        .ok_or_else(|| ApiError::not_found(format_args!("programme {id}")))?;
    Ok(Json(programme_json(&id, &p)))
}

async fn vendor_account(
    AxState(shared): Ctx,
    Path((id, vendor)): Path<(String, String)>,
) -> ApiResult {
    let id: Name = parse("programme id", &id)?;
    let vendor: PublicKey = parse("vendor key", &vendor)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let a = l.state().vendor_account(&id, &vendor)?.ok_or_else(|| {
        ApiError::not_found(format_args!("redemptions for vendor {vendor} in {id}"))
    })?;
    Ok(Json(
        json!({ "programme": id, "vendor": vendor, "redeemed": a.redeemed, "settled": a.settled, "owed": a.redeemed - a.settled }),
    ))
}

async fn voucher(AxState(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let id: EntryId = parse("voucher id", &id)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let v = l
        .state()
        .voucher(&id)?
        .ok_or_else(|| ApiError::not_found(format_args!("voucher {id}")))?;
    let lapsed = v.status == VoucherStatus::Active && l.head().timestamp >= v.expires_at;
    let mut out = json!(v);
    out["id"] = json!(id);
    out["remaining"] = json!(v.remaining());
    out["redeemable"] = json!(v.status == VoucherStatus::Active && !lapsed);
    if lapsed {
        out["status"] = json!("expired");
    }
    Ok(Json(out))
}

async fn attestation(AxState(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let id: EntryId = parse("attestation id", &id)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let a = l
        .state()
        .attestation(&id)?
        .ok_or_else(|| ApiError::not_found(format_args!("attestation {id}")))?;
    let effective = match a.status {
        AttestationStatus::Active if l.head().timestamp >= a.expires_at => "expired",
        AttestationStatus::Active => "active",
        AttestationStatus::Suspended(_) => "suspended",
        AttestationStatus::Revoked(_) => "revoked",
    };
    let mut out = json!(a);
    out["id"] = json!(id);
    out["effective_status"] = json!(effective);
    Ok(Json(out))
}

async fn registry_record(AxState(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let id: EntryId = parse("record id", &id)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let r = l
        .state()
        .registry_record(&id)?
        .ok_or_else(|| ApiError::not_found(format_args!("registry record {id}")))?;
    let mut out = json!(r);
    out["id"] = json!(id);
    Ok(Json(out))
}

async fn subject(AxState(shared): Ctx, Path(token): Path<String>) -> ApiResult {
    let token: SubjectToken = parse("subject token", &token)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let s = l
        .state()
        .subject(&token)?
        .ok_or_else(|| ApiError::not_found("registry record for this subject"))?;
    Ok(Json(json!(s)))
}

async fn title(AxState(shared): Ctx, Path(parcel): Path<String>) -> ApiResult {
    let parcel: Name = parse("parcel", &parcel)?;
    let engine = shared.engine()?;
    let l = engine.ledger();
    let t = l
        .state()
        .title(&parcel)?
        .ok_or_else(|| ApiError::not_found(format_args!("title for parcel {parcel}")))?;
    let mut out = json!(t);
    out["parcel"] = json!(parcel);
    Ok(Json(out))
}

async fn block(AxState(shared): Ctx, Path(height): Path<String>) -> ApiResult {
    let height: u64 = parse("height", &height)?;
    let (b, cert) = read_store(&shared, move |store| store.certified_block(height))
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("block at height {height}")))?;
    let entries: Vec<Value> = b
        .entries
        .iter()
        .map(|e| json!({ "id": e.id(), "kind": e.body.payload.kind(), "author": e.body.author, "sequence": e.body.sequence }))
        .collect();
    Ok(Json(
        json!({ "hash": b.hash(), "header": b.header, "entries": entries, "certificate": cert }),
    ))
}

/// A committed block and its certificate as canonical bytes, for a client that verifies and
/// replays the chain itself (`tally audit report --node`) rather than trust the node's figures.
async fn raw_block(AxState(shared): Ctx, Path(height): Path<String>) -> ApiResult {
    let height: u64 = parse("height", &height)?;
    let (b, c) = read_store(&shared, move |store| store.certified_block(height))
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("block at height {height}")))?;
    Ok(Json(json!({
        "height": height,
        "block": hex::encode(tally_types::encode(&b)),
        "certificate": hex::encode(tally_types::encode(&c)),
    })))
}
