//! The load generator behind `agentry bench api`: POSTs one JSON body to one
//! URL at a constant rate and reports latency percentiles.
//!
//! Key design decision: the generator is open-loop. Send `i` is scheduled at
//! `start + i / rate` whatever the server does, and its latency is measured
//! from that scheduled instant, not from when the request actually left. A
//! closed-loop client (send, wait, send) slows down with the server and so
//! never sees the queueing it causes ("coordinated omission"); measuring from
//! the schedule charges every stall to the requests that waited behind it.
//! When `max_in_flight` requests are outstanding, a scheduled send is skipped
//! and counted in `dropped` rather than queued, so the schedule never slips.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long one request may take, body included, before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to send, how fast, and for how long.
pub struct LoadSpec {
    /// Full URL of the POST target.
    pub url: String,
    /// Sent as `Authorization: Bearer <bearer>`; no header when empty.
    pub bearer: String,
    /// The JSON body of every request.
    pub body: serde_json::Value,
    /// Scheduled sends per second.
    pub rate_per_s: f64,
    /// Length of the measured window, after the warmup.
    pub duration: Duration,
    /// Sends in this leading window go out at the same rate but are not counted.
    pub warmup: Duration,
    /// Most requests outstanding at once; a send scheduled beyond it is dropped.
    pub max_in_flight: usize,
}

/// What the measured window saw. Latencies are in milliseconds, from each
/// request's scheduled send time to the end of its response body, over every
/// request that got a response (any status); transport errors have none.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub target_rate_per_s: f64,
    /// Requests sent in the measured window per second of that window (longer
    /// than `duration` if the generator itself fell behind).
    pub achieved_rate_per_s: f64,
    /// Requests sent in the measured window: `sum(status_counts) + errors`.
    pub requests: u64,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses by status code.
    pub status_counts: BTreeMap<u16, u64>,
    /// Requests that got no complete response (connect, timeout, body read).
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Scheduled sends skipped because `max_in_flight` requests were outstanding.
    pub dropped: u64,
}

/// The result of one measured request.
enum Outcome {
    Response { status: u16, latency: Duration },
    Error,
}

/// Runs the load described by `spec` and returns what the measured window saw.
pub async fn run_load(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    if !(spec.rate_per_s.is_finite() && spec.rate_per_s > 0.0) {
        bail!(
            "the request rate must be a positive number, not {}",
            spec.rate_per_s
        );
    }
    if spec.duration.is_zero() {
        bail!("the measured duration must be longer than zero");
    }
    if spec.max_in_flight == 0 {
        bail!("max_in_flight must be at least 1");
    }
    let body = serde_json::to_vec(&spec.body).context("cannot encode the request body as JSON")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.max_in_flight)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let url = reqwest::Url::parse(&spec.url)
        .with_context(|| format!("invalid target URL {:?}", spec.url))?;

    let warmup_s = spec.warmup.as_secs_f64();
    let total_s = warmup_s + spec.duration.as_secs_f64();
    let slots = std::sync::Arc::new(Semaphore::new(spec.max_in_flight));
    let mut in_flight: JoinSet<Option<Outcome>> = JoinSet::new();
    let mut outcomes = Vec::new();
    let mut dropped = 0u64;

    let start = Instant::now();
    for i in 0u64.. {
        let offset_s = i as f64 / spec.rate_per_s;
        if offset_s >= total_s {
            break;
        }
        let measured = offset_s >= warmup_s;
        let scheduled = start + Duration::from_secs_f64(offset_s);
        tokio::time::sleep_until(scheduled).await;
        while let Some(done) = in_flight.try_join_next() {
            outcomes.extend(done.context("a request task panicked")?);
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if measured {
                dropped += 1;
            }
            continue;
        };
        let request = client
            .post(url.clone())
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        let request = if spec.bearer.is_empty() {
            request
        } else {
            request.bearer_auth(&spec.bearer)
        };
        in_flight.spawn(async move {
            let outcome = send(request, scheduled).await;
            drop(slot);
            measured.then_some(outcome)
        });
    }
    // The measured window ends on schedule unless the generator itself lagged.
    let window_s = (start.elapsed().as_secs_f64() - warmup_s).max(spec.duration.as_secs_f64());
    while let Some(done) = in_flight.join_next().await {
        outcomes.extend(done.context("a request task panicked")?);
    }
    Ok(report(spec.rate_per_s, window_s, &outcomes, dropped))
}

