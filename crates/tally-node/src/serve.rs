//! The API's listener: connections bounded in number, in time and in header bytes, and a
//! shutdown that ends within a bounded time whatever clients do.
//!
//! A connection is what a client can hold without limit otherwise: each costs an open file,
//! which the node shares with RocksDB and its peers, and buffers for its headers. So:
//! - at most `connections_max` are open; a newcomer beyond it is answered 503
//!   `too_many_connections` and closed, so the client hears why and the node's files stay its
//!   own;
//! - the head of each request (its start line and headers) must arrive within
//!   `header_timeout_ms` of the connection opening or of the previous response, which also
//!   closes a kept-alive connection left idle that long; it may hold at most `header_bytes_max`
//!   bytes (431 beyond);
//! - a body must arrive within `body_timeout_ms` ([`crate::api`], 408 `body_timeout`), and a
//!   response that makes no progress for `write_timeout_ms` (a client that stopped reading)
//!   closes the connection;
//! - at shutdown, connections finish the request they are serving and close; those still open
//!   after `shutdown_grace_ms` are cut.

use crate::config::ApiSection;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tally_network::summary::SummaryLog;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The smallest read buffer hyper accepts; the header limit is enforced separately.
const READ_BUFFER_MIN: usize = 8192;

/// Refusals being written at once. While this many are, the node accepts nothing more and
/// newcomers wait in the kernel's backlog, so that every accepted connection is answered rather
/// than reset.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// How long a refused client is given to read its 503 and close. Closing first, with its
/// request unread, would reset the connection and lose the answer; a client that keeps a
/// refusal this long keeps a place of [`REFUSALS_IN_FLIGHT_MAX`].
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// What the API's connections did, for the status API.
#[derive(Debug, Default)]
pub struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_over_limit: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    cut_at_shutdown: AtomicU64,
    accept_errors: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections answered 503 `too_many_connections`.
    pub refused_over_limit: u64,
    /// Connections closed because a request's head did not arrive in time (or sat idle).
    pub header_timeouts: u64,
    /// Requests answered 408 because their body did not arrive in time.
    pub body_timeouts: u64,
    /// Connections closed because a response made no progress in time.
    pub write_timeouts: u64,
    /// Connections still open when the shutdown grace ran out, and cut.
    pub cut_at_shutdown: u64,
    /// Failed accepts (for example, out of open files).
    pub accept_errors: u64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a body that did not arrive in time.
    pub fn body_timed_out(&self) {
        Self::bump(&self.body_timeouts);
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            open: g(&self.open),
            accepted: g(&self.accepted),
            refused_over_limit: g(&self.refused_over_limit),
            header_timeouts: g(&self.header_timeouts),
            body_timeouts: g(&self.body_timeouts),
            write_timeouts: g(&self.write_timeouts),
            cut_at_shutdown: g(&self.cut_at_shutdown),
            accept_errors: g(&self.accept_errors),
        }
    }
}

