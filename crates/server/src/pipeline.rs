//! Server-to-server calls on one long-lived gRPC stream per peer
//! (`RaftService.Pipeline`). A unary call costs a HEADERS frame, the
//! message and an end-of-stream frame each way, each its own TLS record and
//! a wake-up of the peer's reader, and a new HTTP/2 stream (a task on the
//! server); on the stream a call is one message each way. AppendEntries,
//! votes, forwarded writes and read indexes take this path, so it is on
//! the path of every write; calls over 64 KiB stay unary
//! (`network::PIPELINE_MAX_BYTES`), and so do snapshot chunks.
//!
//! The caller side ([`Pipeline`]) tags each call with an id, writes it to
//! the stream and waits for the answer with that id, which a reader task
//! hands over. The server side ([`answer_frames`]) runs every call it has
//! read concurrently inside the stream's own task and writes each answer
//! as it completes, so a slow call (a forwarded write waits for its
//! commit) holds up nothing behind it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use berth_proto::pb;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use crate::network::{CallError, PeerRpc};

type Answer = Result<Vec<u8>, CallError>;

/// The caller's end of one open stream to a peer.
pub(crate) struct Pipeline {
    next_id: AtomicU64,
    open: Mutex<OpenState>,
}

struct OpenState {
    /// `None` once the stream ended or was closed: no call may start.
    outbound: Option<mpsc::UnboundedSender<pb::RaftFrame>>,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
}

