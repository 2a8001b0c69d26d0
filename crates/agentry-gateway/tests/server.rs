//! The gateway on a real loopback socket, for what only a connection
//! shows: the deadline for a request head (over HTTP and HTTPS), and
//! hyper's own head limits sitting above ours, so a client past ours gets
//! a problem document rather than hyper's bare answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_gateway::{GatewayConfig, TlsConfig};
use support::{exchange, Served};
use tokio::net::TcpStream;

/// Longer than any deadline under test: a connection still open then was
/// never going to be closed.
const PATIENCE: Duration = Duration::from_secs(8);

fn with_header_timeout(seconds: u64) -> GatewayConfig {
    GatewayConfig {
        header_read_timeout_s: seconds,
        ..GatewayConfig::default()
    }
}

/// Sends `request` on a new plain connection; what came back once the
/// server closed it, and when it did.
async fn plain(addr: SocketAddr, request: &[u8]) -> (Option<String>, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(&mut stream, request, PATIENCE).await;
    (answer, started.elapsed())
}

#[track_caller]
fn assert_closed_at_the_deadline(what: &str, answer: Option<String>, after: Duration) {
    let answer = answer.unwrap_or_else(|| panic!("{what}: still open after {PATIENCE:?}"));
    assert!(
        after >= Duration::from_millis(900),
        "{what}: closed after {after:?}, before the 1 s deadline: {answer:?}"
    );
    assert!(
        !answer.contains("200 OK"),
        "{what}: a partial request was answered: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_a_partial_request_is_closed_after_the_header_read_timeout() {
    let served = Served::start(with_header_timeout(1)).await;
    let (partial, silent, whole) = tokio::join!(
        plain(served.addr, b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: "),
        plain(served.addr, b""),
        plain(
            served.addr,
            b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        ),
    );
    assert_closed_at_the_deadline("a partial head", partial.0, partial.1);
    assert_closed_at_the_deadline("a connection that sends nothing", silent.0, silent.1);
    let (answer, _) = whole;
    assert!(
        answer.unwrap().starts_with("HTTP/1.1 200"),
        "a whole request is answered"
    );
}

/// A self-signed certificate for `localhost`, its files, and a client
/// that trusts it.
fn tls_setup() -> (TlsConfig, tokio_rustls::TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("agentry-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        TlsConfig {
            cert: cert_path,
            key: key_path,
        },
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

/// Sends `request` on a new TLS connection; what came back once the
/// server closed it, and when it did (from the end of the handshake).
async fn over_tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    request: &[u8],
) -> (Option<String>, Duration) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let started = Instant::now();
    let answer = exchange(&mut stream, request, PATIENCE).await;
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_partial_request_and_a_stalled_handshake_are_closed_after_the_timeout() {
    let (tls, connector) = tls_setup();
    let served = Served::start(GatewayConfig {
        tls: Some(tls.clone()),
        ..with_header_timeout(1)
    })
    .await;
    let (whole, partial, stalled) = tokio::join!(
        over_tls(
            served.addr,
            &connector,
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        ),
        over_tls(
            served.addr,
            &connector,
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: "
        ),
        // Plain bytes that are no ClientHello's end: the handshake waits
        // for more.
        plain(served.addr, &[0x16, 0x03, 0x01]),
    );
    assert!(
        whole.0.unwrap().starts_with("HTTP/1.1 200"),
        "a whole request is answered over TLS"
    );
    assert_closed_at_the_deadline("a partial head over TLS", partial.0, partial.1);
    assert_closed_at_the_deadline("a stalled TLS handshake", stalled.0, stalled.1);
    let _ = std::fs::remove_dir_all(tls.cert.parent().unwrap());
}

/// A request with `extra` more headers, one of them `big` bytes long.
fn request_with(extra: usize, big: usize) -> Vec<u8> {
    let mut head = String::from("GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n");
    for i in 0..extra {
        head.push_str(&format!("x-extra-{i}: 1\r\n"));
    }
    head.push_str(&format!("x-big: {}\r\n\r\n", "v".repeat(big)));
    head.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_our_header_limits_the_server_answers_a_431_problem_not_hypers_bare_431() {
    // The defaults: 100 headers, 64 KiB.
    let served = Served::start(GatewayConfig::default()).await;
    for (what, request) in [
        ("150 headers", request_with(150, 1)),
        ("a 100 KB header", request_with(0, 100 * 1024)),
    ] {
        let (answer, _) = plain(served.addr, &request).await;
        let answer = answer.unwrap_or_else(|| panic!("{what}: no answer"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431"), "{what}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{what}: {head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 431, "{what}: {body}");
        assert!(body.len() < 1000, "{what}: {body}");
    }
    // Within them: answered.
    let (answer, _) = plain(served.addr, &request_with(90, 30 * 1024)).await;
    assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
    // Far past them (four times), hyper stops the head itself, before any
    // of our code runs: its 431 has no body, and hyper offers no hook to
    // give it one.
    let (answer, _) = plain(served.addr, &request_with(450, 1)).await;
    let answer = answer.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(!answer.contains("problem+json"), "{answer}");
}
