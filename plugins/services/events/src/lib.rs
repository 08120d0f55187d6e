//! `containerd.services.events.v1.Events`.

mod encode;

pub use encode::{any, envelope_pb};

use std::pin::Pin;
use std::sync::Arc;

use berth_api::events::{
    events_server::{Events, EventsServer},
    ForwardRequest, PublishRequest, SubscribeRequest,
};
use berth_api::types::Envelope as PbEnvelope;
use berth_events::Envelope;
use berth_filters::{Adaptor, Filters};
use berth_grpc::namespace_required;
use berth_grpc::to_status;
use berth_plugin::{types, Registration};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use berth_events::Exchange;

struct EventsService {
    exchange: Arc<Exchange>,
}

/// The `io.containerd.grpc.v1.events` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "events", &[types::EVENT], |ctx| {
        let exchange = ctx.get_as::<Exchange>(types::EVENT)?;
        let svc = EventsServer::new(EventsService { exchange });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

/// Topics are `/`-separated identifiers, as containerd requires (`/content/delete`).
fn validate_topic(topic: &str) -> Result<(), Status> {
    let bad =
        |why: &str| Status::invalid_argument(format!("topic {topic:?} {why}: invalid argument"));
    let rest = topic
        .strip_prefix('/')
        .ok_or_else(|| bad("must start with '/'"))?;
    if rest.is_empty() {
        return Err(bad("must have at least one component"));
    }
    for part in rest.split('/') {
        berth_metadata::identifiers::validate(part).map_err(|_| bad("has an invalid component"))?;
    }
    Ok(())
}

struct Fields<'a>(&'a Envelope);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("topic") => vec![self.0.topic.clone()],
            Some("namespace") => vec![self.0.namespace.clone()],
            _ => Vec::new(),
        }
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<PbEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    #[tracing::instrument(skip_all, fields(topic = %req.get_ref().topic))]
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        validate_topic(&req.topic)?;
        let event = req
            .event
            .ok_or_else(|| Status::invalid_argument("event must be set: invalid argument"))?;
        self.exchange.forward(Envelope {
            timestamp: berth_metadata::now_nanos(),
            namespace: ns,
            topic: req.topic,
            event: encode::opaque(event),
        });
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set: invalid argument"))?;
        validate_topic(&env.topic)?;
        berth_metadata::identifiers::validate(&env.namespace).map_err(|e| to_status(&e))?;
        self.exchange.forward(encode::envelope_from_pb(env));
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    #[tracing::instrument(skip_all)]
    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filters = Filters::parse(&req.into_inner().filters).map_err(|e| to_status(&e))?;
        let mut rx = self.exchange.subscribe();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(env) => {
                        if !filters.matches(&Fields(&env)) {
                            continue;
                        }
                        if tx.send(Ok(envelope_pb(&env))).await.is_err() {
                            return; // subscriber went away
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "event subscriber too slow; oldest events dropped"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn topics() {
        assert!(super::validate_topic("/content/delete").is_ok());
        for bad in ["", "/", "content", "/a//b", "/a/b c"] {
            assert!(super::validate_topic(bad).is_err(), "{bad}");
        }
    }
}
