//! The admin renderings of a [`Store`], in Envoy 1.40's exact formats.

use super::histogram::{self, DEFAULT_BUCKETS};
use super::tags::{Tag, sanitize_name, sanitize_value};
use super::{Histogram, Store, tag_extractor};
use regex::Regex;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Labels of the quantiles in `/stats`.
const QUANTILE_LABELS: [&str; 10] = [
    "P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5", "P99.9", "P100",
];

/// `le` labels of [`DEFAULT_BUCKETS`] in `/stats/prometheus`.
const BUCKET_LABELS: [&str; 19] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000",
];

fn passes(name: &str, filter: Option<&Regex>) -> bool {
    filter.is_none_or(|f| f.is_match(name))
}

/// Counters and gauges (together, as Envoy lists them) passing the filters, sorted by name.
fn scalars(store: &Store, filter: Option<&Regex>, used_only: bool) -> Vec<(String, u64)> {
    let mut rows = Vec::with_capacity(store.inner.counters.len() + store.inner.gauges.len());
    for e in store.inner.counters.iter() {
        if passes(e.key(), filter) && (!used_only || e.value().used()) {
            rows.push((e.key().to_string(), e.value().value()));
        }
    }
    for e in store.inner.gauges.iter() {
        if passes(e.key(), filter) && (!used_only || e.value().used()) {
            rows.push((e.key().to_string(), e.value().value()));
        }
    }
    rows.sort_unstable();
    rows
}

fn histograms(store: &Store, filter: Option<&Regex>, used_only: bool) -> Vec<(String, Histogram)> {
    let mut rows: Vec<(String, Histogram)> = store
        .inner
        .histograms
        .iter()
        .filter(|e| passes(e.key(), filter) && (!used_only || e.value().used()))
        .map(|e| (e.key().to_string(), e.value().clone()))
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    rows
}

pub(super) fn text(store: &Store, filter: Option<&Regex>, used_only: bool) -> String {
    let mut out = String::new();
    for (name, value) in scalars(store, filter, used_only) {
        let _ = writeln!(out, "{name}: {value}");
    }
    for (name, h) in histograms(store, filter, used_only) {
        out.push_str(&name);
        out.push_str(": ");
        if h.used() {
            let snap = h.0.snapshot();
            let interval = histogram::quantiles(&snap.interval);
            let cumulative = histogram::quantiles(&snap.cumulative);
            for (i, label) in QUANTILE_LABELS.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(
                    out,
                    "{label}({},{})",
                    fmt_shortest(interval[i]),
                    fmt_shortest(cumulative[i])
                );
            }
        } else {
            out.push_str("No recorded values");
        }
        out.push('\n');
    }
    out
}

/// A JSON number as Envoy writes it: integral values without a fraction, NaN as `null`.
fn json_number(v: f64) -> Value {
    if v.is_nan() {
        Value::Null
    } else if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

pub(super) fn json(store: &Store, filter: Option<&Regex>, used_only: bool) -> Value {
    let mut stats: Vec<Value> = scalars(store, filter, used_only)
        .into_iter()
        .map(|(name, value)| {
            let mut m = Map::new();
            m.insert("name".into(), Value::String(name));
            m.insert("value".into(), json!(value));
            Value::Object(m)
        })
        .collect();
    let hists = histograms(store, filter, used_only);
    if !hists.is_empty() {
        let computed: Vec<Value> = hists
            .into_iter()
            .map(|(name, h)| {
                let (interval, cumulative) = if h.used() {
                    let snap = h.0.snapshot();
                    (
                        histogram::quantiles(&snap.interval),
                        histogram::quantiles(&snap.cumulative),
                    )
                } else {
                    ([f64::NAN; 10], [f64::NAN; 10])
                };
                let values: Vec<Value> = (0..10)
                    .map(|i| {
                        let mut m = Map::new();
                        m.insert("cumulative".into(), json_number(cumulative[i]));
                        m.insert("interval".into(), json_number(interval[i]));
                        Value::Object(m)
                    })
                    .collect();
                let mut m = Map::new();
                m.insert("name".into(), Value::String(name));
                m.insert("values".into(), Value::Array(values));
                Value::Object(m)
            })
            .collect();
        let mut h = Map::new();
        h.insert(
            "supported_quantiles".into(),
            json!([0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]),
        );
        h.insert("computed_quantiles".into(), Value::Array(computed));
        let mut wrapper = Map::new();
        wrapper.insert("histograms".into(), Value::Object(h));
        stats.push(Value::Object(wrapper));
    }
    let mut root = Map::new();
    root.insert("stats".into(), Value::Array(stats));
    Value::Object(root)
}

/// Envoy orders the members of a Prometheus family by stat name compared token by token
/// (its symbol table order), which differs from plain string order when a token is a prefix
/// of another (`svc` < `svc-b`).
fn token_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('.').cmp(b.split('.'))
}

struct Member<T> {
    name: String,
    tags: Vec<Tag>,
    value: T,
}

type Families<T> = BTreeMap<String, Vec<Member<T>>>;

fn group<T>(rows: impl Iterator<Item = (String, T)>, dotted: &[String]) -> Families<T> {
    let extractor = tag_extractor();
    let mut families: Families<T> = BTreeMap::new();
    for (name, value) in rows {
        let (extracted, tags) = extractor.extract(&name, dotted);
        families
            .entry(extracted)
            .or_default()
            .push(Member { name, tags, value });
    }
    for members in families.values_mut() {
        members.sort_by(|a, b| token_order(&a.name, &b.name));
    }
    families
}

