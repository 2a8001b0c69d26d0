//! Building and serving the gateway: plain HTTP or HTTPS, graceful
//! shutdown, and pick-up of unfinished workflows at start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentry_core::{ApiKeyStore, RateLimiter, Store};
use agentry_engine::{Engine, WorkerHandle};
use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState, DefinitionSource, Shared};
use crate::auth::jwt::JwtValidator;
use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::runs::Runs;

/// What the gateway runs on.
pub struct GatewayDeps {
    /// The engine (its store, bus and node runner).
    pub engine: Engine,
    /// Workers of this process, stopped gracefully on shutdown (None when
    /// workers run elsewhere).
    pub workers: Option<WorkerHandle>,
    /// Where API keys are looked up, and created and revoked by admins.
    pub keys: Arc<dyn ApiKeyStore>,
    /// The buckets of per-caller and failed-authentication limits (in
    /// memory, or shared by replicas).
    pub limiter: Arc<dyn RateLimiter>,
    /// Workflow definitions submissions may name.
    pub definitions: Arc<dyn DefinitionSource>,
    /// Options every workflow starts with (the server's LLM choice); a
    /// submission's own are laid over them.
    pub base_options: agentry_core::RunOptions,
    /// Listen address, TLS, limits and authentication settings.
    pub config: GatewayConfig,
    /// Whether workflows run here or only start here.
    pub execution: crate::runs::Execution,
    /// The worker registry `GET /v1/agents` reads (every worker process of
    /// the deployment), with the heartbeat age past which a worker is
    /// unhealthy; None shows this process's own workers only.
    pub registry: Option<(Arc<dyn agentry_core::WorkerRegistry>, Duration)>,
}

/// A gateway ready to serve.
pub struct Gateway {
    state: AppState,
    workers: Option<WorkerHandle>,
}

impl Gateway {
    /// Checks the settings and builds the gateway.
    pub fn new(deps: GatewayDeps) -> anyhow::Result<Gateway> {
        deps.config.validate()?;
        let jwt = deps
            .config
            .jwt
            .clone()
            .map(JwtValidator::new)
            .transpose()
            .context("gateway.jwt")?;
        let store: Arc<dyn Store> = deps.engine.store().clone();
        let runs = Runs::new(
            deps.engine.clone(),
            deps.config.max_running_workflows,
            deps.execution,
        );
        let state = AppState::new(Shared {
            auth: Authenticator::new(
                deps.keys.clone(),
                deps.config.api_keys,
                jwt,
                Duration::from_secs(deps.config.api_key_cache_s),
            ),
            engine: deps.engine,
            registry: deps.registry,
            store,
            keys: deps.keys,
            limiter: deps.limiter,
            runs,
            definitions: deps.definitions,
            base_options: deps.base_options,
            validators: crate::openapi::validators()?,
            streams: crate::api::events::StreamCaps::new(
                deps.config.max_event_streams_per_caller,
                deps.config.max_event_streams,
            ),
            shutdown: CancellationToken::new(),
            config: deps.config,
        });
        Ok(Gateway {
            state,
            workers: deps.workers,
        })
    }

