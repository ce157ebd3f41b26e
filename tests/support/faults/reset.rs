//! Connection reset: a listener whose connections a request handler can abort,
//! so that the client gets no answer at all (TCP RST).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Per-connection handle given to the handler (as `ConnectInfo`).
#[derive(Clone, Debug)]
pub(super) struct Conn {
    reset: Arc<AtomicBool>,
}

impl Conn {
    /// The connection fails its next read or write and closes with a TCP RST,
    /// so the client gets no answer at all.
    pub(super) fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(super) struct KillableListener(pub(super) TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let reset = Arc::new(AtomicBool::new(false));
                    let conn = Conn {
                        reset: reset.clone(),
                    };
                    return (
                        KillableStream {
                            inner: stream,
                            reset,
                        },
                        conn,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()?;
        Ok(Conn {
            reset: Arc::default(),
        })
    }
}

pub(super) struct KillableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> std::io::Result<()> {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger(); // close with RST once dropped
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fault proxy: injected connection reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// An axum app served on a free port of 127.0.0.1 with resettable connections ([`Conn`]), on a
/// thread and runtime of its own so that it keeps answering while a test blocks its runtime;
/// it stops when dropped.
pub(super) struct ServerThread {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Binds a port, builds the app with its "http://127.0.0.1:PORT" URL, and serves it.
    pub(super) fn start(
        name: &str,
        app: impl FnOnce(&str) -> axum::Router,
    ) -> (String, ServerThread) {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("{name}: cannot bind: {e}"));
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{name}: set_nonblocking: {e}"));
        let url = format!("http://{}", std_listener.local_addr().expect("local addr"));
        let app = app(&url).into_make_service_with_connect_info::<Conn>();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let owned_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{owned_name}: runtime: {e}"));
                runtime.block_on(async move {
                    let listener = KillableListener(
                        TcpListener::from_std(std_listener)
                            .unwrap_or_else(|e| panic!("{owned_name}: listener: {e}")),
                    );
                    tokio::select! {
                        result = axum::serve(listener, app) => {
                            if let Err(e) = result { eprintln!("{owned_name} stopped: {e}") }
                        }
                        _ = stopped => {}
                    }
                });
            })
            .unwrap_or_else(|e| panic!("{name}: thread: {e}"));
        let server = ServerThread {
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        (url, server)
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
