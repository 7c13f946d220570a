//! Store tests, including byte-for-byte comparisons with output captured from Envoy 1.40.
//!
//! `fixtures/` holds one consistent capture of a running Envoy (static clusters `svc`, `svc-b`,
//! `svc.b`, `payments.v1` with DEFAULT/HIGH circuit breakers, an IPv4 HTTP listener with a
//! virtual cluster, an IPv6 HTTP listener with stat_prefix `v6_listener` and HCM prefix
//! `egress.v6`, an IPv6 TCP proxy listener; two workers; traffic with varied latencies and
//! statuses): `/stats`, `?usedonly`, `?filter=upstream_rq_(2|5)`, the JSON forms (JSON filter
//! `rq_time`), `/stats/prometheus`, and `?histogram_buckets=detailed` (the raw circllhist bins).
//! Stats that change between two admin requests (`*admin*`, `server.memory_*`,
//! `server.uptime`) were removed from all files. The tests rebuild a [`Store`] holding the same
//! stats (types from the Prometheus `# TYPE` lines, histograms replayed from the raw bins with
//! a flush between the older samples and the last interval) and compare every rendering.

use super::histogram::{self, Bins, bin_of};
use super::*;
use std::collections::{HashMap, HashSet};

const TEXT: &str = include_str!("fixtures/envoy_stats.txt");
const TEXT_USED: &str = include_str!("fixtures/envoy_stats_usedonly.txt");
const TEXT_FILTER: &str = include_str!("fixtures/envoy_stats_filter.txt");
const JSON: &str = include_str!("fixtures/envoy_stats.json");
const JSON_USED: &str = include_str!("fixtures/envoy_stats_usedonly.json");
const JSON_FILTER: &str = include_str!("fixtures/envoy_stats_filter.json");
const PROM: &str = include_str!("fixtures/envoy_prometheus.txt");
const DETAILED: &str = include_str!("fixtures/envoy_histograms_detailed.txt");

fn is_histogram_line(value: &str) -> bool {
    value.starts_with("P0(") || value == "No recorded values"
}

/// Parses `left,width:count, …` into (bin, count).
fn parse_bins(s: &str) -> Bins {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(", ")
        .map(|part| {
            let (edges, count) = part.split_once(':').unwrap();
            let left: f64 = edges.split(',').next().unwrap().parse().unwrap();
            (bin_of(left.round() as u64), count.parse().unwrap())
        })
        .collect()
}

/// Raw bins per histogram: name → (totals, intervals).
fn detailed() -> HashMap<String, (Bins, Bins)> {
    let lines: Vec<&str> = DETAILED.lines().collect();
    let mut out = HashMap::new();
    for chunk in lines.chunks(4) {
        let name = chunk[0].strip_suffix(':').unwrap().to_string();
        let totals = parse_bins(chunk[1].trim().strip_prefix("totals=").unwrap());
        let intervals = parse_bins(chunk[2].trim().strip_prefix("intervals=").unwrap());
        out.insert(name, (totals, intervals));
    }
    out
}

