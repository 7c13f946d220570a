//! The task loop shared by SotW and delta streams: read requests and snapshot updates, hand
//! each to the stream's state machine, stop when either side goes away.

use super::stream::StreamCore;
use crate::cache::Snapshots;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

/// Where a stream state machine of type `M` writes its responses.
pub(crate) type Responses<M> = mpsc::Sender<Result<<M as StreamMachine>::Response, Status>>;

/// A stream state machine ([`super::sotw::SotwStream`] or [`super::delta::DeltaStream`]).
pub(crate) trait StreamMachine: Sized + Send {
    /// The request message of the protocol variant.
    type Request: Send + 'static;
    /// The response message of the protocol variant.
    type Response: Send + 'static;

    /// The shared per-stream state.
    fn core_mut(&mut self) -> &mut StreamCore;

    /// Where responses (and a terminal error) go.
    fn out(&self) -> &mpsc::Sender<Result<Self::Response, Status>>;

    /// Handles one client request; an error ends the stream with that status.
    fn on_request(&mut self, req: Self::Request)
    -> impl Future<Output = Result<(), Status>> + Send;

    /// Pushes what changed in the current snapshots; an error ends the stream.
    fn push_all(&mut self) -> impl Future<Output = Result<(), Status>> + Send;
}

/// Runs `machine` until the client goes away, a request fails, or the response channel closes.
pub(crate) async fn drive<M: StreamMachine>(
    mut machine: M,
    mut requests: Streaming<M::Request>,
    mut updates: watch::Receiver<Arc<Snapshots>>,
) {
    loop {
        tokio::select! {
            req = requests.next() => match req {
                Some(Ok(req)) => {
                    if let Err(status) = machine.on_request(req).await {
                        let _ = machine.out().send(Err(status)).await;
                        return;
                    }
                }
                Some(Err(status)) => {
                    tracing::debug!(stream = machine.core_mut().id, %status, "stream ended with error");
                    return;
                }
                None => return,
            },
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshots = updates.borrow_and_update().clone();
                machine.core_mut().set_snapshots(snapshots);
                if machine.push_all().await.is_err() {
                    return;
                }
            }
        }
    }
}
