//! The byte stream under the Postgres protocol decoder: it frames and checks
//! every frontend message before the decoder sees it.
//!
//! [`Guarded`] wraps a connection's socket. It reads whole messages into its
//! own buffer and hands the decoder only messages that are complete and well
//! formed: a length in range, every string terminated inside the message,
//! every count and length consistent with the bytes that follow, nothing left
//! over. (`pgwire`'s decoders assume as much and panic on a Parse that
//! declares more parameter types than it carries, or a Bind whose value length
//! runs past the message; checking here, once, covers every message type and
//! keeps the decoder on its happy path.)
//!
//! A message that breaks a rule, one larger than the limit, or one that
//! does not arrive whole within the message timeout ends the connection: the
//! client gets a `FATAL` `ErrorResponse` (08P01 protocol violation; 54000 for
//! a message over the size limit) and then end of stream. The buffer never
//! holds more than one message of at most the limit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Protocol 3.0 in a startup message.
pub const PROTOCOL_3: i32 = 196_608;
/// The codes of the requests that come instead of a startup message.
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// Longest startup packet accepted (Postgres' `MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Limits the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct WireLimits {
    /// Largest frontend message, bytes (length field included).
    pub max_message_bytes: usize,
    /// Time a message may take to arrive once its first byte has.
    pub message_timeout: Duration,
}

/// Why a connection is refused.
#[derive(Debug, Clone)]
pub struct Violation {
    pub code: &'static str,
    pub message: String,
}

impl Violation {
    fn protocol(message: impl Into<String>) -> Self {
        Violation {
            code: "08P01",
            message: message.into(),
        }
    }
}

/// A `FATAL` `ErrorResponse` message carrying `code` and `message`.
pub fn fatal_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads a message body field by field, failing on anything out of bounds.
struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn bad(&self, why: &str) -> Violation {
        Violation::protocol(format!("invalid {} message: {why}", self.what))
    }

    fn cstring(&mut self) -> Result<&'a [u8], Violation> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.bad("unterminated string"))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Violation> {
        if self.buf.len() < n {
            return Err(self.bad("a field runs past the end of the message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, Violation> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Violation> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of `size`-byte items, all of which must follow.
    fn count(&mut self, size: usize) -> Result<usize, Violation> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| self.bad("negative count"))?;
        if n * size > self.buf.len() {
            return Err(self.bad("a count exceeds the message"));
        }
        Ok(n)
    }

    fn format_codes(&mut self) -> Result<usize, Violation> {
        let n = self.count(2)?;
        for _ in 0..n {
            if !matches!(self.i16()?, 0 | 1) {
                return Err(self.bad("format code is neither 0 (text) nor 1 (binary)"));
            }
        }
        Ok(n)
    }

    fn end(&self) -> Result<(), Violation> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.bad("bytes left over after its last field"))
        }
    }
}

/// Check a startup-phase packet (its body after the length).
fn check_startup(body: &[u8]) -> Result<(), Violation> {
    let mut f = Fields {
        buf: body,
        what: "startup",
    };
    match f.i32()? {
        CANCEL_REQUEST => {
            f.take(4)?;
            // The secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
            if f.buf.len() > 256 {
                return Err(f.bad("secret key too long"));
            }
            Ok(())
        }
        SSL_REQUEST | GSSENC_REQUEST => f.end(),
        PROTOCOL_3 => loop {
            let key = f.cstring()?;
            if key.is_empty() {
                return f.end();
            }
            f.cstring()?;
        },
        v => Err(Violation {
            code: "0A000",
            message: format!(
                "unsupported frontend protocol {}.{}: server supports 3.0",
                (v >> 16) & 0xffff,
                v & 0xffff
            ),
        }),
    }
}

/// Check a typed message's body.
fn check_typed(tag: u8, body: &[u8]) -> Result<(), Violation> {
    let what = match tag {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'E' => "Execute",
        b'D' => "Describe",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'X' => "Terminate",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'p' => "password",
        other => {
            return Err(Violation::protocol(format!(
                "invalid frontend message type {}",
                if other.is_ascii_graphic() {
                    format!("\"{}\"", other as char)
                } else {
                    format!("{other}")
                }
            )))
        }
    };
    let mut f = Fields { buf: body, what };
    match tag {
        b'Q' | b'f' => {
            f.cstring()?;
        }
        b'P' => {
            f.cstring()?;
            f.cstring()?;
            let n = f.count(4)?;
            f.take(n * 4)?;
        }
        b'B' => {
            f.cstring()?;
            f.cstring()?;
            let formats = f.format_codes()?;
            let values = f.count(4)?;
            if formats > 1 && formats != values {
                return Err(f.bad(&format!(
                    "{formats} parameter formats but {values} parameters"
                )));
            }
            for _ in 0..values {
                let len = f.i32()?;
                if len >= 0 {
                    f.take(len as usize)?;
                } else if len != -1 {
                    return Err(f.bad("negative parameter length"));
                }
            }
            f.format_codes()?;
        }
        b'E' => {
            f.cstring()?;
            f.i32()?;
        }
        b'D' | b'C' => {
            if !matches!(f.take(1)?[0], b'S' | b'P') {
                return Err(f.bad("target is neither 'S' (statement) nor 'P' (portal)"));
            }
            f.cstring()?;
        }
        b'd' | b'p' => return Ok(()),
        _ => {}
    }
    f.end()
}

