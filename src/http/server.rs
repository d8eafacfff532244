//! Sockets, threads and connections.
//!
//! One OS thread per worker, each running a single-threaded tokio runtime
//! with its own `SO_REUSEPORT` listener on the same address, so the kernel
//! spreads connections across cores and a connection never changes thread.
//! That makes per-worker state (counters, click buffer) plain thread-owned
//! data. The redirect route is answered synchronously inside the hyper
//! service; the API gets a boxed future.
//!
//! Time limits are enforced by one watchdog timer per connection rather than
//! hyper's header-read timeout, which arms (and allocates) a fresh timer for
//! every request: the watchdog wakes a few times per limit and drops a
//! connection that has sent part of a request without finishing it within
//! `header_timeout`, or has sent nothing within `idle_timeout`.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::problem::Body;
use super::router::{route, Route};
use super::{api, redirect, App, StartError, Worker};
use crate::analytics::capture::Visit;
use crate::clicks::{Aggregator, ClickSink, FLUSH_EVERY};
use crate::config::{Config, Switch};

/// How long a graceful shutdown waits for open connections to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
const LISTEN_BACKLOG: i32 = 4096;
/// Largest request head (request line plus headers) hyper buffers.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// A running server; dropping it without `shutdown` leaves threads running.
pub struct Server {
    app: Arc<App>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    aggregator: Aggregator,
}

/// Fails if any socket, of any process, holds `addr`. The workers' own
/// listeners share the port through `SO_REUSEPORT`, which would just as
/// gladly let a second server (another shortd, another data directory)
/// split connections with this one; a bind without it is refused by the
/// kernel whenever the port is taken, so it is tried first, then dropped.
fn ensure_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(e.kind(), "the address is already in use by another process (shortd or not)")
        } else {
            e
        }
    })
}

fn bind(addr: SocketAddr) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl Server {
    /// Opens the store, binds every worker's listener and starts serving.
    pub fn start(mut cfg: Config) -> Result<Server, StartError> {
        ensure_free(cfg.listen).map_err(|source| StartError::Listen { addr: cfg.listen, source })?;
        let first = bind(cfg.listen).map_err(|source| StartError::Listen { addr: cfg.listen, source })?;
        let addr = first.local_addr().map_err(|source| StartError::Listen { addr: cfg.listen, source })?;
        let mut listeners = vec![first];
        for _ in 1..cfg.workers {
            listeners.push(bind(addr).map_err(|source| StartError::Listen { addr, source })?);
        }
        // The bound port, for `--listen ...:0` (a default public URL names it).
        cfg.listen = addr;
        let app = Arc::new(App::open(cfg)?);
        let aggregator = Aggregator::start(app.store.clone(), app.hot.clone(), app.links.cluster().cloned(), app.analytics.clone());
        let (stop, _) = watch::channel(false);
        // Each worker has its own share of the connection limit: the kernel
        // queues a connection on one worker's listener, and only that worker
        // can take it, so a shared pool could leave it waiting behind a
        // permit that another worker holds.
        let per_worker = app.cfg.max_connections.div_ceil(app.cfg.workers);
        let mut workers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (app, stop, limit, sink) = (app.clone(), stop.subscribe(), Arc::new(Semaphore::new(per_worker)), aggregator.sink());
            let handle = std::thread::Builder::new()
                .name(format!("shortd-worker-{i}"))
                .spawn(move || worker_main(app, listener, stop, limit, sink))
                .map_err(StartError::Thread)?;
            workers.push(handle);
        }
        if let Some(cluster) = app.links.cluster() {
            cluster.run();
        }
        tracing::info!(%addr, workers = app.cfg.workers, data_dir = %app.cfg.data_dir.display(), "shortd serving");
        Ok(Server { app, addr, stop, workers, aggregator })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets open requests finish (up to a deadline), then
    /// persists clicks, writes a snapshot and closes the store.
    pub fn shutdown(mut self) {
        self.app.begin_shutdown();
        let _ = self.stop.send(true);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.aggregator.stop();
        if let Some(cluster) = self.app.links.cluster() {
            cluster.stop();
        }
        self.app.store.close();
        tracing::info!("shortd stopped");
    }
}

/// Blocking threads per worker, for redirects whose pages are not in
/// memory (`redirect::load_cold`): disk reads in flight at once.
pub const COLD_LOADS: usize = 32;

