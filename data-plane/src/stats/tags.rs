//! Envoy's default tag extraction (`source/common/config/well_known_names.cc`), used by the
//! Prometheus rendering to turn `cluster.foo.upstream_rq_200` into
//! `envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="foo"}`.
//!
//! Envoy runs every applicable extractor against the *full* name; each match yields a tag
//! (name, value) and a span of characters to delete; the tag-extracted name is the name with
//! all those spans deleted. Extractors whose pattern has no fixed first token run first, then
//! those keyed by the name's first token, each group in definition order (regex descriptors
//! before tokenized ones); the tags are listed in that order. The order is visible in the
//! Prometheus labels and is checked against Envoy's output in the tests.
//!
//! Only extractors relevant to what an HTTP proxy emits, plus a few common filter ones, are
//! included (no Dynamo, Mongo, Thrift, Redis, RBAC, proxy-protocol, TLS-certificate).
//!
//! # Cluster names containing dots
//!
//! Envoy's cluster-name extractor is the token pattern `cluster.$.**`: the tag is the *first*
//! dot-separated token. A cluster named `payments.v1` therefore becomes (verified on Envoy 1.40)
//! `envoy_cluster_v1_upstream_rq_total{envoy_cluster_name="payments"}`. The default rendering
//! reproduces that exactly. [`super::Store::set_dotted_cluster_names`] opts into a saner
//! mapping: for a registered name, the whole name is the tag
//! (`envoy_cluster_upstream_rq_total{envoy_cluster_name="payments.v1"}`).

use regex::Regex;
use std::collections::HashMap;