/// Closes the open count when a connection's task ends, however it ends.
struct Open(Arc<Counters>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer to a connection over `connections_max`, in the API's error shape.
fn refusal_response(connections_max: usize) -> Vec<u8> {
    let body = serde_json::json!({ "error": {
        "code": "too_many_connections",
        "detail": format!("the node serves at most {connections_max} connections at once; try again shortly"),
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `cancel` fires, within the limits of `api`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    api: ApiSection,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let service = app;
    let refusal = Arc::new(refusal_response(api.connections_max));
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    let errors = SummaryLog::new(
        "API connection refused",
        "more API connections refused",
        tally_network::REFUSALS_LOGGED_EVERY,
    );
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            accepted = listener.accept(),
                if open(&counters) < api.connections_max
                    || refusals.len() < REFUSALS_IN_FLIGHT_MAX =>
            {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        Counters::bump(&counters.accept_errors);
                        errors.note("accept_error", &e);
                        // Out of files, most likely: give connections time to close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if open(&counters) >= api.connections_max {
                    Counters::bump(&counters.refused_over_limit);
                    errors.note("over_limit", &"connections_max reached");
                    refusals.spawn(refuse(stream, refusal.clone()));
                    continue;
                }
                Counters::bump(&counters.accepted);
                counters.open.fetch_add(1, Ordering::Relaxed);
                let open = Open(counters.clone());
                connections.spawn(connection(
                    stream,
                    service.clone(),
                    api.clone(),
                    cancel.clone(),
                    open,
                ));
            }
        }
    }
    refusals.abort_all();
    let grace = Duration::from_millis(api.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let cut = counters.open.load(Ordering::Relaxed);
        counters.cut_at_shutdown.fetch_add(cut, Ordering::Relaxed);
        tracing::warn!(
            connections = cut,
            grace_ms = api.shutdown_grace_ms,
            "API connections still open at the end of the shutdown grace; cut"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Connections whose task has not ended: the cap counts these, not tasks yet to be reaped.
fn open(counters: &Counters) -> usize {
    counters.open.load(Ordering::Relaxed) as usize
}

/// Answers 503 and closes, giving the client a moment to read the answer.
async fn refuse(stream: TcpStream, response: Arc<Vec<u8>>) {
    let answer = async {
        let mut sent = 0;
        while sent < response.len() {
            stream.writable().await?;
            match stream.try_write(&response[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let stream = stream.into_std()?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let stream = TcpStream::from_std(stream)?;
        // Read (and drop) what the client sent, so that closing does not reset the connection
        // before the client has read the answer.
        let mut sink = [0u8; 1024];
        loop {
            stream.readable().await?;
            match stream.try_read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
}

/// The router, with the connection's remote address put into each request (axum's
/// `ConnectInfo`), so that a route can tell a caller on this host from the rest.
#[derive(Clone)]
struct WithPeer {
    router: axum::Router,
    peer: Option<std::net::SocketAddr>,
}

impl<B> tower_service::Service<hyper::Request<B>> for WithPeer
where
    axum::Router: tower_service::Service<hyper::Request<B>>,
{
    type Response = <axum::Router as tower_service::Service<hyper::Request<B>>>::Response;
    type Error = <axum::Router as tower_service::Service<hyper::Request<B>>>::Error;
    type Future = <axum::Router as tower_service::Service<hyper::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<hyper::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: hyper::Request<B>) -> Self::Future {
        if let Some(peer) = self.peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        self.router.call(request)
    }
}

/// Serves one connection until it closes, times out, or the node stops.
async fn connection(
    stream: TcpStream,
    router: axum::Router,
    api: ApiSection,
    cancel: CancellationToken,
    open: Open,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(api.header_timeout_ms))
        .max_header_size(api.header_bytes_max)
        .max_buf_size(api.header_bytes_max.max(READ_BUFFER_MIN));
    let stream = WriteDeadline {
        stream,
        limit: Duration::from_millis(api.write_timeout_ms),
        stalled: None,
    };
    let service = TowerToHyperService::new(WithPeer { peer, router });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            Counters::bump(&open.0.header_timeouts);
        } else if write_timed_out(&e) {
            Counters::bump(&open.0.write_timeouts);
        }
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

/// Whether a connection ended because a response stalled ([`WriteDeadline`]).
fn write_timed_out(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A connection whose writes may not stall for longer than `limit`. hyper waits for a client
/// to read its response for as long as it takes, so a client that asks and never reads would
/// hold its place among `connections_max` for good.
struct WriteDeadline {
    stream: TcpStream,
    limit: Duration,
    /// Armed when a write cannot go on, disarmed when one does.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    /// A write that could not go on: fails once it has waited `limit`.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of its response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes on a write's result, timing it while it cannot go on.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        done: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match done {
            Poll::Pending => self.waiting(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.timed(cx, done)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.timed(cx, done)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.stream).poll_flush(cx);
        this.timed(cx, done)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.timed(cx, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn any_port() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn limits(connections_max: usize) -> ApiSection {
        ApiSection {
            listen: any_port(),
            connections_max,
            header_timeout_ms: 500,
            write_timeout_ms: 300,
            shutdown_grace_ms: 500,
            ..ApiSection::default()
        }
    }

    /// Sends a request on a fresh connection and reads the whole answer (the node closes).
    fn ask(addr: std::net::SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET / HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_over_the_cap_is_answered_503_and_a_silent_one_is_cut() {
        let listener = TcpListener::bind(any_port()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "served" }))
            .route("/big", axum::routing::get(|| async { vec![7u8; 1 << 20] }));
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            app,
            limits(1),
            counters.clone(),
            cancel.clone(),
        ));

        let answer = tokio::task::spawn_blocking(move || ask(addr))
            .await
            .expect("ask");
        assert!(answer.contains("served"), "{answer}");
        // One silent connection takes the only place...
        let silent = std::net::TcpStream::connect(addr).expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = tokio::task::spawn_blocking(move || ask(addr))
            .await
            .expect("ask");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("too_many_connections"), "{answer}");
        // ...until its header timeout cuts it, and the next client is served.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let answer = tokio::task::spawn_blocking(move || ask(addr))
            .await
            .expect("ask");
        assert!(answer.contains("served"), "{answer}");
        drop(silent);
        let seen = counters.snapshot();
        assert_eq!(
            (seen.refused_over_limit, seen.header_timeouts),
            (1, 1),
            "{seen:?}"
        );

        // A client that asks for more than the socket buffers hold and never reads is cut once
        // its response has stalled for the write timeout.
        let mut greedy = std::net::TcpStream::connect(addr).expect("connect");
        let asks = b"GET /big HTTP/1.1\r\nhost: node\r\n\r\n".repeat(64);
        greedy.write_all(&asks).expect("write");
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.snapshot().write_timeouts == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            counters.snapshot().write_timeouts,
            1,
            "{:?}",
            counters.snapshot()
        );
        drop(greedy);

        // Shutdown is bounded even with a client that never sends anything.
        let _hanging = std::net::TcpStream::connect(addr).expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = Instant::now();
        cancel.cancel();
        server.await.expect("join").expect("serve");
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "{:?}",
            stopping.elapsed()
        );
    }
}