/// Where the guard is in the stream.
enum Phase {
    /// Untyped packets: the startup message, or a request instead of it.
    Startup,
    /// Typed messages, after the startup message.
    Messages,
    /// Refused: the error is being written (from this offset), then EOF.
    Refusing(Vec<u8>, usize),
    Closed,
}

/// A socket whose reads yield only complete, checked frontend messages.
pub struct Guarded<S> {
    inner: S,
    limits: WireLimits,
    phase: Phase,
    /// Bytes read but not yet checked (at most one message).
    raw: BytesMut,
    /// Checked bytes waiting for the decoder.
    ready: BytesMut,
    deadline: Pin<Box<Sleep>>,
    /// Whether `deadline` runs for a message in progress.
    timing: bool,
}

impl<S> Guarded<S> {
    /// Guard `inner`; `prefix` is what was already read from it (the first
    /// bytes of the startup packet).
    pub fn new(inner: S, prefix: &[u8], limits: WireLimits) -> Self {
        Guarded {
            inner,
            limits,
            phase: Phase::Startup,
            raw: BytesMut::from(prefix),
            ready: BytesMut::new(),
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timing: false,
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Move one complete message from `raw` to `ready` if there is one:
    /// `Ok(true)` if moved, `Ok(false)` if more bytes are needed (and how
    /// many in total, in `need`).
    fn frame(&mut self, need: &mut usize) -> Result<bool, Violation> {
        let (header, startup) = match self.phase {
            Phase::Startup => (4, true),
            _ => (5, false),
        };
        if self.raw.len() < header {
            *need = header;
            return Ok(false);
        }
        let len_at = header - 4;
        let len = i32::from_be_bytes(self.raw[len_at..header].try_into().expect("4 bytes"));
        let max = if startup {
            MAX_STARTUP_PACKET
        } else {
            self.limits.max_message_bytes
        };
        if len < 4 || (startup && len < 8) {
            return Err(Violation::protocol(if startup {
                format!("invalid length of startup packet: {len}")
            } else {
                format!("invalid message length: {len}")
            }));
        }
        let len = len as usize;
        if len > max {
            return Err(if startup {
                Violation::protocol(format!("invalid length of startup packet: {len}"))
            } else {
                Violation {
                    code: "54000",
                    message: format!(
                        "message of {len} bytes exceeds the limit of {max} bytes (max_message_bytes)"
                    ),
                }
            });
        }
        let total = len_at + len;
        if self.raw.len() < total {
            *need = total;
            return Ok(false);
        }
        let body = &self.raw[header..total];
        if startup {
            check_startup(body)?;
            let code = i32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
            if code == PROTOCOL_3 {
                self.phase = Phase::Messages;
            }
        } else {
            check_typed(self.raw[0], body)?;
        }
        let message = self.raw.split_to(total);
        self.ready.unsplit(message);
        Ok(true)
    }

    fn refuse(&mut self, v: Violation) {
        tracing::debug!(code = v.code, message = %v.message, "refusing a client's message");
        self.raw = BytesMut::new();
        self.ready = BytesMut::new();
        self.phase = Phase::Refusing(fatal_response(v.code, &v.message), 0);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Refusing(bytes, at) => {
                    while *at < bytes.len() {
                        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*at..]))?;
                        if n == 0 {
                            break;
                        }
                        *at += n;
                    }
                    ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
                    this.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            if !this.ready.is_empty() {
                let n = this.ready.len().min(out.remaining());
                out.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut need = 0;
            match this.frame(&mut need) {
                Ok(true) => {
                    // What is left in `raw` is the start of the next message.
                    this.timing = !this.raw.is_empty();
                    if this.timing {
                        let at = Instant::now() + this.limits.message_timeout;
                        this.deadline.as_mut().reset(at);
                    }
                    continue;
                }
                Ok(false) => {}
                Err(v) => {
                    this.refuse(v);
                    continue;
                }
            }
            // Read at most the rest of this message: the buffer holds one.
            let want = need - this.raw.len();
            this.raw.reserve(want.min(1 << 16));
            let spare = this.raw.spare_capacity_mut();
            let take = spare.len().min(want.max(1));
            let mut rb = ReadBuf::uninit(&mut spare[..take]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        this.phase = Phase::Closed;
                        return Poll::Ready(Ok(()));
                    }
                    // SAFETY: `n` bytes of the spare capacity were initialised by the read.
                    unsafe { this.raw.advance_mut(n) };
                    if !this.timing {
                        this.timing = true;
                        let at = Instant::now() + this.limits.message_timeout;
                        this.deadline.as_mut().reset(at);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if this.timing && this.deadline.as_mut().poll(cx).is_ready() {
                        let secs = this.limits.message_timeout.as_secs_f64();
                        this.refuse(Violation::protocol(format!(
                            "a message did not arrive whole within {secs} s (message_timeout)"
                        )));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(tag: u8, body: &[u8]) -> Result<(), Violation> {
        check_typed(tag, body)
    }

    #[test]
    fn parse_and_bind_are_checked_field_by_field() {
        // Parse declaring 3 parameter types and carrying 1.
        let mut p = b"\0SELECT $1\0".to_vec();
        p.extend_from_slice(&3i16.to_be_bytes());
        p.extend_from_slice(&23i32.to_be_bytes());
        assert!(typed(b'P', &p).is_err());
        let mut ok = b"\0SELECT $1\0".to_vec();
        ok.extend_from_slice(&1i16.to_be_bytes());
        ok.extend_from_slice(&23i32.to_be_bytes());
        assert!(typed(b'P', &ok).is_ok());
        // Bind whose value length runs past the message.
        let mut b = b"\0\0".to_vec();
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1000i32.to_be_bytes());
        b.extend_from_slice(b"12");
        b.extend_from_slice(&0i16.to_be_bytes());
        assert!(typed(b'B', &b).is_err());
        let mut b = b"\0\0".to_vec();
        b.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(typed(b'B', &b).is_err());
        let mut ok = b"\0\0".to_vec();
        ok.extend_from_slice(&0i16.to_be_bytes());
        ok.extend_from_slice(&2i16.to_be_bytes());
        ok.extend_from_slice(&2i32.to_be_bytes());
        ok.extend_from_slice(b"12");
        ok.extend_from_slice(&(-1i32).to_be_bytes());
        ok.extend_from_slice(&0i16.to_be_bytes());
        assert!(typed(b'B', &ok).is_ok());
        // Unterminated strings, leftovers, unknown types.
        assert!(typed(b'Q', b"SELECT 1").is_err());
        assert!(typed(b'Q', b"SELECT 1\0\0").is_err());
        assert!(typed(b'S', b"x").is_err());
        assert!(typed(b'F', b"").is_err());
        assert!(typed(b'D', b"Xname\0").is_err());
    }

    #[tokio::test]
    async fn bad_lengths_and_oversized_messages_are_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = WireLimits {
            max_message_bytes: 1024,
            message_timeout: Duration::from_millis(200),
        };
        let startup = {
            let mut body = PROTOCOL_3.to_be_bytes().to_vec();
            body.extend_from_slice(b"user\0u\0\0");
            let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            m.extend_from_slice(&body);
            m
        };
        for (first, code) in [
            (0i32.to_be_bytes().to_vec(), "08P01"),
            (3i32.to_be_bytes().to_vec(), "08P01"),
            ((-1i32).to_be_bytes().to_vec(), "08P01"),
            (100_000i32.to_be_bytes().to_vec(), "08P01"),
            (
                [
                    startup.clone(),
                    b"Q".to_vec(),
                    5000i32.to_be_bytes().to_vec(),
                ]
                .concat(),
                "54000",
            ),
            // Half a message, then nothing: the message timeout.
            (
                [
                    startup.clone(),
                    b"Q".to_vec(),
                    100i32.to_be_bytes().to_vec(),
                ]
                .concat(),
                "08P01",
            ),
        ] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let mut g = Guarded::new(server, &[], limits);
            let (mut cr, mut cw) = tokio::io::split(client);
            cw.write_all(&first).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = g.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            // Only the startup message (if valid) reaches the decoder.
            assert!(got.is_empty() || got == startup, "{got:?}");
            let mut answer = vec![0u8; 256];
            let n = cr.read(&mut answer).await.unwrap();
            let text = String::from_utf8_lossy(&answer[..n]).to_string();
            assert!(text.starts_with('E') && text.contains(code), "{text}");
        }
    }
}