fn worker_main(app: Arc<App>, listener: StdListener, mut stop: watch::Receiver<bool>, limit: Arc<Semaphore>, sink: ClickSink) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(COLD_LOADS).build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let worker = Rc::new(Worker::new(&app, sink));
    local.block_on(&rt, async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register a listener");
                return;
            }
        };
        let flusher = {
            let worker = worker.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(super::CLOCK_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut last_flush = tokio::time::Instant::now();
                loop {
                    tick.tick().await;
                    worker.tick();
                    if last_flush.elapsed() >= FLUSH_EVERY {
                        worker.clicks.borrow_mut().flush();
                        last_flush = tokio::time::Instant::now();
                    }
                }
            })
        };
        let pump = tokio::task::spawn_local(pump_replies());
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                permit = limit.clone().acquire_owned() => {
                    let Ok(permit) = permit else { break };
                    let accepted = tokio::select! {
                        _ = stop.changed() => break,
                        a = listener.accept() => a,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let svc = Svc { app: app.clone(), worker: worker.clone(), peer, conn: Rc::new(ConnState::default()) };
                            let stop = stop.clone();
                            conns.spawn_local(async move {
                                serve_connection(stream, svc, stop).await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(DRAIN_DEADLINE, async { while conns.join_next().await.is_some() {} }).await;
        conns.abort_all();
        flusher.abort();
        pump.abort();
        worker.clicks.borrow_mut().flush();
    });
}

/// What the watchdog knows of a connection.
#[derive(Default)]
struct ConnState {
    /// Requests whose head has been parsed.
    requests: Cell<u64>,
    /// Bytes arrived since the last request was answered (or its head
    /// parsed, for redirects, which are answered at once).
    partial: Cell<bool>,
}

/// The socket, noting when bytes arrive.
struct Watched {
    stream: TcpStream,
    conn: Rc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.partial.set(true);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Resolves when the connection has overstayed a limit: a request begun
/// (bytes arrived since the last one was answered) and not complete within
/// `header_timeout` of its first byte, or nothing at all for `idle_timeout`.
async fn watchdog(conn: Rc<ConnState>, header_timeout: Duration, idle_timeout: Duration) {
    let period = (header_timeout.min(idle_timeout) / 4).max(Duration::from_millis(50));
    let mut seen = conn.requests.get();
    let mut progress = tokio::time::Instant::now();
    let mut partial_since = None;
    loop {
        tokio::time::sleep(period).await;
        let now = tokio::time::Instant::now();
        if conn.requests.get() != seen {
            seen = conn.requests.get();
            progress = now;
        }
        if !conn.partial.get() {
            partial_since = None;
            if now.duration_since(progress) >= idle_timeout {
                return;
            }
            continue;
        }
        let since = *partial_since.get_or_insert(now);
        if now.duration_since(since) >= header_timeout {
            return;
        }
    }
}

async fn serve_connection(stream: TcpStream, svc: Svc, mut stop: watch::Receiver<bool>) {
    let cfg = &svc.app.cfg;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .pipeline_flush(true)
        .max_buf_size(MAX_HEAD_BYTES.max(cfg.links.max_url_bytes + 8192))
        .max_headers(MAX_HEADERS);
    let overstayed = watchdog(svc.conn.clone(), cfg.header_timeout, cfg.idle_timeout);
    let io = TokioIo::new(Watched { stream, conn: svc.conn.clone() });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = overstayed => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_DEADLINE, conn).await;
        }
    }
}

/// The per-connection hyper service.
struct Svc {
    app: Arc<App>,
    worker: Rc<Worker>,
    peer: SocketAddr,
    conn: Rc<ConnState>,
}

pub enum SvcFuture {
    Ready(Ready<Result<Response<Body>, Infallible>>),
    Api(Pin<Box<dyn Future<Output = Response<Body>>>>),
}

impl Future for SvcFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            SvcFuture::Ready(r) => Pin::new(r).poll(cx),
            SvcFuture::Api(f) => f.as_mut().poll(cx).map(Ok),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = SvcFuture;

    fn call(&self, req: Request<Incoming>) -> SvcFuture {
        self.conn.requests.set(self.conn.requests.get() + 1);
        self.conn.partial.set(false);
        let method = req.method();
        let code = match route(req.uri().path()) {
            Route::Redirect(code) => Some(code),
            // With the UI off, a link made under the alias `ui` before it
            // was reserved is served again.
            Route::Ui("") if self.app.cfg.ui == Switch::Off => Some("ui"),
            _ => None,
        };
        if let Some(code) = code {
            if method == Method::GET || method == Method::HEAD {
                let head = method == Method::HEAD;
                if let Some(refused) = redirect::rate_limited(&self.app, self.peer, req.headers()) {
                    return SvcFuture::Ready(ready(Ok(refused)));
                }
                let visit = Visit { head, headers: req.headers(), peer: self.peer };
                return match redirect::serve(&self.app, &self.worker, code, &visit) {
                    redirect::Served::Now(resp) => SvcFuture::Ready(ready(Ok(resp))),
                    redirect::Served::Later(fetching) => SvcFuture::Api(fetching),
                };
            }
        }
        let (conn, app, peer) = (self.conn.clone(), self.app.clone(), self.peer);
        // The handler's future (a few KB) starts inside the box, so only
        // its arguments are moved there.
        SvcFuture::Api(Box::pin(async move {
            let resp = api::handle(app, peer, req).await;
            // The request body has been read; later bytes start the next request.
            conn.partial.set(false);
            resp
        }))
    }
}

/// Hands out the store writer's answers to this thread's commands, for as
/// long as the worker runs: a batch's answers for this thread arrive
/// together and wake it once.
async fn pump_replies() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<crate::store::Delivery>();
    crate::store::answer_on_this_thread(tx);
    while let Some(delivery) = rx.recv().await {
        delivery.deliver();
    }
}
