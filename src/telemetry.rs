//! Logs (tracing) and metrics (Prometheus text at `/metrics`).

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    Encoder, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};

/// Installs the global subscriber: `RUST_LOG` filters (default `info`),
/// `FERRY_LOG_FORMAT=json` switches to JSON lines. Safe to call twice.
pub fn init() {
    use tracing_subscriber::EnvFilter;
    // actix's HTTP/1 dispatcher logs a client's malformed request (a bad
    // header, say) at ERROR: a client's mistake is not a server error, and
    // the request never reaches us to be logged as a refusal.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,actix_http::h1::dispatcher=off"));
    let json = std::env::var("FERRY_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// "outer: inner: root" — the whole cause chain on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "ferry_http_requests_total",
        "HTTP requests answered, by route pattern, method and status",
        &["route", "method", "status"]
    )
    .expect("metric registers once")
});

pub static HTTP_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "ferry_http_request_duration_seconds",
        "Time to answer HTTP requests, by route pattern, method and status",
        &["route", "method", "status"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )
    .expect("metric registers once")
});

pub static EVENTS_APPENDED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("ferry_events_appended_total", "Events appended to the logs by this process")
        .expect("metric registers once")
});

pub static CHUNKS_HANDED_OVER: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "ferry_relay_chunks_handed_over_total",
        "Chunks a download took from an upload to this server as it landed, not read back from the store"
    )
    .expect("metric registers once")
});

pub static WS_SESSIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("ferry_ws_sessions", "Open WebSocket sessions on this server").expect("metric registers once")
});

pub static WS_BATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("ferry_ws_batches_total", "Batches of events read from the log for live delivery")
        .expect("metric registers once")
});

pub static WS_LAGGED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "ferry_ws_lagged_total",
        "Batches a socket's full queue could not take; that socket then caught up from the log"
    )
    .expect("metric registers once")
});

pub static POOL_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "ferry_db_pool_connections",
        "Database pool connections by pool (http: the HTTP workers', background: live events, the sweeper, progress) and state (size, available, waiting, max)",
        &["pool", "state"]
    )
    .expect("metric registers once")
});

/// Renders every registered metric, after sampling the pools' state.
pub fn render(pools: &[(crate::store::PoolRole, deadpool_postgres::Status)]) -> String {
    for (role, status) in pools {
        let gauge = |state| POOL_CONNECTIONS.with_label_values(&[role.label(), state]);
        gauge("max").set(status.max_size as i64);
        gauge("size").set(status.size as i64);
        gauge("available").set(status.available as i64);
        gauge("waiting").set(status.waiting as i64);
    }
    // Touch the lazies so the families exist before the first request.
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_LATENCY);
    LazyLock::force(&EVENTS_APPENDED);
    LazyLock::force(&WS_SESSIONS);
    LazyLock::force(&WS_BATCHES);
    LazyLock::force(&WS_LAGGED);

    let mut buffer = Vec::new();
    TextEncoder::new().encode(&prometheus::gather(), &mut buffer).expect("text encoding of metrics cannot fail");
    String::from_utf8(buffer).expect("prometheus text is UTF-8")
}