/// Prometheus family name → type, from the `# TYPE` lines.
fn prom_types() -> HashMap<String, String> {
    PROM.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// Rebuilds Envoy's stats in a Store.
fn envoy_store() -> Store {
    let store = Store::new();
    let types = prom_types();
    let used: HashSet<&str> = TEXT_USED
        .lines()
        .map(|l| l.split_once(": ").unwrap().0)
        .collect();
    let bins = detailed();
    for line in TEXT.lines() {
        let (name, value) = line.split_once(": ").unwrap();
        if is_histogram_line(value) {
            let h = store.histogram(name);
            if let Some((totals, intervals)) = bins.get(name) {
                // Everything before the last interval, a flush, the last interval, a flush.
                for &(bin, count) in totals {
                    let recent = intervals.iter().find(|b| b.0 == bin).map_or(0, |b| b.1);
                    for _ in 0..count - recent {
                        h.record(histogram::bin_floor(bin));
                    }
                }
                h.0.flush();
                for &(bin, count) in intervals {
                    for _ in 0..count {
                        h.record(histogram::bin_floor(bin));
                    }
                }
                h.0.flush();
            }
            continue;
        }
        let value: u64 = value.parse().unwrap();
        let (extracted, _) = tag_extractor().extract(name, &[]);
        let family = format!("envoy_{}", tags::sanitize_name(&extracted));
        let kind = types
            .get(&family)
            .unwrap_or_else(|| panic!("no Prometheus family {family} for {name}"));
        let is_used = used.contains(name);
        match kind.as_str() {
            "counter" => {
                let c = store.counter(name);
                if is_used {
                    c.add(value);
                } else {
                    assert_eq!(value, 0, "{name}");
                }
            }
            "gauge" => {
                let g = store.gauge(name);
                if is_used {
                    g.set(value);
                } else {
                    g.0.value.store(value, Ordering::Relaxed);
                }
            }
            other => panic!("{name}: unexpected type {other}"),
        }
    }
    store
}

fn assert_same_lines(ours: &str, envoy: &str) {
    for (i, (a, b)) in ours.lines().zip(envoy.lines()).enumerate() {
        assert_eq!(a, b, "line {}", i + 1);
    }
    assert_eq!(ours.lines().count(), envoy.lines().count());
    assert_eq!(ours, envoy);
}

#[test]
fn text_matches_envoy() {
    let store = envoy_store();
    assert_same_lines(&store.render_text(None, false), TEXT);
}

#[test]
fn text_used_only_matches_envoy() {
    let store = envoy_store();
    assert_same_lines(&store.render_text(None, true), TEXT_USED);
}

#[test]
fn text_filter_matches_envoy() {
    let store = envoy_store();
    let re = regex::Regex::new("upstream_rq_(2|5)").unwrap();
    assert_same_lines(&store.render_text(Some(&re), false), TEXT_FILTER);
}

#[test]
fn json_matches_envoy() {
    let store = envoy_store();
    let check = |ours: serde_json::Value, envoy: &str| {
        // One entry per line for readable failures, then the exact bytes.
        let ours_s = serde_json::to_string(&ours).unwrap();
        let split = |s: &str| s.replace("},{", "},\n{");
        assert_same_lines(&split(&ours_s), &split(envoy.trim_end()));
        let expected: serde_json::Value = serde_json::from_str(envoy).unwrap();
        let reparsed: serde_json::Value = serde_json::from_str(&ours_s).unwrap();
        assert!(reparsed == expected);
    };
    check(store.render_json(None, false), JSON);
    check(store.render_json(None, true), JSON_USED);
    let re = regex::Regex::new("rq_time").unwrap();
    check(store.render_json(Some(&re), false), JSON_FILTER);
}

#[test]
fn prometheus_matches_envoy() {
    let store = envoy_store();
    assert_same_lines(&store.render_prometheus(), PROM);
}

#[test]
fn prometheus_tags() {
    let store = Store::new();
    store.counter("cluster.payments.v1.upstream_rq_200").add(3);
    store.counter("cluster.svc.upstream_rq_total").inc();
    store.counter("http.ingress_http.downstream_rq_5xx").inc();
    store
        .counter("listener.10.0.0.1_8080.downstream_cx_total")
        .add(2);
    store
        .gauge("cluster.svc.circuit_breakers.high.rq_open")
        .set(1);
    store.gauge("server.live").set(1);
    let h = store.histogram("cluster.svc.upstream_rq_time");
    h.record(1);
    h.record(30);
    store.flush_histograms();
    let prom = store.render_prometheus();
    let expected = "\
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"svc\"} 1
# TYPE envoy_cluster_v1_upstream_rq counter
envoy_cluster_v1_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"payments\"} 3
# TYPE envoy_http_downstream_rq_xx counter
envoy_http_downstream_rq_xx{envoy_response_code_class=\"5\",envoy_http_conn_manager_prefix=\"ingress_http\"} 1
# TYPE envoy_listener_downstream_cx_total counter
envoy_listener_downstream_cx_total{envoy_listener_address=\"10.0.0.1_8080\"} 2
# TYPE envoy_cluster_circuit_breakers_high_rq_open gauge
envoy_cluster_circuit_breakers_high_rq_open{envoy_cluster_name=\"svc\"} 1
# TYPE envoy_server_live gauge
envoy_server_live{} 1
# TYPE envoy_cluster_upstream_rq_time histogram
";
    assert!(prom.starts_with(expected), "{prom}");
    assert!(prom.contains(
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"svc\",le=\"1\"} 1\n"
    ));
    assert!(prom.contains(
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"svc\",le=\"25\"} 1\n"
    ));
    assert!(prom.contains(
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"svc\",le=\"50\"} 2\n"
    ));
    assert!(prom.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"svc\"} 2\n"));

    // Opt-in: dotted cluster names tagged whole.
    store.set_dotted_cluster_names(["payments.v1", "svc"]);
    let prom = store.render_prometheus();
    assert!(prom.contains(
        "# TYPE envoy_cluster_upstream_rq counter\n\
         envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"payments.v1\"} 3\n"
    ));
    assert!(!prom.contains("envoy_cluster_v1_"));
}

#[test]
fn filter_and_used_only() {
    let store = Store::new();
    store.counter("a.untouched");
    store.counter("a.zero_add").add(0);
    store.counter("b.counted").add(5);
    store.gauge("a.gauge_set_zero").set(0);
    store.gauge("a.gauge_untouched");
    store.histogram("a.hist_unused");
    store.histogram("b.hist").record(3);
    assert_eq!(
        store.render_text(None, false),
        "a.gauge_set_zero: 0\na.gauge_untouched: 0\na.untouched: 0\na.zero_add: 0\n\
         b.counted: 5\na.hist_unused: No recorded values\n\
         b.hist: P0(nan,nan) P25(nan,nan) P50(nan,nan) P75(nan,nan) P90(nan,nan) \
         P95(nan,nan) P99(nan,nan) P99.5(nan,nan) P99.9(nan,nan) P100(nan,nan)\n"
    );
    store.flush_histograms();
    assert_eq!(
        store.render_text(None, true),
        "a.gauge_set_zero: 0\na.zero_add: 0\nb.counted: 5\n\
         b.hist: P0(3.05,3.05) P25(3.05,3.05) P50(3.05,3.05) P75(3.05,3.05) P90(3.05,3.05) \
         P95(3.05,3.05) P99(3.05,3.05) P99.5(3.05,3.05) P99.9(3.05,3.05) P100(3.05,3.05)\n"
    );
    let re = regex::Regex::new("^b\\.").unwrap();
    assert_eq!(
        store.render_json(Some(&re), true)["stats"][0],
        serde_json::json!({"name": "b.counted", "value": 5})
    );
    let re = regex::Regex::new("nothing").unwrap();
    assert_eq!(store.render_text(Some(&re), false), "");
    assert_eq!(
        store.render_json(Some(&re), false),
        serde_json::json!({"stats": []})
    );
}

#[test]
fn handles_share_cells_and_prefix_removal() {
    let store = Store::new();
    let a = store.counter("cluster.x.upstream_rq_total");
    let b = store.counter("cluster.x.upstream_rq_total");
    a.inc();
    b.add(2);
    assert_eq!(store.counter("cluster.x.upstream_rq_total").value(), 3);
    let g = store.gauge("cluster.x.upstream_rq_active");
    g.inc();
    g.inc();
    g.dec();
    g.add(5);
    g.sub(2);
    assert_eq!(g.value(), 4);
    store.counter("cluster.y.upstream_rq_total").inc();
    store.remove_prefix("cluster.x.");
    assert_eq!(
        store.render_text(None, false),
        "cluster.y.upstream_rq_total: 1\n"
    );
    a.inc(); // still usable
    assert_eq!(a.value(), 4);
}

#[test]
fn concurrent_increments_are_exact() {
    let store = Store::new();
    let threads = 8;
    let per_thread = 100_000u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let c = store.counter("cluster.svc.upstream_rq_total");
                let g = store.gauge("cluster.svc.upstream_rq_active");
                let h = store.histogram("cluster.svc.upstream_rq_time");
                for i in 0..per_thread {
                    c.inc();
                    g.inc();
                    h.record(i % 1000 + t);
                    g.dec();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        store.counter("cluster.svc.upstream_rq_total").value(),
        threads * per_thread
    );
    assert_eq!(store.gauge("cluster.svc.upstream_rq_active").value(), 0);
    assert_eq!(
        store
            .histogram("cluster.svc.upstream_rq_time")
            .sample_count(),
        threads * per_thread
    );
}

#[test]
fn listener_address_names() {
    assert_eq!(
        listener_address_stat_name(&"127.0.0.1:10000".parse().unwrap()),
        "127.0.0.1_10000"
    );
    assert_eq!(
        listener_address_stat_name(&"[::1]:18093".parse().unwrap()),
        "[__1]_18093"
    );
}

#[tokio::test]
async fn flush_task_flushes() {
    let store = Store::new();
    store.histogram("h").record(7);
    let task = store.spawn_flush_task(Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(store.render_text(None, false).contains("P0(nan,7.05)"));
    task.abort();
}