/// Sends one request and reads its whole body; latency counts from `scheduled`.
async fn send(request: reqwest::RequestBuilder, scheduled: Instant) -> Outcome {
    let Ok(response) = request.send().await else {
        return Outcome::Error;
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(_) => Outcome::Response {
            status,
            latency: scheduled.elapsed(),
        },
        Err(_) => Outcome::Error,
    }
}

fn report(target_rate_per_s: f64, window_s: f64, outcomes: &[Outcome], dropped: u64) -> LoadReport {
    let mut status_counts = BTreeMap::new();
    let mut errors = 0u64;
    let mut latencies_ms = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Outcome::Response { status, latency } => {
                *status_counts.entry(*status).or_insert(0u64) += 1;
                latencies_ms.push(latency.as_secs_f64() * 1000.0);
            }
            Outcome::Error => errors += 1,
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    let ok = status_counts
        .iter()
        .filter(|(status, _)| (200..300).contains(*status))
        .map(|(_, count)| count)
        .sum();
    let requests = outcomes.len() as u64;
    LoadReport {
        target_rate_per_s,
        achieved_rate_per_s: requests as f64 / window_s,
        requests,
        ok,
        status_counts,
        errors,
        p50_ms: percentile(&latencies_ms, 0.50),
        p90_ms: percentile(&latencies_ms, 0.90),
        p99_ms: percentile(&latencies_ms, 0.99),
        p999_ms: percentile(&latencies_ms, 0.999),
        max_ms: latencies_ms.last().copied().unwrap_or(0.0),
        dropped,
    }
}