/// One extracted tag: (tag name such as `envoy.cluster_name`, value).
pub(crate) type Tag = (&'static str, String);

enum Matcher {
    /// Group 1 is removed from the name; group 2 (or 1) is the value.
    Regex {
        re: Regex,
        /// Must occur in the name for the regex to be tried (Envoy's `substr` hint).
        substr: &'static str,
        /// A value that does not count as a match (`admin` for listener addresses).
        negative: Option<&'static str>,
    },
    /// Dot-separated tokens: `$` is the value, `*` any one token, `**` any number of tokens.
    Tokens(Vec<&'static str>),
}

struct Extractor {
    tag: &'static str,
    matcher: Matcher,
}

/// The compiled default extractors.
pub(crate) struct TagExtractor {
    extractors: Vec<Extractor>,
    without_prefix: Vec<usize>,
    by_prefix: HashMap<String, Vec<usize>>,
}

const TAG_VALUE: &str = r"[^\.]+";
const ADDRESS: &str = r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)";
const CIPHER: &str = r"[\w-]+";
const TLS_VERSION: &str = r"TLSv\d\.\d";
const ROUTE_CONFIG_NAME: &str = r"[\w\-\./]+";
const SCOPED_ROUTE_CONFIG_NAME: &str = r"[\w\-\.]+";
const LISTENER_OR_CLUSTER_WITH_NAME: &str = r"(?:listener|cluster)\..*?";

fn expand(re: &str) -> String {
    re.replace("<ADDRESS>", ADDRESS)
        .replace("<CIPHER>", CIPHER)
        .replace("<TLS_VERSION>", TLS_VERSION)
        .replace("<TAG_VALUE>", TAG_VALUE)
        .replace("<ROUTE_CONFIG_NAME>", ROUTE_CONFIG_NAME)
        .replace("<SCOPED_ROUTE_CONFIG_NAME>", SCOPED_ROUTE_CONFIG_NAME)
        .replace(
            "<LISTENER_OR_CLUSTER_WITH_NAME>",
            LISTENER_OR_CLUSTER_WITH_NAME,
        )
}

/// Envoy's `extractRegexPrefix`: `^word\.` (or `^word(?=\.)`) gives `word`.
fn regex_prefix(re: &str) -> Option<String> {
    let rest = re.strip_prefix('^')?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    let tail = &rest[end..];
    if tail.is_empty() || tail.starts_with(r"\.") || tail.starts_with(r"(?=\.)") {
        Some(rest[..end].to_string())
    } else {
        None
    }
}

/// Name of the cluster-name tag.
pub(crate) const CLUSTER_NAME: &str = "envoy.cluster_name";

impl TagExtractor {
    pub(crate) fn new() -> Self {
        // (tag, regex, substr, negative) — descriptor order of well_known_names.cc.
        let regexes: &[(&'static str, &str, &'static str, Option<&'static str>)] = &[
            ("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_", None),
            ("envoy.response_code_class", r"_rq_((\d))xx$", "_rq_", None),
            (
                "envoy.ssl_cipher",
                r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$",
                ".ssl.ciphers.",
                None,
            ),
            (
                "envoy.ssl_curve",
                r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$",
                ".ssl.curves.",
                None,
            ),
            (
                "envoy.ssl_sigalg",
                r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$",
                ".ssl.sigalgs.",
                None,
            ),
            (
                "envoy.ssl_version",
                r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$",
                ".ssl.versions.",
                None,
            ),
            (
                "cipher_suite",
                r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$",
                ".ssl.ciphers.",
                None,
            ),
            (
                "envoy.http_conn_manager_prefix",
                r"^listener\..*?\.http\.((<TAG_VALUE>)\.)",
                ".http.",
                None,
            ),
            (
                "envoy.worker_id",
                r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager|thread_local_cluster_manager)\.worker_((\d+)\.)",
                "",
                None,
            ),
            (
                "envoy.listener_address",
                r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)",
                "",
                Some("admin"),
            ),
            (
                "envoy.rds_route_config",
                r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$",
                ".rds.",
                None,
            ),
            (
                "envoy.scoped_rds_config",
                r"^http\.<TAG_VALUE>\.scoped_rds\.((<SCOPED_ROUTE_CONFIG_NAME>)\.)\w+?$",
                ".scoped_rds.",
                None,
            ),
        ];
        let tokens: &[(&'static str, &'static str)] = &[
            ("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
            ("envoy.http_user_agent", "http.*.user_agent.$.**"),
            ("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
            ("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
            ("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
            ("envoy.tcp_prefix", "tcp.$.**"),
            ("envoy.udp_prefix", "udp.$.**"),
            ("envoy.clientssl_prefix", "auth.clientssl.$.**"),
            ("envoy.ratelimit_prefix", "ratelimit.$.**"),
            (CLUSTER_NAME, "cluster.$.**"),
            ("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
            ("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
            ("envoy.http_conn_manager_prefix", "http.$.**"),
            ("envoy.virtual_host", "vhost.$.**"),
            ("envoy.route", "vhost.*.route.$.**"),
            (
                "envoy.local_http_ratelimit_prefix",
                "$.http_local_rate_limit.**",
            ),
            (
                "envoy.local_network_ratelimit_prefix",
                "local_rate_limit.$.**",
            ),
            (
                "envoy.local_listener_ratelimit_prefix",
                "listener_local_ratelimit.$.**",
            ),
            ("envoy.dns_filter_prefix", "dns_filter.$.**"),
            ("envoy.connection_limit_prefix", "connection_limit.$.**"),
            ("envoy.google_grpc_client_prefix", "grpc.$.**"),
        ];

        let mut extractors = Vec::new();
        let mut without_prefix = Vec::new();
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        let mut add = |prefix: Option<String>, ex: Extractor| {
            let idx = extractors.len();
            extractors.push(ex);
            match prefix {
                None => without_prefix.push(idx),
                Some(p) => by_prefix.entry(p).or_default().push(idx),
            }
        };
        for &(tag, re, substr, negative) in regexes {
            let expanded = expand(re);
            let prefix = regex_prefix(&expanded);
            let re = Regex::new(&expanded).expect("built-in tag regex compiles");
            add(
                prefix,
                Extractor {
                    tag,
                    matcher: Matcher::Regex {
                        re,
                        substr,
                        negative,
                    },
                },
            );
        }
        for &(tag, pattern) in tokens {
            let toks: Vec<&'static str> = pattern.split('.').collect();
            let prefix = match toks[0] {
                "$" | "*" | "**" => None,
                p => Some(p.to_string()),
            };
            add(
                prefix,
                Extractor {
                    tag,
                    matcher: Matcher::Tokens(toks),
                },
            );
        }
        TagExtractor {
            extractors,
            without_prefix,
            by_prefix,
        }
    }

    /// Returns the tag-extracted name and the tags of `name`. `dotted_clusters` lists cluster
    /// names containing dots that are to be taken whole (longest first).
    pub(crate) fn extract(&self, name: &str, dotted_clusters: &[String]) -> (String, Vec<Tag>) {
        let mut tags: Vec<Tag> = Vec::new();
        let mut remove: Vec<(usize, usize)> = Vec::new();
        let first = name.split('.').next().unwrap_or("");
        let prefixed = if name.contains('.') {
            self.by_prefix.get(first).map(Vec::as_slice).unwrap_or(&[])
        } else {
            &[]
        };
        for &idx in self.without_prefix.iter().chain(prefixed) {
            let ex = &self.extractors[idx];
            if ex.tag == CLUSTER_NAME
                && let Some(c) = dotted_clusters.iter().find(|c| {
                    name.strip_prefix("cluster.")
                        .and_then(|r| r.strip_prefix(c.as_str()))
                        .is_some_and(|r| r.starts_with('.'))
                })
            {
                tags.push((ex.tag, c.clone()));
                remove.push((8, 8 + c.len() + 1));
                continue;
            }
            match &ex.matcher {
                Matcher::Regex {
                    re,
                    substr,
                    negative,
                } => {
                    if !substr.is_empty() && !name.contains(substr) {
                        continue;
                    }
                    let Some(caps) = re.captures(name) else {
                        continue;
                    };
                    let Some(rm) = caps.get(1) else { continue };
                    let value = caps.get(2).unwrap_or(rm).as_str();
                    if negative.is_some_and(|n| n == value) {
                        continue;
                    }
                    tags.push((ex.tag, value.to_string()));
                    remove.push((rm.start(), rm.end()));
                }
                Matcher::Tokens(pattern) => {
                    if let Some((start, end)) = match_tokens(pattern, name) {
                        tags.push((ex.tag, name[start..end].to_string()));
                        // The token and one adjacent dot (the following one, or the
                        // preceding one for a last token).
                        if end < name.len() {
                            remove.push((start, end + 1));
                        } else {
                            remove.push((start.saturating_sub(1), end));
                        }
                    }
                }
            }
        }
        if remove.is_empty() {
            return (name.to_string(), tags);
        }
        let mut out = String::with_capacity(name.len());
        for (i, ch) in name.char_indices() {
            if !remove.iter().any(|&(s, e)| i >= s && i < e) {
                out.push(ch);
            }
        }
        (out, tags)
    }
}

/// Matches dot-separated `name` against a token pattern; returns the byte span of the `$` token.
fn match_tokens(pattern: &[&str], name: &str) -> Option<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for tok in name.split('.') {
        spans.push((start, start + tok.len()));
        start += tok.len() + 1;
    }
    let tokens: Vec<&str> = name.split('.').collect();
    let mut capture = None;
    if search(pattern, 0, &tokens, 0, &mut capture) {
        capture.map(|i| spans[i])
    } else {
        None
    }
}

fn search(
    pattern: &[&str],
    mut p: usize,
    tokens: &[&str],
    mut t: usize,
    capture: &mut Option<usize>,
) -> bool {
    while p < pattern.len() {
        match pattern[p] {
            "**" => {
                if p == pattern.len() - 1 {
                    return true;
                }
                for start in t..tokens.len() {
                    let mut c = *capture;
                    if search(pattern, p + 1, tokens, start, &mut c) {
                        *capture = c;
                        return true;
                    }
                }
                return false;
            }
            tok => {
                if t >= tokens.len() {
                    return false;
                }
                if tok == "$" {
                    *capture = Some(t);
                } else if tok != "*" && tok != tokens[t] {
                    return false;
                }
            }
        }
        p += 1;
        t += 1;
    }
    t == tokens.len()
}

/// Envoy's `PrometheusStatsFormatter::sanitizeName`: anything outside `[a-zA-Z0-9_]` becomes `_`.
pub(crate) fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Envoy's `sanitizeValue`: escapes `\`, `"` and newlines in label values.
pub(crate) fn sanitize_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(name: &str) -> (String, Vec<(&'static str, String)>) {
        TagExtractor::new().extract(name, &[])
    }

    #[test]
    fn prefixes() {
        assert_eq!(regex_prefix(r"^cluster\.x"), Some("cluster".into()));
        assert_eq!(regex_prefix(r"^(?:listener|cluster)\."), None);
        assert_eq!(regex_prefix(r"_rq(_(\d{3}))$"), None);
        assert_eq!(
            regex_prefix(r"^listener_manager\.((worker_\d+)\.)"),
            Some("listener_manager".into())
        );
    }

    #[test]
    fn cluster_and_codes() {
        assert_eq!(
            ex("cluster.svc.upstream_rq_503"),
            (
                "cluster.upstream_rq".into(),
                vec![
                    ("envoy.response_code", "503".into()),
                    (CLUSTER_NAME, "svc".into())
                ]
            )
        );
        assert_eq!(
            ex("cluster.payments.v1.upstream_rq_5xx"),
            (
                "cluster.v1.upstream_rq_xx".into(),
                vec![
                    ("envoy.response_code_class", "5".into()),
                    (CLUSTER_NAME, "payments".into())
                ]
            )
        );
        assert_eq!(
            ex("cluster.svc.circuit_breakers.default.rq_open"),
            (
                "cluster.circuit_breakers.default.rq_open".into(),
                vec![(CLUSTER_NAME, "svc".into())]
            )
        );
    }

    #[test]
    fn dotted_cluster_opt_in() {
        let t = TagExtractor::new();
        let dotted = vec!["payments.v1".to_string()];
        assert_eq!(
            t.extract("cluster.payments.v1.upstream_rq_200", &dotted),
            (
                "cluster.upstream_rq".into(),
                vec![
                    ("envoy.response_code", "200".into()),
                    (CLUSTER_NAME, "payments.v1".into())
                ]
            )
        );
        // Other clusters are unaffected.
        assert_eq!(
            t.extract("cluster.payments.upstream_rq_total", &dotted).1,
            vec![(CLUSTER_NAME, "payments".into())]
        );
    }

    #[test]
    fn listeners_and_http() {
        assert_eq!(
            ex("listener.127.0.0.1_18090.http.ingress_http.downstream_rq_2xx"),
            (
                "listener.http.downstream_rq_xx".into(),
                vec![
                    ("envoy.response_code_class", "2".into()),
                    ("envoy.http_conn_manager_prefix", "ingress_http".into()),
                    ("envoy.listener_address", "127.0.0.1_18090".into()),
                ]
            )
        );
        assert_eq!(
            ex("listener.[__1]_18093.worker_1.downstream_cx_total"),
            (
                "listener.worker_downstream_cx_total".into(),
                vec![
                    ("envoy.worker_id", "1".into()),
                    ("envoy.listener_address", "[__1]_18093".into()),
                ]
            )
        );
        assert_eq!(
            ex("listener.admin.downstream_cx_total"),
            ("listener.admin.downstream_cx_total".into(), vec![])
        );
        assert_eq!(
            ex("http.egress.v6.downstream_rq_time"),
            (
                "http.v6.downstream_rq_time".into(),
                vec![("envoy.http_conn_manager_prefix", "egress".into())]
            )
        );
        assert_eq!(
            ex("vhost.vh.vcluster.vc.upstream_rq_200"),
            (
                "vhost.vcluster.upstream_rq".into(),
                vec![
                    ("envoy.response_code", "200".into()),
                    ("envoy.virtual_cluster", "vc".into()),
                    ("envoy.virtual_host", "vh".into()),
                ]
            )
        );
        assert_eq!(ex("server.uptime"), ("server.uptime".into(), vec![]));
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize_name("cluster.a-b:c"), "cluster_a_b_c");
        let mut s = String::new();
        sanitize_value("a\"b\\c\nd", &mut s);
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
