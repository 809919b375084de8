//! Holds a connection's writes until the worker thread has run the other
//! tasks that are ready, so the answers they produce leave in one TLS record
//! and one `writev` instead of one each.
//!
//! hyper's HTTP/2 server runs each request in a task of its own. An answer
//! that is ready wakes the connection's task, which tokio runs next on the
//! same thread (its LIFO slot), so with many requests in flight on a
//! connection every answer was flushed alone: under 256 clients the leader
//! made about 1.8 write syscalls per read, and on loopback each `writev`
//! also pays for the receiver's side of TCP. Holding the first write of a
//! burst with `tokio::task::yield_now`'s deferral lets the requests already
//! queued finish first; the connection task encodes their answers into
//! HTTP/2's buffer each time it is woken, and writes them all once the
//! deferral fires. tokio fires deferred wakers once the thread has nothing
//! else ready (or at its periodic maintenance, every few dozen tasks under
//! load), so a lone request waits for one poll of the I/O driver, not for
//! a timer.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose writes are batched as the module describes.
pub struct BatchedWrites<T> {
    inner: T,
    hold: Hold,
}

/// Where the current burst of writes stands.
enum Hold {
    /// Nothing written since the last flush: the next write starts a hold.
    Idle,
    /// Waiting for the scheduler to fire the deferral.
    Held(Arc<Deferral>),
    /// The deferral fired: writes pass until the burst is flushed.
    Passing,
}

/// The waker handed to tokio's deferral: it records that it fired, then
/// wakes the connection's task.
struct Deferral {
    fired: AtomicBool,
    task: Mutex<Waker>,
}

impl Wake for Deferral {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task().clone();
        task.wake();
    }
}

impl Deferral {
    fn task(&self) -> std::sync::MutexGuard<'_, Waker> {
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> BatchedWrites<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            hold: Hold::Idle,
        }
    }

    /// Ready once this burst's writes may go to the connection.
    fn poll_hold(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.hold {
            Hold::Passing => Poll::Ready(()),
            Hold::Held(deferral) => {
                if deferral.fired.load(Ordering::Acquire) {
                    self.hold = Hold::Passing;
                    return Poll::Ready(());
                }
                let mut task = deferral.task();
                if !task.will_wake(cx.waker()) {
                    task.clone_from(cx.waker());
                }
                Poll::Pending
            }
            Hold::Idle => {
                let deferral = Arc::new(Deferral {
                    fired: AtomicBool::new(false),
                    task: Mutex::new(cx.waker().clone()),
                });
                let waker = Waker::from(deferral.clone());
                let mut yielding = pin!(tokio::task::yield_now());
                if yielding
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
                    || deferral.fired.load(Ordering::Acquire)
                {
                    // Outside a runtime the waker fires at once.
                    self.hold = Hold::Passing;
                    return Poll::Ready(());
                }
                self.hold = Hold::Held(deferral);
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_hold(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_hold(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    /// Without vectored writes h2 copies DATA frames under 1 KiB into its
    /// buffer (with them, only those under 256 bytes) instead of keeping
    /// each as a separate slice that must be written before the next frame
    /// can be encoded: answers of a few hundred bytes then batch too.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            // A flush with a hold still pending has nothing of this burst
            // to send yet; the hold stays for the writes that follow.
            if matches!(self.hold, Hold::Passing) {
                self.hold = Hold::Idle;
            }
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for BatchedWrites<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// The far end of a connection: counts the writes that reach it.
    #[derive(Default)]
    struct Wire {
        writes: Arc<AtomicUsize>,
        bytes: Vec<u8>,
    }

    impl AsyncRead for Wire {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A connection task shaped like h2's: each time it is woken it takes
    /// every answer queued, adds them to its buffer, and writes the buffer.
    async fn connection<W: AsyncWrite + Unpin>(
        mut io: W,
        mut answers: mpsc::UnboundedReceiver<u8>,
    ) -> W {
        let mut buffer = Vec::new();
        let mut closed = false;
        poll_fn(|cx| loop {
            while !closed {
                match answers.poll_recv(cx) {
                    Poll::Ready(Some(answer)) => buffer.push(answer),
                    Poll::Ready(None) => closed = true,
                    Poll::Pending => break,
                }
            }
            if buffer.is_empty() {
                return if closed {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            match Pin::new(&mut io).poll_write(cx, &buffer) {
                Poll::Ready(Ok(n)) => drop(buffer.drain(..n)),
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => return Poll::Pending,
            }
            if let Poll::Ready(Err(e)) = Pin::new(&mut io).poll_flush(cx) {
                panic!("flush failed: {e}");
            }
        })
        .await;
        io
    }

    /// `count` request tasks become ready at once (as hyper's per-request
    /// tasks do when one read brings several requests), and each sends its
    /// answer to the connection; returns the writes that reached the wire
    /// and the bytes written, in order.
    async fn answer_together(count: u8, batched: bool) -> (usize, Vec<u8>) {
        let (answer_tx, answers) = mpsc::unbounded_channel();
        let wire = Wire::default();
        let writes = wire.writes.clone();
        let bytes = if batched {
            let connection = tokio::spawn(connection(BatchedWrites::new(wire), answers));
            spawn_requests(count, answer_tx).await;
            connection.await.unwrap().inner.bytes
        } else {
            let connection = tokio::spawn(connection(wire, answers));
            spawn_requests(count, answer_tx).await;
            connection.await.unwrap().bytes
        };
        (writes.load(Ordering::Relaxed), bytes)
    }

    async fn spawn_requests(count: u8, answer_tx: mpsc::UnboundedSender<u8>) {
        // Spawned from a task on the worker, as hyper spawns them, and not
        // awaited by anyone (a waiting task woken would take the
        // connection's place in line).
        tokio::spawn(async move {
            for answer in 0..count {
                let answer_tx = answer_tx.clone();
                tokio::spawn(async move {
                    let _ = answer_tx.send(answer);
                });
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn answers_ready_together_leave_in_one_write() {
        let (unbatched_writes, unbatched_bytes) = answer_together(50, false).await;
        let (batched_writes, batched_bytes) = answer_together(50, true).await;
        // The model shows the problem: each answer woke the connection
        // right away and went out alone.
        assert!(
            unbatched_writes >= 25,
            "{unbatched_writes} writes without batching"
        );
        assert!(batched_writes <= 2, "{batched_writes} writes with batching");
        let mut sorted = batched_bytes.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u8>>());
        assert_eq!(unbatched_bytes.len(), 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_answer_is_written_without_waiting_for_more() {
        let (answer_tx, answers) = mpsc::unbounded_channel();
        let wire = Wire::default();
        let writes = wire.writes.clone();
        let connection = tokio::spawn(connection(BatchedWrites::new(wire), answers));
        answer_tx.send(7).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while writes.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lone answer was never written"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(answer_tx);
        assert_eq!(connection.await.unwrap().inner.bytes, vec![7]);
    }

    #[test]
    fn outside_a_runtime_writes_pass_at_once() {
        let mut io = BatchedWrites::new(Wire::default());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let written = Pin::new(&mut io).poll_write(&mut cx, b"answer");
        assert!(matches!(written, Poll::Ready(Ok(6))));
        assert_eq!(io.inner.bytes, b"answer");
    }
}
