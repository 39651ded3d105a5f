//! What one connection attempt leaves behind, shared by the supervisor (which connects) and the
//! pool (which opens the connection's channels): the socket's slot, so a stalled connection can
//! be cut, and the error of an attempt.

use std::sync::{Arc, Mutex};

/// Why one connection attempt (or refilling the pool) failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub(super) struct ConnectError {
    context: String,
    #[source]
    source: Option<lapin::Error>,
}

impl ConnectError {
    pub(super) fn new(context: impl Into<String>, source: lapin::Error) -> Self {
        ConnectError {
            context: context.into(),
            source: Some(source),
        }
    }
    pub(super) fn plain(context: impl Into<String>) -> Self {
        ConnectError {
            context: context.into(),
            source: None,
        }
    }
    pub(super) fn detail(&self) -> String {
        match &self.source {
            Some(s) => format!("{}: {s}", self.context),
            None => self.context.clone(),
        }
    }
}

/// A duplicate of a connection's socket, so the supervisor can shut it down. lapin runs one I/O
/// thread per connection and has no handshake timeout: an attempt abandoned on a black-holed
/// path (or a stalled connection) would keep its thread until the peer closed the socket — one
/// more thread per retry. `shutdown` acts on the socket itself, so lapin's copy fails at once.
#[derive(Clone, Default)]
pub(super) struct SocketSlot(Arc<Mutex<Option<std::net::TcpStream>>>);

impl SocketSlot {
    /// Called by lapin's connector with the fresh stream (plain, or TLS mid-handshake).
    pub(super) fn keep(&self, stream: &lapin::tcp::HandshakeResult) {
        let tcp = match stream {
            Ok(s) => s,
            Err(lapin::tcp::HandshakeError::WouldBlock(mid)) => mid.get_ref(),
            Err(_) => return,
        };
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::net::TcpStream::from(fd));
            }
        }
        #[cfg(not(unix))]
        let _ = tcp;
    }

    pub(super) fn kill(&self) {
        if let Some(s) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