impl Pipeline {
    /// Opens the stream on `client`'s channel. `Ok(None)`: the peer has no
    /// `Pipeline` (an older server during a rolling upgrade); the caller
    /// uses unary calls with it.
    pub(crate) async fn open(
        client: &mut pb::raft_service_client::RaftServiceClient<tonic::transport::Channel>,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Option<Arc<Self>>, Status> {
        let (outbound, requests) = mpsc::unbounded_channel();
        let answers = match client
            .pipeline(tokio_stream::wrappers::UnboundedReceiverStream::new(
                requests,
            ))
            .await
        {
            Ok(answers) => answers.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
            Err(status) => return Err(status),
        };
        let pipeline = Arc::new(Self {
            next_id: AtomicU64::new(1),
            open: Mutex::new(OpenState {
                outbound: Some(outbound),
                waiting: HashMap::new(),
            }),
        });
        let reader = read_answers(pipeline.clone(), answers);
        match runtime {
            Some(runtime) => runtime.spawn(reader),
            None => tokio::spawn(reader),
        };
        Ok(Some(pipeline))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OpenState> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state().outbound.is_some()
    }

    /// Ends the stream: calls waiting for an answer fail as possibly
    /// acted on, and no new call starts on it.
    pub(crate) fn close(&self, why: &str) {
        let waiting = {
            let mut state = self.state();
            state.outbound = None;
            std::mem::take(&mut state.waiting)
        };
        for (_, answer) in waiting {
            let _ = answer.send(Err(CallError::Unknown(format!(
                "the stream to the peer ended before it answered: {why}"
            ))));
        }
    }

    /// Sends one call and waits at most `timeout` (plus a margin) for its
    /// answer.
    pub(crate) async fn call(&self, rpc: PeerRpc, data: Vec<u8>, timeout: Duration) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut state = self.state();
            let frame = pb::RaftFrame {
                id,
                rpc: rpc.wire(),
                data,
                ..Default::default()
            };
            // A frame the stream never took was never sent.
            let sent = state
                .outbound
                .as_ref()
                .is_some_and(|outbound| outbound.send(frame).is_ok());
            if !sent {
                return Err(CallError::NotSent(
                    "the stream to the peer is closed".into(),
                ));
            }
            state.waiting.insert(id, answer);
        }
        match tokio::time::timeout(timeout + Duration::from_millis(250), answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CallError::Unknown(
                "the stream to the peer ended before it answered".into(),
            )),
            Err(_) => {
                self.state().waiting.remove(&id);
                Err(CallError::Unknown(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }
}

/// Hands each answer to the call waiting for it, until the stream ends.
async fn read_answers(pipeline: Arc<Pipeline>, mut answers: Streaming<pb::RaftFrame>) {
    let why = loop {
        match answers.message().await {
            Ok(Some(frame)) => {
                let waiting = pipeline.state().waiting.remove(&frame.id);
                if let Some(answer) = waiting {
                    let _ = answer.send(answer_of(frame));
                }
            }
            Ok(None) => break "the peer ended it".to_string(),
            Err(status) => break status.message().to_string(),
        }
    };
    tracing::debug!(%why, "raft pipeline to a peer ended");
    pipeline.close(&why);
}

/// A refusal is classified as the same status from a unary call would be.
fn answer_of(frame: pb::RaftFrame) -> Answer {
    if frame.error_code == 0 {
        return Ok(frame.data);
    }
    let status = Status::new(tonic::Code::from(frame.error_code), frame.error_message);
    Err(crate::network::classify(&status))
}

/// At most this many of a stream's calls run at once; the stream is not
/// read further until one completes. The same bound as HTTP/2 streams per
/// connection (`limits::MAX_CONCURRENT_STREAMS`), which capped a peer's
/// unary calls.
const MAX_RUNNING: usize = crate::limits::MAX_CONCURRENT_STREAMS as usize;

pub(crate) type AnswerStream = Pin<Box<dyn Stream<Item = Result<pb::RaftFrame, Status>> + Send>>;

/// The server's end: reads calls from `calls`, runs each with `handle`,
/// concurrently, and yields each answer when its call completes. Ends once
/// every call read has been answered and either the caller has ended its
/// side or this server is shutting down (`closing`): the stream would
/// otherwise keep the server's graceful shutdown waiting, and the caller
/// opens a new stream to whichever server it calls next.
pub(crate) fn answer_frames<H, F>(
    handle: H,
    mut calls: Streaming<pb::RaftFrame>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> AnswerStream
where
    H: Fn(PeerRpc, Vec<u8>) -> F + Send + 'static,
    F: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
{
    let mut running: FuturesUnordered<BoxFuture<'static, pb::RaftFrame>> = FuturesUnordered::new();
    let mut calls_ended = false;
    let mut shutdown: BoxFuture<'static, ()> = Box::pin(async move {
        let _ = closing.wait_for(|closing| *closing).await;
    });
    Box::pin(futures::stream::poll_fn(move |cx| {
        if !calls_ended && shutdown.as_mut().poll(cx).is_ready() {
            calls_ended = true;
        }
        // At the bound, the next completion wakes this stream again.
        while !calls_ended && running.len() < MAX_RUNNING {
            match calls.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => running.push(run(&handle, frame)),
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(error = %status, "raft pipeline from a peer ended");
                    calls_ended = true;
                }
                Poll::Ready(None) => calls_ended = true,
                Poll::Pending => break,
            }
        }
        match running.poll_next_unpin(cx) {
            Poll::Ready(Some(answer)) => Poll::Ready(Some(Ok(answer))),
            Poll::Ready(None) if calls_ended => Poll::Ready(None),
            // Nothing running: the calls' stream has registered the waker.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }))
}

fn run<H, F>(handle: &H, frame: pb::RaftFrame) -> BoxFuture<'static, pb::RaftFrame>
where
    H: Fn(PeerRpc, Vec<u8>) -> F,
    F: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
{
    let id = frame.id;
    let call = match PeerRpc::from_wire(frame.rpc) {
        // Snapshot chunks are megabytes: they would hold up the calls
        // queued behind them on the stream, so they stay unary.
        Some(PeerRpc::InstallSnapshot) | None => Err(Status::unimplemented(format!(
            "call {} is not served on the pipeline; send it as its own call",
            frame.rpc
        ))),
        Some(rpc) => Ok(handle(rpc, frame.data)),
    };
    Box::pin(async move {
        let result = match call {
            Ok(call) => call.await,
            Err(status) => Err(status),
        };
        match result {
            Ok(data) => pb::RaftFrame {
                id,
                data,
                ..Default::default()
            },
            Err(status) => pb::RaftFrame {
                id,
                error_code: status.code() as i32,
                error_message: status.message().to_string(),
                ..Default::default()
            },
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::AtomicUsize;

    use pb::raft_service_client::RaftServiceClient;
    use pb::raft_service_server::{RaftService, RaftServiceServer};
    use tonic::transport::Channel;
    use tonic::{Request, Response};

    /// A peer whose pipeline answers a vote at once with "fast:" and the
    /// payload, a forwarded write after 300 ms with "slow:", and ElectNow
    /// after 100 ms, counting how many ElectNow run at once.
    struct Peer {
        closing: tokio::sync::watch::Receiver<bool>,
    }

    async fn answer(rpc: PeerRpc, data: Vec<u8>) -> Result<Vec<u8>, Status> {
        let prefix: &[u8] = match rpc {
            PeerRpc::Vote => b"fast:",
            PeerRpc::Forward => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                b"slow:"
            }
            PeerRpc::ElectNow => {
                let now = ELECTING.fetch_add(1, Ordering::SeqCst) + 1;
                MOST_ELECTING.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                ELECTING.fetch_sub(1, Ordering::SeqCst);
                b"elected:"
            }
            _ => return Err(Status::failed_precondition("not in this test")),
        };
        Ok([prefix, &data].concat())
    }

    /// ElectNow calls running on the test peer now, and at most so far.
    static ELECTING: AtomicUsize = AtomicUsize::new(0);
    static MOST_ELECTING: AtomicUsize = AtomicUsize::new(0);

    type Unary = Result<Response<pb::RaftPayload>, Status>;

    #[tonic::async_trait]
    impl RaftService for Peer {
        async fn append_entries(&self, _: Request<pb::RaftPayload>) -> Unary {
            Err(Status::unimplemented("unary"))
        }
        async fn vote(&self, _: Request<pb::RaftPayload>) -> Unary {
            Err(Status::unimplemented("unary"))
        }
        async fn install_snapshot(&self, _: Request<pb::RaftPayload>) -> Unary {
            Err(Status::unimplemented("unary"))
        }
        async fn forward(&self, _: Request<pb::RaftPayload>) -> Unary {
            Err(Status::unimplemented("unary"))
        }
        async fn read_index(
            &self,
            _: Request<pb::ReadIndexRequest>,
        ) -> Result<Response<pb::ReadIndexResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn node_status(
            &self,
            _: Request<pb::NodeStatusRequest>,
        ) -> Result<Response<pb::NodeStatusResponse>, Status> {
            Err(Status::unimplemented("unary"))
        }
        async fn elect_now(&self, _: Request<pb::RaftPayload>) -> Unary {
            Err(Status::unimplemented("unary"))
        }
        type PipelineStream = AnswerStream;
        async fn pipeline(
            &self,
            request: Request<Streaming<pb::RaftFrame>>,
        ) -> Result<Response<AnswerStream>, Status> {
            Ok(Response::new(answer_frames(
                answer,
                request.into_inner(),
                self.closing.clone(),
            )))
        }
    }

    /// Serves `router` in plain HTTP/2 on loopback; a client of it.
    async fn serve(router: tonic::transport::server::Router) -> RaftServiceClient<Channel> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(router.serve_with_incoming(incoming));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        RaftServiceClient::new(channel)
    }

    /// A peer and a client of it; the sender starts the peer's shutdown.
    async fn peer() -> (RaftServiceClient<Channel>, tokio::sync::watch::Sender<bool>) {
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let router = tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(Peer { closing }));
        (serve(router).await, closing_tx)
    }

    /// A stream open to a fresh peer; the sender starts the peer's shutdown.
    async fn stream_to_peer() -> (Arc<Pipeline>, tokio::sync::watch::Sender<bool>) {
        let (mut client, closing) = peer().await;
        let pipeline = Pipeline::open(&mut client, None).await.unwrap().unwrap();
        (pipeline, closing)
    }

    #[tokio::test]
    async fn calls_on_one_stream_are_answered_as_they_complete_each_to_its_caller() {
        let (pipeline, _closing) = stream_to_peer().await;
        let timeout = Duration::from_secs(5);

        let slow = pipeline.call(PeerRpc::Forward, b"one".to_vec(), timeout);
        let fast = pipeline.call(PeerRpc::Vote, b"two".to_vec(), timeout);
        tokio::pin!(slow, fast);
        // The vote sent second is answered while the slow call still runs.
        let first = tokio::select! {
            answer = &mut slow => ("slow", answer),
            answer = &mut fast => ("fast", answer),
        };
        assert_eq!(first.0, "fast");
        assert_eq!(first.1.unwrap(), b"fast:two");
        assert_eq!(slow.await.unwrap(), b"slow:one");

        // A call the peer refuses fails with its reason; the stream stays.
        let refused = pipeline
            .call(PeerRpc::ReadIndex, Vec::new(), timeout)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("not in this test"),
            "{refused}"
        );
        // Snapshot chunks are never served on it.
        let snapshot = pipeline
            .call(PeerRpc::InstallSnapshot, Vec::new(), timeout)
            .await
            .unwrap_err();
        assert!(
            snapshot.to_string().contains("not served on the pipeline"),
            "{snapshot}"
        );
        assert!(pipeline.is_open());
        assert_eq!(
            pipeline
                .call(PeerRpc::Vote, b"3".to_vec(), timeout)
                .await
                .unwrap(),
            b"fast:3"
        );
    }

    #[tokio::test]
    async fn a_peer_shutting_down_answers_what_it_read_then_ends_the_stream() {
        let (pipeline, closing) = stream_to_peer().await;
        let timeout = Duration::from_secs(5);

        let slow = pipeline.call(PeerRpc::Forward, b"in flight".to_vec(), timeout);
        tokio::pin!(slow);
        // Let the call reach the peer, then start its shutdown.
        let started = tokio::time::timeout(Duration::from_millis(100), &mut slow).await;
        assert!(started.is_err(), "the slow call cannot be answered yet");
        closing.send_replace(true);
        assert_eq!(slow.await.unwrap(), b"slow:in flight");

        // The stream then ends: no new call starts on it, and a call on it
        // is known not to have been sent.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pipeline.is_open() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = pipeline
            .call(PeerRpc::Vote, Vec::new(), timeout)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::NotSent(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_peer_runs_at_most_the_bound_of_one_stream_s_calls_at_once() {
        let (pipeline, _closing) = stream_to_peer().await;
        let calls = (0..MAX_RUNNING + 44).map(|i| {
            pipeline.call(
                PeerRpc::ElectNow,
                i.to_string().into_bytes(),
                Duration::from_secs(10),
            )
        });
        let answers = futures::future::join_all(calls).await;
        // Every call is answered, its own answer, though the peer held
        // back the ones over the bound until others completed.
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), format!("elected:{i}").into_bytes());
        }
        assert_eq!(MOST_ELECTING.load(Ordering::SeqCst), MAX_RUNNING);
    }

    #[tokio::test]
    async fn closing_a_stream_fails_the_calls_still_waiting_as_possibly_done() {
        let (pipeline, _closing) = stream_to_peer().await;
        let slow = pipeline.call(PeerRpc::Forward, Vec::new(), Duration::from_secs(5));
        tokio::pin!(slow);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut slow)
            .await
            .is_err());
        pipeline.close("test");
        let err = slow.await.unwrap_err();
        // It reached the peer, which may have acted on it.
        assert!(matches!(err, CallError::Unknown(_)), "{err:?}");
        assert!(!pipeline.is_open());
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_is_told_apart_from_a_failure() {
        // An older server: no RaftService.Pipeline route at all.
        let (reflection, _) = crate::reflection().unwrap();
        let mut client = serve(tonic::transport::Server::builder().add_service(reflection)).await;
        assert!(Pipeline::open(&mut client, None).await.unwrap().is_none());
        // The slot remembers it: calls to that peer go unary from now on.
        let slot = crate::network::PipelineSlot::default();
        assert!(slot.get(&mut client, None).await.unwrap().is_none());
        assert!(slot.unsupported.load(std::sync::atomic::Ordering::Relaxed));
    }
}
