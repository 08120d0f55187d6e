//! Registries that misbehave: one that never answers, one that stops in the middle of a blob,
//! one that serves a web page where a manifest should be, one that cuts a blob short. Each is a
//! clear error naming the URL, in bounded time, never a hang or a panic. The "registry" is a few
//! lines of scripted HTTP on a loopback port (`common`).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{respond, serve};

use berth_oci::{media, DescriptorBuilder, Digest, MediaType};
use berth_plugin::{Classify, ErrorKind};
use berth_remotes::{ClientConfig, Reference, RegistryClient, RemoteError};

/// Answers the `/v2/` version check as Distribution does; false for any other path.
fn answered_ping(path: &str, conn: &mut TcpStream) -> bool {
    if path == "/v2/" {
        respond(conn, "200 OK", &[("Content-Length", "2".into())], b"{}");
        return true;
    }
    false
}

/// A client that gives up after 1 s of silence.
fn impatient() -> RegistryClient {
    RegistryClient::new(ClientConfig {
        read_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    })
}

fn blob() -> Vec<u8> {
    (0..256 * 1024u32).map(|i| (i % 251) as u8).collect()
}

/// Headers announcing the whole blob, then only its first half.
fn send_half_a_blob(conn: &mut TcpStream) {
    let data = blob();
    respond(
        conn,
        "200 OK",
        &[("Content-Length", data.len().to_string())],
        &data[..data.len() / 2],
    );
}

fn blob_descriptor() -> berth_oci::Descriptor {
    let data = blob();
    DescriptorBuilder::default()
        .media_type(MediaType::from(media::OCI_LAYER_GZIP))
        .digest(berth_oci::oci_spec::image::Digest::from(&Digest::sha256(
            &data,
        )))
        .size(data.len() as u64)
        .build()
        .expect("descriptor")
}

/// Reads a blob to its end, or to the first error.
async fn read_blob(port: u16) -> Result<u64, RemoteError> {
    let client = impatient();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).expect("reference");
    let repo = client.repository(&reference)?;
    let mut stream = repo.fetch_blob(&blob_descriptor(), 0).await?;
    let mut n = 0;
    while let Some(chunk) = stream.next_chunk().await? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out() {
    let port = serve(|_, _| std::thread::sleep(Duration::from_secs(30)));
    let client = impatient();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).expect("reference");
    let repo = client.repository(&reference).expect("repository");
    let start = Instant::now();
    let e = repo
        .resolve(&reference)
        .await
        .expect_err("a silent registry");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(e, RemoteError::Timeout { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("http://127.0.0.1:{port}/v2/x/y/manifests/z")),
        "{msg}"
    );
    assert!(msg.contains("timed out"), "{msg}");
}

#[tokio::test]
async fn a_registry_that_stops_in_the_middle_of_a_blob_times_out() {
    let port = serve(|req, conn| {
        if !answered_ping(&req.path, conn) {
            send_half_a_blob(conn);
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    let start = Instant::now();
    let e = read_blob(port).await.expect_err("a stalled blob");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(e, RemoteError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("stopped sending"), "{e}");
}

#[tokio::test]
async fn a_blob_cut_short_is_an_error_not_a_short_blob() {
    let port = serve(|req, conn| {
        if !answered_ping(&req.path, conn) {
            send_half_a_blob(conn);
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    });
    let e = read_blob(port).await.expect_err("a truncated blob");
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!matches!(e, RemoteError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn a_web_page_instead_of_a_manifest_is_refused() {
    let port = serve(|req, conn| {
        if answered_ping(&req.path, conn) {
            return;
        }
        let page = b"<html><body>Please log in</body></html>";
        let headers = [
            ("Content-Type", "text/html; charset=utf-8".to_owned()),
            ("Content-Length", page.len().to_string()),
        ];
        let body: &[u8] = if req.method == "HEAD" { b"" } else { page };
        respond(conn, "200 OK", &headers, body);
    });
    let client = impatient();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).expect("reference");
    let repo = client.repository(&reference).expect("repository");
    let e = repo.resolve(&reference).await.expect_err("a web page");
    let msg = e.to_string();
    assert!(msg.contains("web page"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

#[tokio::test]
async fn a_manifest_that_is_not_json_is_refused() {
    let port = serve(|req, conn| {
        if answered_ping(&req.path, conn) {
            return;
        }
        // No digest header: the client must GET and look at the body.
        let body = b"this is not json";
        let headers = [
            ("Content-Type", media::OCI_MANIFEST.to_owned()),
            ("Content-Length", body.len().to_string()),
        ];
        respond(
            conn,
            "200 OK",
            &headers,
            if req.method == "HEAD" { b"" } else { body },
        );
    });
    let client = impatient();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).expect("reference");
    let repo = client.repository(&reference).expect("repository");
    let e = repo.resolve(&reference).await.expect_err("not json");
    assert!(e.to_string().contains("not a JSON manifest"), "{e}");
}

/// The read timeout is for a registry that stops answering, not for an upload that takes long:
/// a manifest PUT that the registry takes 2 s to read (twice the 1 s timeout) still succeeds.
#[tokio::test]
async fn an_upload_longer_than_the_read_timeout_is_not_cut() {
    const BODY: usize = 16 * 1024;
    let port = serve(|req, conn| {
        if answered_ping(&req.path, conn) {
            return;
        }
        // Read the body slowly: 1 KiB every 125 ms.
        let mut chunk = [0u8; 1024];
        for _ in 0..BODY / chunk.len() {
            std::thread::sleep(Duration::from_millis(125));
            if conn.read_exact(&mut chunk).is_err() {
                return;
            }
        }
        respond(conn, "201 Created", &[("Content-Length", "0".into())], b"");
    });
    let client = impatient();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).expect("reference");
    let repo = client.repository(&reference).expect("repository");
    let body = bytes::Bytes::from(vec![b' '; BODY]);
    let start = Instant::now();
    repo.push_manifest("z", media::OCI_MANIFEST, body)
        .await
        .expect("a slow upload is not a silent registry");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}
