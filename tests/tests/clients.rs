//! Every gRPC client reaches berthd: PyPI's grpcio (which names a unix socket's path as the
//! HTTP/2 `:authority`), a client that sends the raw path itself, and the standard health service
//! that containerd's Go client polls before its first call. Hostile HTTP/2 input closes only the
//! connection that sent it.

use std::path::PathBuf;
use std::process::Command;

use berth_tests::h2raw::{RawClient, CONTINUATION, END_HEADERS, HEADERS};
use berth_tests::{grpcio_python, require_root, Berthd, Containerd};

const VERSION: &str = "/containerd.services.version.v1.Version/Version";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

fn run_python_clients(
    python: &PathBuf,
    socket: &std::path::Path,
    prefix: &str,
) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/grpc_clients.py");
    let out = Command::new(python)
        .arg(script)
        .arg(socket)
        .arg(prefix)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "grpc_clients.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("grpc_clients.py prints JSON")
}

#[test]
fn pypi_grpcio_is_served_like_containerd_serves_it() {
    require_root("starting berthd and containerd");
    let python = grpcio_python();
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let ours = run_python_clients(&python, &berthd.socket(), "py");
    let theirs = run_python_clients(&python, &containerd.socket(), "py");
    eprintln!("grpcio {}", ours["grpcio"]);
    let results = ours["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for (i, (r, c)) in results
        .iter()
        .zip(theirs["results"].as_array().expect("results"))
        .enumerate()
    {
        assert!(r.get("error").is_none(), "berthd, {r}");
        assert!(c.get("error").is_none(), "containerd, {c}");
        assert_eq!(r["version"], berth_version(), "{r}");
        assert_eq!(r["health"], 1, "SERVING: {r}");
        assert_eq!(r["watch"], 1, "Watch sends SERVING first: {r}");
        assert_eq!(r["missing"], "NOT_FOUND", "{r}");
        let name = format!("py-{i}");
        let listed: Vec<&str> = r["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(listed.contains(&name.as_str()), "{r}");
        // containerd answers the same, apart from its version and its empty namespace for a
        // missing one (a documented difference: berthd says NotFound).
        assert_eq!(c["missing"], "OK", "{c}");
        for key in ["health", "watch", "namespaces"] {
            assert_eq!(r[key], c[key], "{key}: berthd {r} vs containerd {c}");
        }
    }
}

fn berth_version() -> String {
    let out = Command::new(berth_tests::bin("berthd"))
        .arg("--version")
        .output()
        .expect("berthd --version");
    // "berthd 0.1.0 (rev)" or "berthd 0.1.0"
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("a version")
        .to_owned()
}

#[test]
fn a_raw_socket_path_authority_is_served() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    let path = berthd.socket().display().to_string();
    let encoded = path.replace('/', "%2F");
    let mut c = RawClient::connect(&berthd.socket()).expect("connect");
    let mut stream = 1;
    for authority in [path.as_str(), encoded.as_str(), "localhost", ""] {
        let a = c
            .unary(stream, authority, VERSION, &[], &[])
            .expect("answer");
        assert_eq!(a.reset, None, "{authority:?}: stream reset: {a:?}");
        assert_eq!(a.header(":status"), Some("200"), "{authority:?}: {a:?}");
        assert_eq!(a.header("grpc-status"), Some("0"), "{authority:?}: {a:?}");
        assert!(
            a.data
                .windows(berth_version().len())
                .any(|w| w == berth_version().as_bytes()),
            "{authority:?}: version in {:?}",
            a.data
        );
        stream += 2;
        // The health service with the empty service name: SERVING (field 1 = 1).
        let a = c
            .unary(stream, &path, HEALTH_CHECK, &[], &[])
            .expect("answer");
        assert_eq!(a.header("grpc-status"), Some("0"), "{a:?}");
        assert_eq!(a.data, [0, 0, 0, 0, 2, 0x08, 0x01], "{a:?}");
        stream += 2;
    }
    // A health check for a named service: served ones are SERVING, unknown ones NOT_FOUND.
    let name = b"containerd.services.content.v1.Content";
    let mut msg = vec![0x0a, name.len() as u8];
    msg.extend_from_slice(name);
    let a = c
        .unary(stream, &path, HEALTH_CHECK, &[], &msg)
        .expect("answer");
    assert_eq!(a.data, [0, 0, 0, 0, 2, 0x08, 0x01], "{a:?}");
    let a = c
        .unary(stream + 2, &path, HEALTH_CHECK, &[], b"\x0a\x04nope")
        .expect("answer");
    assert_eq!(a.header("grpc-status"), Some("5"), "NOT_FOUND: {a:?}");
}

/// Sends `hostile` on a fresh connection and checks the server closed it while a connection that
/// was open before keeps being served, and new ones are accepted.
fn closes_only_that_connection(berthd: &Berthd, what: &str, hostile: impl FnOnce(&mut RawClient)) {
    let path = berthd.socket().display().to_string();
    let mut healthy = RawClient::connect(&berthd.socket()).expect("connect");
    let a = healthy.unary(1, &path, VERSION, &[], &[]).expect("answer");
    assert_eq!(a.header("grpc-status"), Some("0"));

    let mut bad = RawClient::connect(&berthd.socket()).expect("connect");
    hostile(&mut bad);
    assert!(bad.closed_by_server(), "{what}: connection still open");

    let a = healthy
        .unary(3, &path, VERSION, &[], &[])
        .expect("answer after");
    assert_eq!(a.header("grpc-status"), Some("0"), "{what}: {a:?}");
    let mut fresh = RawClient::connect(&berthd.socket()).expect("connect");
    let a = fresh.unary(1, &path, VERSION, &[], &[]).expect("answer");
    assert_eq!(a.header("grpc-status"), Some("0"), "{what}: {a:?}");
}

#[test]
fn hostile_http2_input_closes_only_that_connection() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    closes_only_that_connection(&berthd, "oversized header block", |c| {
        let _ = c.frame(HEADERS, 0, 1, &[0x82]);
        for _ in 0..40 {
            if c.frame(CONTINUATION, 0, 1, &[0x82; 16_000]).is_err() {
                break;
            }
        }
    });
    closes_only_that_connection(&berthd, "CONTINUATION flood", |c| {
        let _ = c.frame(HEADERS, 0, 1, &[0x82]);
        for _ in 0..100_000 {
            if c.frame(CONTINUATION, 0, 1, &[]).is_err() {
                break;
            }
        }
    });
    closes_only_that_connection(&berthd, "bad HPACK", |c| {
        let _ = c.frame(HEADERS, END_HEADERS, 1, &[0xbf, 0x7f, 0x00]);
    });
    closes_only_that_connection(&berthd, "table size above the limit", |c| {
        let _ = c.frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe1, 0x7f, 0x82]);
    });
    closes_only_that_connection(&berthd, "a DATA frame inside a header block", |c| {
        let _ = c.frame(HEADERS, 0, 1, &[0x82]);
        let _ = c.frame(0, 0, 1, b"x");
    });
    let pid = berthd.child.as_ref().expect("running").id();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "berthd still running"
    );
}

#[test]
fn containerds_go_client_and_a_raw_path_go_dialer_are_served() {
    require_root("starting berthd");
    let prog = berth_tests::go_build("clients", "berth-go-clients");
    let berthd = Berthd::start();
    let out = Command::new(&prog)
        .arg(berthd.socket())
        .output()
        .expect("run the Go clients");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Go clients failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "client IsServing true".to_owned(),
        format!("client Version {}", berth_version()),
        "client namespace label from=go".to_owned(),
        "raw-path Health SERVING".to_owned(),
    ];
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, want, "{stdout}");
}
