//! One Postgres client connection, from accept to close: the connection
//! limit, the `SSLRequest` / `GSSENCRequest` answer, the startup deadline,
//! and the message loop that hands each (checked, see [`crate::pg_guard`])
//! message to pgwire's dispatcher and its errors to pgwire's error path.
//!
//! The socket is duplicated once at accept ([`Probe`]): a statement running on
//! the query pool polls the copy to notice a client that went away and stop
//! (the message loop itself does not read while a statement runs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::pg::PgHandlers;
use crate::pg_guard::{
    fatal_response, Guarded, WireLimits, GSSENC_REQUEST, MAX_STARTUP_PACKET, SSL_REQUEST,
};
use crate::tls::MaybeTls;

/// Connection-level limits (see `docs/limits.md`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open client connections at most; one more is refused with 53300.
    pub max_connections: usize,
    /// Time from accept to the end of authentication.
    pub startup_timeout: Duration,
    pub wire: WireLimits,
}

/// A duplicate of a connection's socket, to test whether the peer is gone
/// without reading from the connection.
pub struct Probe(std::net::TcpStream);

impl Probe {
    /// Whether the client has closed the connection (or it broke). Data the
    /// client sent ahead (a pipelined message) means it is still there.
    pub fn gone(&self) -> bool {
        let mut b = [0u8; 1];
        match self.0.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Counts open connections; a slot is held by a [`Slot`].
#[derive(Default)]
pub struct Slots(AtomicUsize);

pub struct Slot(Arc<Slots>);

impl Slots {
    fn take(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut n = self.0.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match self
                .0
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn refuse<S: tokio::io::AsyncWrite + Unpin>(socket: &mut S, code: &str, message: &str) {
    let _ = socket.write_all(&fatal_response(code, message)).await;
    let _ = socket.flush().await;
}

/// The first packet's first 8 bytes (length and code), after answering
/// `SSLRequest` (TLS when configured, else "not supported") and
/// `GSSENCRequest` ("not supported") as often as asked; and the stream to
/// go on with (TLS after an upgrade).
async fn first_packet(
    mut stream: MaybeTls,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> std::io::Result<Option<(MaybeTls, [u8; 8])>> {
    loop {
        let mut head = [0u8; 8];
        if stream.read_exact(&mut head).await.is_err() {
            return Ok(None);
        }
        let len = i32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
        let code = i32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 8 && code == SSL_REQUEST {
            stream = match (tls, stream) {
                (Some(acceptor), MaybeTls::Plain(mut socket)) => {
                    socket.write_all(b"S").await?;
                    socket.flush().await?;
                    MaybeTls::Tls(Box::new(acceptor.accept(socket).await?))
                }
                (_, mut other) => {
                    other.write_all(b"N").await?;
                    other
                }
            };
            continue;
        }
        if len == 8 && code == GSSENC_REQUEST {
            stream.write_all(b"N").await?;
            continue;
        }
        return Ok(Some((stream, head)));
    }
}

/// Serve one accepted connection to its end.
pub async fn run(
    mut socket: TcpStream,
    addr: SocketAddr,
    handlers: Arc<PgHandlers>,
    slots: Arc<Slots>,
    limits: ConnLimits,
) {
    let _ = socket.set_nodelay(true);
    // The duplicate for [`Probe`], taken before TLS wraps the socket.
    let probe = match socket.into_std().and_then(|s| {
        let dup = s.try_clone()?;
        Ok((TcpStream::from_std(s)?, dup))
    }) {
        Ok((s, dup)) => {
            socket = s;
            Probe(dup)
        }
        Err(e) => {
            tracing::debug!(%addr, error = %e, "cannot duplicate a client socket");
            return;
        }
    };
    let startup_deadline = tokio::time::Instant::now() + limits.startup_timeout;
    let first = first_packet(MaybeTls::Plain(socket), handlers.tls.as_ref());
    let (mut stream, head) = match tokio::time::timeout_at(startup_deadline, first).await {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "connection failed before its startup");
            return;
        }
        Err(_) => {
            if let Ok(s) = probe.0.try_clone() {
                if let Ok(mut s) = TcpStream::from_std(s) {
                    refuse(&mut s, "08P01", "timeout reading the startup packet").await;
                }
            }
            return;
        }
    };
    let len = i32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        refuse(
            &mut stream,
            "08P01",
            &format!("invalid length of startup packet: {len}"),
        )
        .await;
        return;
    }
    let code = i32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    let cancel = code == crate::pg_guard::CANCEL_REQUEST;
    // A cancel request takes no slot: it ends at once, and it must get
    // through when the server is full of the sessions it wants to stop.
    let slot = if cancel {
        None
    } else {
        match slots.take(limits.max_connections) {
            Some(s) => Some(s),
            None => {
                refuse(&mut stream, "53300", "sorry, too many clients already").await;
                return;
            }
        }
    };
    let secure = stream.is_tls();

    let guarded = Guarded::new(stream, &head, limits.wire);
    let mut framed = Framed::new(
        guarded,
        PgWireMessageServerCodec::new(DefaultClient::new(addr, secure)),
    );
    framed.set_state(PgWireConnectionState::AwaitingStartup);
    framed.session_extensions().insert(probe);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel_handler = handlers.cancel_handler();
    let startup_timer = tokio::time::sleep_until(startup_deadline);
    tokio::pin!(startup_timer);
    loop {
        let starting = matches!(
            framed.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if starting {
            tokio::select! {
                _ = &mut startup_timer => {
                    let _ = framed.get_mut().get_mut().write_all(&fatal_response(
                        "08P01",
                        "the connection did not finish its startup in time (startup_timeout)",
                    )).await;
                    break;
                }
                m = framed.next() => m,
            }
        } else {
            framed.next().await
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(%addr, error = %e, "undecodable message");
                let _ = process_error(&mut framed, e, false).await;
                break;
            }
            None => break,
        };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended_message = match framed.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        if let Err(e) = process_message(
            msg,
            &mut framed,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel_handler.clone(),
        )
        .await
        {
            crate::pg::note_failure(&framed);
            // An error before the session began (authentication) ends the
            // connection.
            if process_error(&mut framed, e, extended_message)
                .await
                .is_err()
                || starting
            {
                break;
            }
        }
    }
    drop(slot);
}