    /// The router (for tests without a socket, and for [`Gateway::serve`]).
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let v1 = Router::new()
            .route(
                "/v1/workflows",
                post(api::workflows::submit).get(api::workflows::list),
            )
            .route("/v1/workflows/{id}", get(api::workflows::get))
            .route("/v1/workflows/{id}/history", get(api::workflows::history))
            .route("/v1/workflows/{id}/events", get(api::events::events))
            .route("/v1/workflows/{id}/approve", post(api::workflows::approve))
            .route("/v1/workflows/{id}/reject", post(api::workflows::reject))
            .route("/v1/workflows/{id}/cancel", post(api::workflows::cancel))
            .route("/v1/workflows/{id}/resume", post(api::workflows::resume))
            .route("/v1/workflow-definitions", get(api::system::definitions))
            .route("/v1/agents", get(api::agents::list))
            .route("/v1/keys", get(api::keys::list).post(api::keys::create))
            .route("/v1/keys/{key_id}/revoke", post(api::keys::revoke))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                api::authenticate,
            ));
        Router::new()
            .route("/healthz", get(api::system::healthz))
            .route("/readyz", get(api::system::readyz))
            .route("/openapi.json", get(api::docs::openapi))
            .route("/docs", get(api::docs::docs))
            .route("/docs/{file}", get(api::docs::docs_asset))
            .merge(v1)
            .fallback(|| async { crate::problem::ApiError::NotFound("no such route".to_string()) })
            .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                api::head_limits,
            ))
            .layer(middleware::from_fn(crate::problem::problem_bodies))
            .layer(middleware::from_fn(api::request_context))
            .with_state(state)
    }

    /// Picks up the workflows a previous process left unfinished.
    pub async fn resume_unfinished(&self) -> anyhow::Result<usize> {
        self.state
            .runs
            .resume_unfinished()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list unfinished workflows: {e}"))
    }

    /// Serves on `listener` until `shutdown` resolves, then stops
    /// gracefully: no new connections, event streams end, node runs in hand
    /// get `shutdown_grace_s` to commit (then they are abandoned and their
    /// workflows resume at the next start), the outbox is flushed.
    /// `on_listening` is called with the bound address once serving.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        listener
            .set_nonblocking(true)
            .context("cannot make the listener non-blocking")?;
        let addr = listener.local_addr().context("listener address")?;
        let config = self.state.config.clone();
        let grace = Duration::from_secs(config.shutdown_grace_s);
        // TLS files are read before anything starts, so a bad file stops
        // the server before it picks up any workflow.
        let rustls = config.tls.as_ref().map(tls_config).transpose()?;
        let handle = axum_server::Handle::<SocketAddr>::new();
        // One deadline for the whole shutdown, set when the signal comes.
        let deadline = Arc::new(parking_lot::Mutex::new(None::<tokio::time::Instant>));
        {
            let handle = handle.clone();
            let state = self.state.clone();
            let deadline = deadline.clone();
            tokio::spawn(async move {
                shutdown.await;
                info!("Shutting down: no new requests; in-flight ones finish.");
                *deadline.lock() = Some(tokio::time::Instant::now() + grace);
                state.shutdown.cancel();
                handle.graceful_shutdown(Some(grace));
            });
        }
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let resumed = self.resume_unfinished().await?;
        match rustls {
            Some(rustls) => {
                info!(%addr, resumed, "Serving HTTPS.");
                // The TLS handshake has the same deadline as a request
                // head: a client that connects and stalls is let go.
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                    .handshake_timeout(Duration::from_secs(config.header_read_timeout_s));
                let server = axum_server::from_tcp(listener)
                    .context("cannot serve on the listener")?
                    .acceptor(acceptor);
                http1_with_limits(server, &config)
                    .handle(handle)
                    .serve(app)
                    .await
                    .context("the HTTPS server failed")?;
            }
            None => {
                info!(%addr, resumed, "Serving HTTP.");
                let server =
                    axum_server::from_tcp(listener).context("cannot serve on the listener")?;
                http1_with_limits(server, &config)
                    .handle(handle)
                    .serve(app)
                    .await
                    .context("the HTTP server failed")?;
            }
        }
        let left = deadline
            .lock()
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
            .unwrap_or(grace);
        self.stop(left).await;
        Ok(())
    }

    /// Stops background runs, gives the workers what is `left` of the
    /// grace period to settle the node runs in hand (then kills them: their
    /// deliveries stay unsettled and their workflows resume at the next
    /// start), and flushes the outbox.
    async fn stop(self, left: Duration) {
        self.state.shutdown.cancel();
        self.state.runs.stop().await;
        if let Some(workers) = self.workers {
            if !workers.shutdown_within(left).await {
                warn!(
                    grace_s = left.as_secs(),
                    "Node runs did not finish in time and were stopped; their workflows resume at the next start."
                );
            }
        }
        self.state.engine.close().await;
        info!("Stopped.");
    }
}

/// How far hyper's own head limits sit above ours. hyper answers a head
/// past its limits itself, before any of our code runs, with a bare 431
/// (no body, no hook to change it); ours ([`api::head_limits`]) answer a
/// problem document, so hyper's only stop what is far past them.
const HYPER_HEAD_HEADROOM: usize = 4;

/// HTTP/1.1 only (TLS offers only `http/1.1` too), with the settings of
/// every connection, plain or TLS: a deadline for the request head
/// (hyper's timer is installed by axum-server; without a deadline a client
/// sending a partial request holds its connection forever, and with
/// HTTP/2 prior knowledge it would not apply), and hyper's head limits
/// well above ours.
fn http1_with_limits<A: axum_server::Address, Acc>(
    server: axum_server::Server<A, Acc>,
    config: &GatewayConfig,
) -> axum_server::Server<A, Acc> {
    let mut server = server.http1_only();
    server
        .http_builder()
        .http1()
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_s))
        .max_headers(config.max_headers * HYPER_HEAD_HEADROOM)
        .max_buf_size((config.max_header_bytes * HYPER_HEAD_HEADROOM).max(8192));
    server
}

fn tls_config(
    tls: &crate::config::TlsConfig,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .with_context(|| format!("cannot read the TLS certificate {}", tls.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "the TLS certificate {} is not valid PEM",
                tls.cert.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file {} holds no certificate",
        tls.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("cannot read the TLS key {} (PEM)", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match or are not supported")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}
