//! The Prometheus metrics, in one registry served by the admin listener.
//!
//! Label values are bounded: JSON-RPC methods outside the MCP vocabulary
//! count as `other`, so a client cannot grow the metric series at will.
//!
//! What every request updates takes no lock: the latency histograms are
//! atomic ([`AtomicHistogram`]), and each worker thread keeps the counters
//! it has used, by label set, so that only its first use of a label set
//! looks it up in the registry's (locked) family.

use super::histogram::AtomicHistogram;
use crate::policy::{ListKind, PolicyMeta};
use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    http_method: &'static str,
    rpc_method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    virtual_server: String,
    kind: &'static str,
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyInfoLabels {
    sha256: String,
}

pub struct Metrics {
    /// Tells this registry's counters apart in the threads' caches.
    id: usize,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: AtomicHistogram,
    refusals: Family<RefusalLabels, Counter>,
    upstream_duration: Family<UpstreamLabels, AtomicHistogram>,
    /// `upstream_duration`'s series by outcome, once first used.
    upstream_by_outcome: [OnceLock<AtomicHistogram>; 4],
    decisions: Family<DecisionLabels, Counter>,
    lists_refused: Counter,
    list_memo_hits: Counter,
    list_memo_bytes: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    generation: Gauge,
    loaded_at: Gauge,
    policy_info: Family<PolicyInfoLabels, Gauge>,
    tls_failures: Family<TlsLabels, Counter>,
    running_sha256: Mutex<String>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0].into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("toolgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by HTTP method, JSON-RPC method and HTTP status",
            requests.clone(),
        );
        let request_duration = AtomicHistogram::new(latency_buckets());
        registry.register(
            "request_duration_seconds",
            "Time from request to response head, including the upstream",
            request_duration.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register("refusals", "Requests refused by toolgate, by rule", refusals.clone());
        let upstream_duration = Family::<UpstreamLabels, AtomicHistogram>::new_with_constructor(|| {
            AtomicHistogram::new(latency_buckets())
        });
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding to the upstream's response head, by outcome",
            upstream_duration.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Policy decisions, by virtual server, kind (tool, prompt, resource, resource_template), action (call, list) and outcome",
            decisions.clone(),
        );
        let lists_refused = Counter::default();
        registry.register(
            "list_results_refused",
            "List results withheld because they could not be checked (unreadable or over transport.max_list_result)",
            lists_refused.clone(),
        );
        let list_memo_hits = Counter::default();
        registry.register(
            "list_memo_hits",
            "List results answered from the memo of results already filtered (transport.list_memo)",
            list_memo_hits.clone(),
        );
        let list_memo_bytes = Gauge::default();
        registry.register(
            "list_memo_bytes",
            "Bytes the memo of filtered list results holds (at most transport.list_memo)",
            list_memo_bytes.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads, by result (ok, unchanged, error)",
            reloads.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "policy_generation",
            "Generation of the running policy (1 at start)",
            generation.clone(),
        );
        let loaded_at = Gauge::default();
        registry.register(
            "policy_loaded_timestamp_seconds",
            "When the running policy was loaded, in Unix seconds",
            loaded_at.clone(),
        );
        let policy_info = Family::<PolicyInfoLabels, Gauge>::default();
        registry.register("policy_info", "The running policy's SHA-256 (value 1)", policy_info.clone());
        let tls_failures = Family::<TlsLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the proxy listener that failed, by reason (client_certificate, protocol, other)",
            tls_failures.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log's reader did not keep up (the writer's queue was full)",
            super::log_writer::dropped_counter().clone(),
        );
        static IDS: AtomicUsize = AtomicUsize::new(0);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            request_duration,
            refusals,
            upstream_duration,
            upstream_by_outcome: Default::default(),
            decisions,
            lists_refused,
            list_memo_hits,
            list_memo_bytes,
            reloads,
            generation,
            loaded_at,
            policy_info,
            tls_failures,
            running_sha256: Mutex::new(String::new()),
        }
    }

    /// Counts one decision on a call (`action` `call`).
    pub fn decision(&self, server: &str, kind: ListKind, allowed: bool) {
        let slot = kind as usize * 2 + usize::from(allowed);
        DECISIONS.with_borrow_mut(|cache| {
            let at = match cache.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    cache.push((self.id, HashMap::default()));
                    cache.len() - 1
                }
            };
            let by_server = &mut cache[at].1;
            let slots = match by_server.get_mut(server) {
                Some(slots) => slots,
                None => by_server.entry(server.to_owned()).or_default(),
            };
            slots[slot]
                .get_or_insert_with(|| {
                    let outcome = if allowed { "allowed" } else { "denied" };
                    let labels = DecisionLabels {
                        virtual_server: server.to_owned(),
                        kind: kind.as_str(),
                        action: "call",
                        outcome,
                    };
                    self.decisions.get_or_create_owned(&labels)
                })
                .inc();
        });
    }

    /// Adds a whole list's decisions at once.
    pub fn list_decisions(&self, server: &str, kind: ListKind, allowed: u64, denied: u64) {
        for (outcome, count) in [("allowed", allowed), ("denied", denied)] {
            if count > 0 {
                let labels = DecisionLabels {
                    virtual_server: server.to_owned(),
                    kind: kind.as_str(),
                    action: "list",
                    outcome,
                };
                self.decisions.get_or_create(&labels).inc_by(count);
            }
        }
    }

    pub fn list_refused(&self) {
        self.lists_refused.inc();
    }

    pub fn list_memo_hit(&self) {
        self.list_memo_hits.inc();
    }

    pub fn list_memo_held(&self, bytes: usize) {
        self.list_memo_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a failed TLS handshake: a client certificate missing, expired
    /// or from another CA; no common protocol version or cipher; or else.
    pub fn tls_refused(&self, error: &std::io::Error) {
        use rustls::Error as E;
        let reason = match error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            Some(E::InvalidCertificate(_) | E::NoCertificatesPresented) => "client_certificate",
            Some(
                E::PeerIncompatible(_) | E::NoApplicationProtocol | E::InappropriateHandshakeMessage { .. },
            ) => "protocol",
            _ => "other",
        };
        self.tls_failures.get_or_create(&TlsLabels { reason }).inc();
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Records which policy is running.
    pub fn policy_running(&self, meta: &PolicyMeta) {
        self.generation.set(i64::try_from(meta.generation).unwrap_or(i64::MAX));
        let loaded = meta.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.loaded_at.set(i64::try_from(loaded).unwrap_or(i64::MAX));
        let mut running = self.running_sha256.lock().unwrap_or_else(|e| e.into_inner());
        if *running != meta.sha256 {
            self.policy_info.remove(&PolicyInfoLabels { sha256: running.clone() });
            self.policy_info.get_or_create(&PolicyInfoLabels { sha256: meta.sha256.clone() }).set(1);
            running.clone_from(&meta.sha256);
        }
    }

    pub fn request(&self, method: &Method, rpc_method: &'static str, status: u16, elapsed: Duration) {
        let http_method = match *method {
            Method::POST => "POST",
            Method::GET => "GET",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let key =
            (self.id, http_method.as_ptr() as usize, rpc_method.as_ptr() as usize, rpc_method.len(), status);
        REQUESTS.with_borrow_mut(|cache| {
            cache
                .entry(key)
                .or_insert_with(|| {
                    self.requests.get_or_create_owned(&RequestLabels { http_method, rpc_method, status })
                })
                .inc();
        });
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// `status` is `None` when the upstream gave no answer (refused, timed out).
    pub fn upstream_answered(&self, elapsed: Duration, status: Option<u16>) {
        let (slot, outcome) = match status {
            None => (0, "failed"),
            Some(s) if s >= 500 => (1, "5xx"),
            Some(s) if s >= 400 => (2, "4xx"),
            Some(_) => (3, "ok"),
        };
        self.upstream_by_outcome[slot]
            .get_or_init(|| self.upstream_duration.get_or_create_owned(&UpstreamLabels { outcome }))
            .observe(elapsed.as_secs_f64());
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// A request's counter, by registry, HTTP method and JSON-RPC method (the
/// addresses and lengths of their `'static` labels: one label may have
/// several addresses, each of which names it alone) and status.
type RequestKey = (usize, usize, usize, usize, u16);

/// A thread's call-decision counters of one registry, by virtual server:
/// one per kind and outcome.
type DecisionCache = (usize, HashMap<String, [Option<Counter>; 8], Quick>);

thread_local! {
    /// This thread's request counters, as first looked up in their family.
    static REQUESTS: RefCell<HashMap<RequestKey, Counter, Quick>> = RefCell::new(HashMap::default());
    /// This thread's call-decision counters, by registry.
    static DECISIONS: RefCell<Vec<DecisionCache>> =
        const { RefCell::new(Vec::new()) };
}

/// The hasher of the per-thread counter caches: their keys are
/// toolgate's own (registry ids, label addresses, configured server
/// names, a status), few and not chosen by a client, so they need no
/// keyed hash; SipHash cost more than the counter it finds. The policy's
/// name sets hash with the same one, for the same reason.
type Quick = std::hash::BuildHasherDefault<crate::policy::pattern::NameHasher>;

/// The label for a JSON-RPC method: its own name when MCP defines it,
/// `other` otherwise.
pub fn rpc_method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/list",
        "tasks/cancel",
        "tasks/result",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ];
    KNOWN.iter().find(|k| **k == method).copied().unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.request(&Method::POST, rpc_method_label("tools/call"), 200, Duration::from_millis(3));
        metrics.request(&Method::POST, rpc_method_label("x/unbounded/123"), 400, Duration::from_millis(1));
        metrics.refused("origin");
        metrics.upstream_answered(Duration::from_millis(2), Some(200));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"toolgate_requests_total{http_method="POST",rpc_method="tools/call",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"rpc_method="other""#), "{text}");
        assert!(text.contains(r#"toolgate_refusals_total{reason="origin"} 1"#), "{text}");
        assert!(text.contains("toolgate_upstream_duration_seconds_count{outcome=\"ok\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn each_registry_counts_what_every_thread_recorded() {
        let (one, two) = (Metrics::new(), Metrics::new());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        one.request(
                            &Method::POST,
                            rpc_method_label("tools/call"),
                            200,
                            Duration::from_millis(1),
                        );
                        one.decision("default", ListKind::Tool, true);
                        one.decision("default", ListKind::Prompt, false);
                        two.decision("other", ListKind::Tool, true);
                        one.upstream_answered(Duration::from_millis(1), Some(503));
                    }
                });
            }
        });
        one.request(&Method::GET, rpc_method_label("tools/call"), 200, Duration::from_millis(1));
        one.request(&Method::POST, rpc_method_label("tools/list"), 200, Duration::from_millis(1));
        let text = one.encode();
        for line in [
            r#"toolgate_requests_total{http_method="POST",rpc_method="tools/call",status="200"} 300"#,
            r#"toolgate_requests_total{http_method="GET",rpc_method="tools/call",status="200"} 1"#,
            r#"toolgate_requests_total{http_method="POST",rpc_method="tools/list",status="200"} 1"#,
            r#"toolgate_decisions_total{virtual_server="default",kind="tool",action="call",outcome="allowed"} 300"#,
            r#"toolgate_decisions_total{virtual_server="default",kind="prompt",action="call",outcome="denied"} 300"#,
            r#"toolgate_upstream_duration_seconds_count{outcome="5xx"} 300"#,
            "toolgate_request_duration_seconds_count 302",
        ] {
            assert!(text.contains(&format!("{line}\n")), "no `{line}` in\n{text}");
        }
        assert!(!text.contains(r#"virtual_server="other""#), "{text}");
        let text = two.encode();
        let line = r#"toolgate_decisions_total{virtual_server="other",kind="tool",action="call",outcome="allowed"} 300"#;
        assert!(text.contains(line), "{text}");
        assert!(!text.contains(r#"virtual_server="default""#), "{text}");
    }
}