/// The nearest-rank percentile of ascending `sorted` values: the smallest
/// value with at least `p` of all values at or below it. 0 when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn check_percentile(values: &[f64], p: f64, expected: f64) {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(
            percentile(&sorted, p),
            expected,
            "p{} of {values:?}",
            p * 100.0
        );
    }

    fn one_to(n: u32) -> Vec<f64> {
        (1..=n).map(f64::from).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        check_percentile(&one_to(100), 0.50, 50.0);
        check_percentile(&one_to(100), 0.90, 90.0);
        check_percentile(&one_to(100), 0.99, 99.0);
        check_percentile(&one_to(100), 0.999, 100.0);
        check_percentile(&one_to(1000), 0.999, 999.0);
        check_percentile(&one_to(10), 0.50, 5.0);
        check_percentile(&one_to(10), 0.55, 6.0);
        check_percentile(&one_to(10), 1.0, 10.0);
        check_percentile(&one_to(10), 0.0, 1.0);
    }

    #[test]
    fn percentiles_of_few_values() {
        check_percentile(&[], 0.5, 0.0);
        check_percentile(&[7.0], 0.5, 7.0);
        check_percentile(&[7.0], 0.999, 7.0);
        check_percentile(&[3.0, 1.0], 0.5, 1.0);
        check_percentile(&[3.0, 1.0], 0.51, 3.0);
    }

    #[test]
    fn report_counts_statuses_and_errors() {
        let response = |status, ms| Outcome::Response {
            status,
            latency: Duration::from_millis(ms),
        };
        let outcomes = [
            response(200, 4),
            response(201, 2),
            response(429, 1),
            response(500, 3),
            Outcome::Error,
        ];
        let report = report(10.0, 0.5, &outcomes, 2);
        assert_eq!(report.requests, 5);
        assert_eq!(report.ok, 2);
        assert_eq!(report.errors, 1);
        assert_eq!(report.dropped, 2);
        assert_eq!(
            report.status_counts,
            BTreeMap::from([(200, 1), (201, 1), (429, 1), (500, 1)])
        );
        assert_eq!(report.achieved_rate_per_s, 10.0);
        assert_eq!((report.p50_ms, report.max_ms), (2.0, 4.0));
    }

    struct TestServer {
        url: String,
        /// The `x-request-id` of every request received, in arrival order.
        ids: Arc<Mutex<Vec<String>>>,
        /// TCP connections accepted.
        connections: Arc<AtomicUsize>,
    }

    /// A minimal HTTP/1.1 keep-alive server: answers every request with
    /// `200 {}` after `delay`, and records each request's `x-request-id`.
    async fn start_server(delay: Duration) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/workflows", listener.local_addr().unwrap());
        let ids = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, accepted) = (ids.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(stream, delay, seen.clone()));
            }
        });
        TestServer {
            url,
            ids,
            connections,
        }
    }

    async fn serve_connection(stream: TcpStream, delay: Duration, ids: Arc<Mutex<Vec<String>>>) {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut content_length = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => content_length = value.trim().parse().unwrap(),
                        "x-request-id" => ids.lock().unwrap().push(value.trim().to_owned()),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; content_length];
            read.read_exact(&mut body).await.unwrap();
            tokio::time::sleep(delay).await;
            let response =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            if write.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn spec(
        url: String,
        rate_per_s: f64,
        warmup_ms: u64,
        duration_ms: u64,
        max_in_flight: usize,
    ) -> LoadSpec {
        LoadSpec {
            url,
            bearer: "key".into(),
            body: serde_json::json!({"workflow": "noop"}),
            rate_per_s,
            duration: Duration::from_millis(duration_ms),
            warmup: Duration::from_millis(warmup_ms),
            max_in_flight,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_at_the_target_rate_with_distinct_request_ids() {
        let server = start_server(Duration::ZERO).await;
        let report = run_load(&spec(server.url, 200.0, 100, 500, 64))
            .await
            .unwrap();

        // 200/s over 0.5 s is 100 measured sends; the 0.1 s warmup adds 20 uncounted.
        assert_eq!(report.dropped, 0, "{report:?}");
        assert!((99..=101).contains(&report.requests), "{report:?}");
        assert_eq!(report.ok, report.requests, "{report:?}");
        assert_eq!(
            report.status_counts,
            BTreeMap::from([(200, report.requests)])
        );
        // Below 200/s only if the generator itself fell behind its schedule.
        assert!(
            (150.0..=201.0).contains(&report.achieved_rate_per_s),
            "{report:?}"
        );
        assert!(
            report.p50_ms > 0.0 && report.p50_ms <= report.p90_ms,
            "{report:?}"
        );
        assert!(
            report.p90_ms <= report.p99_ms && report.p99_ms <= report.p999_ms,
            "{report:?}"
        );
        assert!(report.p999_ms <= report.max_ms, "{report:?}");

        let ids = server.ids.lock().unwrap().clone();
        let warmup_sends = ids.len() as u64 - report.requests;
        assert!(
            (19..=21).contains(&warmup_sends),
            "{} requests reached the server",
            ids.len()
        );
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "x-request-id repeated");
        assert!(
            ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()),
            "{ids:?}"
        );
        // Keep-alive: ~120 requests, one at a time, over a handful of connections.
        let connections = server.connections.load(Ordering::SeqCst);
        assert!(
            connections <= 8,
            "{connections} connections for {} requests",
            ids.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drops_sends_beyond_max_in_flight_and_measures_from_the_schedule() {
        // Every response takes 300 ms, longer than the whole 200 ms window: the
        // first 5 sends fill max_in_flight and the other 15 are dropped.
        let server = start_server(Duration::from_millis(300)).await;
        let report = run_load(&spec(server.url, 100.0, 0, 200, 5)).await.unwrap();

        assert_eq!((report.requests, report.dropped), (5, 15), "{report:?}");
        assert_eq!(server.ids.lock().unwrap().len(), 5);
        assert!(report.p50_ms >= 300.0, "{report:?}");
    }

    #[tokio::test]
    async fn rejects_a_rate_that_is_not_positive() {
        let error = run_load(&spec("http://127.0.0.1:9/".into(), 0.0, 0, 100, 1))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("rate"), "{error}");
    }
}
