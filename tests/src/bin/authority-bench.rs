//! What the `:authority` adapter costs: the same tonic server (the standard health service) on two
//! unix sockets, one accepting connections plainly and one through `AuthorityFix` as berthd does,
//! driven by one tonic client in alternating rounds. Prints the median and p99 latency of a unary
//! call and the time to move a 4 MiB message (DATA frames pass the adapter without parsing).
//!
//! ```sh
//! cargo build --release --bins && target/release/authority-bench [rounds] [calls-per-round]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use berth_h2_authority::AuthorityFix;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt as _;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `AuthorityFix` plus the `Connected` impl tonic wants (berthd's server.rs does the same).
struct Fixed(AuthorityFix<UnixStream>);

impl tonic::transport::server::Connected for Fixed {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for Fixed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Fixed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

fn spawn_server(path: &Path, adapted: bool) {
    let listener = UnixListener::bind(path).expect("bind");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let health = health.max_decoding_message_size(64 << 20);
    let router = tonic::transport::Server::builder().add_service(health);
    let incoming = UnixListenerStream::new(listener);
    if adapted {
        let incoming = incoming.map(|c| c.map(|s| Fixed(AuthorityFix::new(s))));
        tokio::spawn(router.serve_with_incoming(incoming));
    } else {
        tokio::spawn(router.serve_with_incoming(incoming));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(10);
    let calls = args.get(1).copied().unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let plain_sock = dir.path().join("plain.sock");
    let fixed_sock = dir.path().join("fixed.sock");
    spawn_server(&plain_sock, false);
    spawn_server(&fixed_sock, true);
    let mut clients = Vec::new();
    for sock in [&plain_sock, &fixed_sock] {
        let ch = bctr::client::connect(&sock.display().to_string())
            .await
            .expect("connect");
        clients.push(HealthClient::new(ch).max_encoding_message_size(64 << 20));
    }
    // A 4 MiB service name: the request is mostly DATA frames.
    let big = HealthCheckRequest {
        service: "x".repeat(4 << 20),
    };
    let mut lat = [Vec::new(), Vec::new()];
    let mut bulk = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate which side goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let c = &mut clients[i];
            for _ in 0..calls {
                let t = Instant::now();
                c.check(HealthCheckRequest::default()).await.expect("check");
                lat[i].push(t.elapsed());
            }
            for _ in 0..5 {
                let t = Instant::now();
                let _ = c.check(big.clone()).await; // NOT_FOUND, after the server read it all
                bulk[i].push(t.elapsed());
            }
        }
    }
    println!("{rounds} rounds x {calls} unary calls (grpc.health.v1.Health/Check), alternating");
    println!(
        "{:<28} {:>10} {:>10} {:>14}",
        "", "median", "p99", "4 MiB request"
    );
    for (i, name) in ["plain tonic server", "through AuthorityFix"]
        .iter()
        .enumerate()
    {
        lat[i].sort();
        bulk[i].sort();
        println!(
            "{:<28} {:>8.1}µs {:>8.1}µs {:>12.2}ms",
            name,
            percentile(&lat[i], 0.5).as_secs_f64() * 1e6,
            percentile(&lat[i], 0.99).as_secs_f64() * 1e6,
            percentile(&bulk[i], 0.5).as_secs_f64() * 1e3,
        );
    }
}
