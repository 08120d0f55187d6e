//! `grpc.health.v1.Health` (Check and Watch), the `io.containerd.grpc.v1.healthcheck` plugin.
//!
//! containerd's Go client calls `Check` with the empty service name in `IsServing` to wait for
//! the daemon (dockerd, nerdctl, k3s and buildkit all do so before their first real call). The
//! empty name stands for the whole daemon; every gRPC service the server assembled from a ready
//! plugin is also listed by its own name, so a client can ask whether, say,
//! `containerd.services.content.v1.Content` is served. A service whose plugin failed or was
//! disabled is unknown (`NOT_FOUND`), as in grpc-go's health server. When berthd starts shutting
//! down every status turns `NOT_SERVING` and open `Watch` streams end, so they do not hold the
//! graceful shutdown open.

use std::sync::{Arc, Mutex};

use berth_grpc::GrpcService;
use berth_plugin::{types, Instance, Registration};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The name that stands for the daemon as a whole.
pub const SERVER: &str = "";

/// The `io.containerd.grpc.v1.healthcheck` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "healthcheck", &[], |_ctx| {
        let (reporter, server) = tonic_health::server::health_reporter();
        let name = berth_grpc::service_name(&server);
        // The names the server announced, kept for the shutdown.
        let served: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(vec![SERVER]));
        let (reporter2, served2) = (reporter.clone(), served.clone());
        let svc = GrpcService::new(name, move |routes, limits| {
            routes.add_service(
                server
                    .max_decoding_message_size(limits.max_recv)
                    .max_encoding_message_size(limits.max_send),
            );
        })
        .on_serving(move |names| {
            let mut all = served.lock().unwrap_or_else(|p| p.into_inner());
            all.extend_from_slice(names);
            futures::executor::block_on(set_all(&reporter, &all, ServingStatus::Serving));
        })
        .on_shutdown(move || {
            let all = served2.lock().unwrap_or_else(|p| p.into_inner()).clone();
            stop_serving(reporter2, &all);
        });
        Ok(Arc::new(svc) as Instance)
    })
}

async fn set_all(reporter: &HealthReporter, names: &[&str], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// Announces `NOT_SERVING` to every watcher, then closes their streams (a watch stream ends when
/// its status is cleared).
fn stop_serving(mut reporter: HealthReporter, names: &[&str]) {
    futures::executor::block_on(async move {
        set_all(&reporter, names, ServingStatus::NotServing).await;
        for name in names {
            reporter.clear_service_status(name).await;
        }
    });
    tracing::debug!("health: not serving");
}
