//! The agent session's own transport.
//!
//! An agent holds one session with the leader for as long as it runs, and
//! the leader holds one for every agent. On gRPC each of those is an HTTP/2
//! connection, whose fixed buffers (h2's 16 KiB write buffer, an 8 KiB frame
//! read buffer, a 4 KiB HPACK table, the connection and stream tasks) cost
//! the leader about 40 KiB per agent before a message is sent, and every
//! heartbeat pays HTTP/2 framing, HPACK and flow control.
//!
//! This transport runs on the same port and the same mutual TLS. The agent
//! offers the ALPN protocol [`SESSION_ALPN`] first and `h2` second; a server
//! that knows it picks it, an older one picks `h2` and the agent uses the
//! gRPC session instead. On the connection, each side sends frames: a
//! 4-byte big-endian length, then one protobuf message (`AgentMessage` from
//! the agent, `ServerMessage` from the server). The messages are the gRPC
//! session's, so both transports share everything above the bytes. A server
//! that ends a session sends a `SessionEnd` (the gRPC status it would have
//! sent) and closes.

use bytes::{Buf, BytesMut};
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod client;
mod socket;

pub use client::{client_config, connect, Connection, Inbound};
pub use socket::watch_for_dead_peer;

/// The ALPN protocol name of this transport.
pub const SESSION_ALPN: &[u8] = b"berth-session/1";

/// Bytes of the length prefix.
const PREFIX: usize = 4;
/// What a reader asks the connection for when it holds no partial frame:
/// enough for a heartbeat, a status batch of a few tasks or an
/// acknowledgement in one read. Larger frames grow the buffer to their
/// length (known from the prefix).
const READ_CHUNK: usize = 512;
/// A read buffer bigger than this is released once it is empty, so that a
/// session that once received a large message does not keep its size.
const KEEP_READ_BUFFER: usize = 4 * 1024;
/// A writer puts the messages that are ready together into one write of
/// up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message too large: {len} bytes, over this session's limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("the connection ended inside a message")]
    Truncated,
    #[error("a message did not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the session's TLS settings are unusable: {0}")]
    Tls(String),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

impl WireError {
    /// The gRPC status the same failure has on the gRPC session, so that
    /// callers of either transport see one set of errors.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            WireError::TooLarge { .. } => tonic::Status::out_of_range(self.to_string()),
            WireError::Decode(_) => tonic::Status::invalid_argument(self.to_string()),
            WireError::Tls(_) => tonic::Status::failed_precondition(self.to_string()),
            WireError::Truncated | WireError::Io(_) | WireError::Connect { .. } => {
                tonic::Status::unavailable(self.to_string())
            }
        }
    }
}

/// Appends `message` to `out` as one frame.
pub fn encode_frame(message: &impl Message, out: &mut Vec<u8>) {
    let len = message.encoded_len();
    // A message over 4 GiB cannot be built from this process's limits
    // (assignment sets and reports are bounded far below it).
    let prefix = u32::try_from(len).unwrap_or(u32::MAX);
    out.reserve(PREFIX + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    // Vec<u8> grows as needed, so encoding cannot run out of room.
    let _ = message.encode(out);
}

/// Reads frames from one side of a connection.
pub struct FrameReader<R> {
    io: R,
    buffer: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A frame longer than `max` is refused from its prefix, before it is
    /// read.
    pub fn new(io: R, max: usize) -> Self {
        Self {
            io,
            buffer: BytesMut::new(),
            max,
        }
    }

    /// The next message, or `None` when the peer closed the connection
    /// between messages. Cancel-safe: a partly read frame stays buffered for
    /// the next call.
    pub async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, WireError> {
        loop {
            if self.buffer.len() >= PREFIX {
                let mut prefix = [0u8; PREFIX];
                prefix.copy_from_slice(&self.buffer[..PREFIX]);
                let len = u32::from_be_bytes(prefix) as usize;
                if len > self.max {
                    return Err(WireError::TooLarge { len, max: self.max });
                }
                if self.buffer.len() >= PREFIX + len {
                    self.buffer.advance(PREFIX);
                    let message = M::decode(&self.buffer[..len])?;
                    self.buffer.advance(len);
                    if self.buffer.is_empty() && self.buffer.capacity() > KEEP_READ_BUFFER {
                        self.buffer = BytesMut::new();
                    }
                    return Ok(Some(message));
                }
                self.buffer.reserve(PREFIX + len - self.buffer.len());
            } else {
                self.buffer.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }
}

/// Writes every message of `messages` as a frame until the stream ends,
/// then closes the connection's sending side. Messages that are ready
/// together leave in one write: a burst of assignments or reports costs
/// one TLS record and one syscall, not one each.
pub async fn write_frames<W, S, M>(mut io: W, mut messages: S) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    S: Stream<Item = M> + Unpin,
    M: Message,
{
    while let Some(first) = messages.next().await {
        // Allocated per burst and freed after it: an idle session holds no
        // write buffer.
        let mut out = Vec::new();
        encode_frame(&first, &mut out);
        let mut ended = false;
        while out.len() < WRITE_BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => encode_frame(&message, &mut out),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        io.write_all(&out).await?;
        io.flush().await?;
        if ended {
            break;
        }
    }
    io.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests;
