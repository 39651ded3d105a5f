//! A TCP proxy that a test can sever, to simulate a broker outage without touching the shared
//! broker (`TcpProxy::start(broker_addr)`, then point the client at `proxy.port()`):
//! - `cut()`: resets every established connection (RST, as after a crash) and black-holes new
//!   ones (accepted, then never forwarded nor answered, like a dead network path);
//! - `freeze()`: established connections stay open but nothing flows any more, in either
//!   direction (a silent partition: no RST, no FIN), and new ones are black-holed too;
//! - `stall_replies()`: like `freeze`, but client → server bytes still flow: the server acts on
//!   requests whose answers never arrive (e.g. a message stored, its confirm lost);
//! - `restore()`: resets whatever was held, so clients notice at once, and forwards again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Frozen,
    StallReplies,
}

pub struct TcpProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        Self::start_on(0, upstream).await
    }

    /// Listens on 127.0.0.1:`port` (for a broker that advertises the proxy's address, as
    /// Kafka does) and forwards every connection to `upstream`.
    pub async fn start_on(port: u16, upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(watch::channel(Mode::Open).0);
        let mode2 = mode.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(handle(client, upstream, mode2.subscribe()));
            }
        });
        TcpProxy { addr, mode, accept }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every established connection and black-holes new ones until `restore`.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops all traffic without closing anything until `restore`.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Requests still reach the server; its replies are held. Until `restore` or `cut`.
    pub fn stall_replies(&self) {
        self.mode.send_replace(Mode::StallReplies);
    }

    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Close whatever is still open.
        self.mode.send_replace(Mode::Cut);
    }
}

async fn handle(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    reset_on_close(&client);
    if *mode.borrow_and_update() != Mode::Open {
        // Black hole: hold the connection silently until the link is restored, then reset it.
        let _ = mode.wait_for(|m| *m == Mode::Open).await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    reset_on_close(&server);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    // Once interrupted (cut, frozen or stalled), a connection is reset on `cut` or `restore`.
    let ended = {
        let mut mode = mode.clone();
        async move {
            let _ = mode.wait_for(|m| *m != Mode::Open).await;
            let _ = mode.wait_for(|m| *m == Mode::Cut || *m == Mode::Open).await;
        }
    };
    tokio::select! {
        _ = pump(client_r, server_w, mode.clone(), true) => {}
        _ = pump(server_r, client_w, mode, false) => {}
        _ = ended => {}
    }
    // Dropping both sockets (linger 0) resets them.
}

/// Copies one direction while the mode lets it flow; bytes read meanwhile are held.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    upstream: bool,
) {
    let flows = move |m: &Mode| *m == Mode::Open || (upstream && *m == Mode::StallReplies);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let open = mode.wait_for(flows).await.is_ok();
        if !open {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let open = mode.wait_for(flows).await.is_ok();
        if !open || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Linger 0: closing sends RST, as a crashed peer or a dropped NAT entry would.
#[allow(deprecated)] // deprecated because a non-zero linger blocks on drop; zero never blocks
fn reset_on_close(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}