fn write_labels(out: &mut String, tags: &[Tag], extra: Option<(&str, &str)>) {
    out.push('{');
    let mut first = true;
    for (k, v) in tags {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&sanitize_name(k));
        out.push_str("=\"");
        sanitize_value(v, out);
        out.push('"');
    }
    if let Some((k, v)) = extra {
        if !first {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

fn write_scalar_families(out: &mut String, families: Families<u64>, kind: &str) {
    for (extracted, members) in families {
        let metric = format!("envoy_{}", sanitize_name(&extracted));
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for m in members {
            out.push_str(&metric);
            write_labels(out, &m.tags, None);
            let _ = writeln!(out, " {}", m.value);
        }
    }
}

pub(super) fn prometheus(store: &Store, filter: Option<&Regex>, used_only: bool) -> String {
    let dotted = store
        .inner
        .dotted_clusters
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let counters = group(
        store
            .inner
            .counters
            .iter()
            .filter(|e| passes(e.key(), filter) && (!used_only || e.value().used()))
            .map(|e| (e.key().to_string(), e.value().value())),
        &dotted,
    );
    let gauges = group(
        store
            .inner
            .gauges
            .iter()
            .filter(|e| passes(e.key(), filter) && (!used_only || e.value().used()))
            .map(|e| (e.key().to_string(), e.value().value())),
        &dotted,
    );
    let hists = group(histograms(store, filter, used_only).into_iter(), &dotted);

    let mut out = String::new();
    write_scalar_families(&mut out, counters, "counter");
    write_scalar_families(&mut out, gauges, "gauge");
    for (extracted, members) in hists {
        let metric = format!("envoy_{}", sanitize_name(&extracted));
        let _ = writeln!(out, "# TYPE {metric} histogram");
        for m in members {
            let cumulative = m.value.0.snapshot().cumulative;
            let buckets = histogram::bucket_counts(&cumulative);
            let total = histogram::count(&cumulative);
            for (label, count) in BUCKET_LABELS.iter().zip(buckets) {
                let _ = write!(out, "{metric}_bucket");
                write_labels(&mut out, &m.tags, Some(("le", label)));
                let _ = writeln!(out, " {count}");
            }
            let _ = write!(out, "{metric}_bucket");
            write_labels(&mut out, &m.tags, Some(("le", "+Inf")));
            let _ = writeln!(out, " {total}");
            let _ = write!(out, "{metric}_sum");
            write_labels(&mut out, &m.tags, None);
            let _ = writeln!(out, " {}", fmt_g(histogram::approx_sum(&cumulative), 32));
            let _ = write!(out, "{metric}_count");
            write_labels(&mut out, &m.tags, None);
            let _ = writeln!(out, " {total}");
        }
    }
    debug_assert_eq!(DEFAULT_BUCKETS.len(), BUCKET_LABELS.len());
    out
}

/// A double as `fmt::format("{}", v)` (Envoy's `/stats` quantiles): shortest round-trip digits,
/// exponent notation outside `[1e-4, 1e16)`, `nan` for NaN.
pub(super) fn fmt_shortest(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{v:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{mant}e{}", exp_suffix(exp));
    }
    format!("{v}")
}

/// `e+16` / `e-05` style exponent (at least two digits, explicit sign).
fn exp_suffix(exp: &str) -> String {
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    if digits.len() < 2 {
        format!("{sign}0{digits}")
    } else {
        format!("{sign}{digits}")
    }
}

fn trim_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A double as C's `%.{prec}g` (Envoy writes Prometheus `_sum` values with `%.32g`).
pub(super) fn fmt_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let x: i32 = exp.parse().unwrap_or(0);
    if x < -4 || x >= prec as i32 {
        format!("{}e{}", trim_fraction_zeros(mant), exp_suffix(exp))
    } else {
        let fixed = format!("{:.*}", (prec as i32 - 1 - x) as usize, v);
        trim_fraction_zeros(&fixed).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(fmt_shortest(0.0), "0");
        assert_eq!(fmt_shortest(1.0), "1");
        assert_eq!(fmt_shortest(1.0666666666666667), "1.0666666666666667");
        assert_eq!(fmt_shortest(f64::NAN), "nan");
        assert_eq!(fmt_shortest(2650.0), "2650");
        assert_eq!(fmt_shortest(1e16), "1e+16");
        assert_eq!(fmt_shortest(1.5e-5), "1.5e-05");
        assert_eq!(fmt_g(0.0, 32), "0");
        assert_eq!(
            fmt_g(4.049382716049383, 32),
            "4.0493827160493829353526962222531"
        );
        assert_eq!(fmt_g(25.0, 32), "25");
        assert_eq!(fmt_g(1.8e6, 6), "1.8e+06");
        assert_eq!(fmt_g(1e-5, 6), "1e-05");
        assert_eq!(fmt_g(0.5, 32), "0.5");
    }

    #[test]
    fn token_ordering() {
        use std::cmp::Ordering::Less;
        assert_eq!(token_order("cluster.svc.x", "cluster.svc-b.x"), Less);
        assert_eq!("cluster.svc-b.x".cmp("cluster.svc.x"), Less);
    }
}
