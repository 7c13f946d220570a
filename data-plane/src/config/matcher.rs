//! Matchers: Envoy regexes, header matchers and route path criteria — conversion from the
//! protos and evaluation against a request, with Envoy's semantics.

use super::error::{FieldError, Result, reject, unsupported};
use super::types::{HeaderMatchKind, HeaderMatcher, PathMatch, RouteMatcher};
use http::{HeaderMap, Method};
use legate_proto::pb::envoy::config::route::v3 as route_pb;
use legate_proto::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use regex::Regex;
use std::borrow::Cow;

/// Compiles an Envoy `RegexMatcher` (RE2 syntax) for a full match of the input.
pub(crate) fn regex(field: &str, m: &RegexMatcher) -> Result<Regex> {
    // `engine_type` (deprecated) can only say `google_re2`, which is what we implement.
    if m.regex.is_empty() {
        return Err(FieldError::new(
            format!("{field}.regex"),
            "must not be empty",
        ));
    }
    full_match(&m.regex).map_err(|e| {
        FieldError::new(
            format!("{field}.regex"),
            format!("invalid regex `{}`: {e}", m.regex),
        )
    })
}

/// `^(?:pattern)$`: Envoy's regex matchers match the whole input.
fn full_match(pattern: &str) -> std::result::Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// A regex source matching `literal` with ASCII case folding (absl's `EqualsIgnoreCase`).
fn ascii_case_insensitive(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() * 2);
    for c in literal.chars() {
        if c.is_ascii_alphabetic() {
            out.push('[');
            out.push(c.to_ascii_lowercase());
            out.push(c.to_ascii_uppercase());
            out.push(']');
        } else {
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
        }
    }
    out
}

/// Converts a `StringMatcher` (header value criterion).
///
/// `ignore_case` has no field in [`HeaderMatchKind`], so case-insensitive exact/prefix/suffix/
/// contains criteria become an equivalent full-match regex (ASCII folding, as Envoy does).
/// As in Envoy, `ignore_case` has no effect on `safe_regex`.
pub(crate) fn string_matcher(field: &str, m: &StringMatcher) -> Result<HeaderMatchKind> {
    use string_matcher::MatchPattern as P;
    let non_empty = |name: &str, s: &str| {
        if s.is_empty() {
            Err(FieldError::new(
                format!("{field}.{name}"),
                "must not be empty",
            ))
        } else {
            Ok(())
        }
    };
    let (pattern, any_before, any_after) = match &m.match_pattern {
        None => return Err(FieldError::new(field, "a match pattern is required")),
        Some(P::SafeRegex(r)) => {
            return Ok(HeaderMatchKind::Regex(regex(
                &format!("{field}.safe_regex"),
                r,
            )?));
        }
        Some(P::Custom(c)) => {
            return Err(FieldError::new(
                format!("{field}.custom"),
                format!("custom string matcher `{}` is not supported", c.name),
            ));
        }
        Some(P::Exact(s)) if !m.ignore_case => return Ok(HeaderMatchKind::Exact(s.clone())),
        Some(P::Exact(s)) => (s, false, false),
        Some(P::Prefix(s)) => {
            non_empty("prefix", s)?;
            if !m.ignore_case {
                return Ok(HeaderMatchKind::Prefix(s.clone()));
            }
            (s, false, true)
        }
        Some(P::Suffix(s)) => {
            non_empty("suffix", s)?;
            if !m.ignore_case {
                return Ok(HeaderMatchKind::Suffix(s.clone()));
            }
            (s, true, false)
        }
        Some(P::Contains(s)) => {
            non_empty("contains", s)?;
            if !m.ignore_case {
                return Ok(HeaderMatchKind::Contains(s.clone()));
            }
            (s, true, true)
        }
    };
    let any = "(?s:.*)";
    let source = format!(
        "{}{}{}",
        if any_before { any } else { "" },
        ascii_case_insensitive(pattern),
        if any_after { any } else { "" }
    );
    full_match(&source)
        .map(HeaderMatchKind::Regex)
        .map_err(|e| FieldError::new(field, format!("cannot build case-insensitive matcher: {e}")))
}

/// Converts a route `HeaderMatcher` (also used for `retriable_headers`).
pub(crate) fn header_matcher(field: &str, m: &route_pb::HeaderMatcher) -> Result<HeaderMatcher> {
    use route_pb::header_matcher::HeaderMatchSpecifier as S;
    if m.name.is_empty() {
        return Err(FieldError::new(
            format!("{field}.name"),
            "must not be empty",
        ));
    }
    if m.name.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(FieldError::new(
            format!("{field}.name"),
            "invalid header name",
        ));
    }
    reject(
        m.treat_missing_header_as_empty,
        &format!("{field}.treat_missing_header_as_empty"),
    )?;
    let non_empty = |name: &str, s: &str| {
        if s.is_empty() {
            Err(FieldError::new(
                format!("{field}.{name}"),
                "must not be empty",
            ))
        } else {
            Ok(())
        }
    };
    #[allow(deprecated)]
    let kind = match &m.header_match_specifier {
        // No criterion: "the header is present".
        None => HeaderMatchKind::Present(true),
        // Envoy: an empty legacy `exact_match` matches any value of a present header.
        Some(S::ExactMatch(s)) if s.is_empty() => HeaderMatchKind::Present(true),
        Some(S::ExactMatch(s)) => HeaderMatchKind::Exact(s.clone()),
        Some(S::SafeRegexMatch(r)) => {
            HeaderMatchKind::Regex(regex(&format!("{field}.safe_regex_match"), r)?)
        }
        Some(S::RangeMatch(r)) => HeaderMatchKind::Range(r.start, r.end),
        Some(S::PresentMatch(p)) => HeaderMatchKind::Present(*p),
        Some(S::PrefixMatch(s)) => {
            non_empty("prefix_match", s)?;
            HeaderMatchKind::Prefix(s.clone())
        }
        Some(S::SuffixMatch(s)) => {
            non_empty("suffix_match", s)?;
            HeaderMatchKind::Suffix(s.clone())
        }
        Some(S::ContainsMatch(s)) => {
            non_empty("contains_match", s)?;
            HeaderMatchKind::Contains(s.clone())
        }
        Some(S::StringMatch(sm)) => string_matcher(&format!("{field}.string_match"), sm)?,
    };
    Ok(HeaderMatcher {
        name: m.name.to_ascii_lowercase(),
        kind,
        invert: m.invert_match,
    })
}

impl HeaderMatchKind {
    /// Whether the value of a present header satisfies the criterion (before `invert_match`).
    pub fn matches_value(&self, value: &str) -> bool {
        match self {
            HeaderMatchKind::Present(p) => *p,
            HeaderMatchKind::Exact(s) => value == s,
            HeaderMatchKind::Prefix(s) => value.starts_with(s.as_str()),
            HeaderMatchKind::Suffix(s) => value.ends_with(s.as_str()),
            HeaderMatchKind::Contains(s) => value.contains(s.as_str()),
            HeaderMatchKind::Regex(r) => r.is_match(value),
            // absl::SimpleAtoi: optional surrounding whitespace and sign.
            HeaderMatchKind::Range(start, end) => value
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .parse::<i64>()
                .is_ok_and(|v| v >= *start && v < *end),
        }
    }
}

impl HeaderMatcher {
    /// Envoy's header matching, given the header's value (all values joined with `,`) or `None`
    /// when the header is absent.
    ///
    /// An absent header matches only `present_match: false` (or, inverted,
    /// `present_match: true`); every other criterion fails on an absent header, inverted or not.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match value {
            None => matches!(self.kind, HeaderMatchKind::Present(p) if p == self.invert),
            Some(v) => self.kind.matches_value(v) != self.invert,
        }
    }

    /// Matches against a header map (e.g. response headers for `retriable_headers`).
    pub fn matches_headers(&self, headers: &HeaderMap) -> bool {
        self.matches(joined(headers, &self.name).as_deref())
    }

    /// Matches against a request, where `:authority`, `:path`, `:method` and `:scheme` are
    /// pseudo-headers.
    pub fn matches_request(
        &self,
        authority: &str,
        path_and_query: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> bool {
        let value: Option<Cow<'_, str>> = match self.name.as_str() {
            ":authority" => Some(Cow::Borrowed(authority)),
            ":path" => Some(Cow::Borrowed(path_and_query)),
            ":method" => Some(Cow::Borrowed(method.as_str())),
            // Plaintext only (TLS is not supported yet).
            ":scheme" => Some(Cow::Borrowed("http")),
            // Envoy keeps the HTTP/1 `Host` header as `:authority`: a `host` matcher sees nothing.
            "host" => None,
            name if name.starts_with(':') => None,
            name => joined(headers, name),
        };
        self.matches(value.as_deref())
    }
}

/// All values of a header joined with `,` (Envoy's `getAllOfHeaderAsString`), or `None`.
fn joined<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let s = out.to_mut();
        s.push(',');
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

/// The path without query string and fragment.
pub(crate) fn path_only(path_and_query: &str) -> &str {
    match path_and_query.find(['?', '#']) {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    }
}

/// `s` starts with `prefix`, optionally ignoring ASCII case.
fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    match s.as_bytes().get(..prefix.len()) {
        Some(head) if case_sensitive => head == prefix.as_bytes(),
        Some(head) => head.eq_ignore_ascii_case(prefix.as_bytes()),
        None => false,
    }
}

/// Converts a `RouteMatch`.
pub(crate) fn route_match(field: &str, m: &route_pb::RouteMatch) -> Result<RouteMatcher> {
    use route_pb::route_match::PathSpecifier as P;
    let f = |name: &str| format!("{field}.{name}");
    let path = match &m.path_specifier {
        None => {
            return Err(FieldError::new(
                field,
                "a path specifier is required (prefix, path, safe_regex or path_separated_prefix)",
            ));
        }
        Some(P::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(P::Path(p)) => PathMatch::Exact(p.clone()),
        Some(P::SafeRegex(r)) => PathMatch::Regex(regex(&f("safe_regex"), r)?),
        Some(P::PathSeparatedPrefix(p)) => {
            // Envoy's rule: `^[^?#]+[^?#/]$`.
            if p.len() < 2 || p.contains(['?', '#']) || p.ends_with('/') {
                return Err(FieldError::new(
                    f("path_separated_prefix"),
                    format!("`{p}` must not contain `?` or `#` nor end with `/`"),
                ));
            }
            PathMatch::SeparatedPrefix(p.clone())
        }
        Some(P::ConnectMatcher(_)) => return Err(unsupported(&f("connect_matcher"))),
        Some(P::PathMatchPolicy(_)) => return Err(unsupported(&f("path_match_policy"))),
    };
    reject(!m.query_parameters.is_empty(), &f("query_parameters"))?;
    reject(!m.cookies.is_empty(), &f("cookies"))?;
    reject(m.grpc.is_some(), &f("grpc"))?;
    reject(m.tls_context.is_some(), &f("tls_context"))?;
    reject(m.runtime_fraction.is_some(), &f("runtime_fraction"))?;
    reject(!m.dynamic_metadata.is_empty(), &f("dynamic_metadata"))?;
    reject(!m.filter_state.is_empty(), &f("filter_state"))?;
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_matcher(&format!("{field}.headers[{i}]"), h))
        .collect::<Result<Vec<_>>>()?;
    Ok(RouteMatcher {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers,
    })
}

impl RouteMatcher {
    /// Length of the part of `path_and_query` the path criterion matched (the configured
    /// prefix or path; for regexes the whole path without query), or `None` if it does not
    /// match. `prefix_rewrite` replaces exactly this part.
    pub fn matched_len(&self, path_and_query: &str) -> Option<usize> {
        let path = path_only(path_and_query);
        let cs = self.case_sensitive;
        match &self.path {
            PathMatch::Prefix(p) => starts_with(path, p, cs).then_some(p.len()),
            PathMatch::Exact(p) => {
                (path.len() == p.len() && starts_with(path, p, cs)).then_some(p.len())
            }
            PathMatch::Regex(r) => r.is_match(path).then_some(path.len()),
            PathMatch::SeparatedPrefix(p) => (starts_with(path, p, cs)
                && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            .then_some(p.len()),
        }
    }

    /// Whether the path criterion matches (query string excluded).
    pub fn matches_path(&self, path_and_query: &str) -> bool {
        self.matched_len(path_and_query).is_some()
    }

    /// Whether the request matches: path criterion and every header matcher.
    pub fn matches(
        &self,
        authority: &str,
        path_and_query: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> bool {
        self.matches_path(path_and_query)
            && self
                .headers
                .iter()
                .all(|h| h.matches_request(authority, path_and_query, method, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use legate_proto::pb::envoy::r#type::v3::Int64Range;
    use legate_proto::pb::google::protobuf::BoolValue;
    use route_pb::header_matcher::HeaderMatchSpecifier as S;

    fn hm(name: &str, spec: Option<S>, invert: bool) -> HeaderMatcher {
        header_matcher(
            "h",
            &route_pb::HeaderMatcher {
                name: name.into(),
                header_match_specifier: spec,
                invert_match: invert,
                ..Default::default()
            },
        )
        .expect("valid header matcher")
    }

    fn sm(p: string_matcher::MatchPattern, ignore_case: bool) -> Option<S> {
        Some(S::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ignore_case,
        }))
    }

    fn re(s: &str) -> RegexMatcher {
        RegexMatcher {
            regex: s.into(),
            engine_type: None,
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn string_match_kinds() {
        use string_matcher::MatchPattern as P;
        let v = Some("Hello-World");
        assert!(hm("x", sm(P::Exact("Hello-World".into()), false), false).matches(v));
        assert!(!hm("x", sm(P::Exact("hello-world".into()), false), false).matches(v));
        assert!(hm("x", sm(P::Exact("hello-world".into()), true), false).matches(v));
        assert!(hm("x", sm(P::Prefix("Hello".into()), false), false).matches(v));
        assert!(hm("x", sm(P::Prefix("hello".into()), true), false).matches(v));
        assert!(!hm("x", sm(P::Prefix("hello".into()), false), false).matches(v));
        assert!(hm("x", sm(P::Suffix("World".into()), false), false).matches(v));
        assert!(hm("x", sm(P::Suffix("WORLD".into()), true), false).matches(v));
        assert!(hm("x", sm(P::Contains("o-W".into()), false), false).matches(v));
        assert!(hm("x", sm(P::Contains("O-w".into()), true), false).matches(v));
        assert!(!hm("x", sm(P::Contains("O-w".into()), false), false).matches(v));
        // Regex metacharacters in a case-insensitive literal are escaped.
        assert!(hm("x", sm(P::Exact("a.b".into()), true), false).matches(Some("A.B")));
        assert!(!hm("x", sm(P::Exact("a.b".into()), true), false).matches(Some("AxB")));
        // Full match.
        assert!(hm("x", sm(P::SafeRegex(re(r"\d{3}")), false), false).matches(Some("123")));
        assert!(!hm("x", sm(P::SafeRegex(re(r"\d{3}")), false), false).matches(Some("1234")));
    }

    #[test]
    fn legacy_specifiers_and_range() {
        #[allow(deprecated)]
        let exact = hm("x", Some(S::ExactMatch("a".into())), false);
        assert!(exact.matches(Some("a")) && !exact.matches(Some("b")));
        #[allow(deprecated)]
        let empty_exact = hm("x", Some(S::ExactMatch(String::new())), false);
        assert!(empty_exact.matches(Some("anything")) && !empty_exact.matches(None));
        #[allow(deprecated)]
        let prefix = hm("x", Some(S::PrefixMatch("ab".into())), false);
        assert!(prefix.matches(Some("abc")));
        #[allow(deprecated)]
        let suffix = hm("x", Some(S::SuffixMatch("bc".into())), false);
        assert!(suffix.matches(Some("abc")));
        #[allow(deprecated)]
        let rx = hm("x", Some(S::SafeRegexMatch(re("a+"))), false);
        assert!(rx.matches(Some("aaa")) && !rx.matches(Some("aab")));
        let range = hm(
            "x",
            Some(S::RangeMatch(Int64Range { start: -10, end: 0 })),
            false,
        );
        assert!(range.matches(Some("-1")));
        assert!(range.matches(Some(" -10 ")));
        assert!(!range.matches(Some("0")));
        assert!(!range.matches(Some("abc")));
        let inverted = hm(
            "x",
            Some(S::RangeMatch(Int64Range { start: -10, end: 0 })),
            true,
        );
        assert!(!inverted.matches(Some("-1")));
        assert!(inverted.matches(Some("5")));
    }

    #[test]
    fn presence_and_invert_on_missing_header() {
        let present = hm("x", Some(S::PresentMatch(true)), false);
        assert!(present.matches(Some("")) && !present.matches(None));
        let absent = hm("x", Some(S::PresentMatch(false)), false);
        assert!(!absent.matches(Some("v")) && absent.matches(None));
        let not_present = hm("x", Some(S::PresentMatch(true)), true);
        assert!(not_present.matches(None) && !not_present.matches(Some("v")));
        let not_absent = hm("x", Some(S::PresentMatch(false)), true);
        assert!(!not_absent.matches(None) && not_absent.matches(Some("v")));
        // Envoy: any value criterion fails on a missing header, even inverted.
        let inv_exact = hm(
            "x",
            sm(string_matcher::MatchPattern::Exact("a".into()), false),
            true,
        );
        assert!(!inv_exact.matches(None));
        assert!(inv_exact.matches(Some("b")));
        assert!(!inv_exact.matches(Some("a")));
        // No specifier: presence.
        let bare = hm("X-Thing", None, false);
        assert_eq!(bare.name, "x-thing");
        assert!(bare.matches(Some("v")) && !bare.matches(None));
    }

    #[test]
    fn request_pseudo_headers_and_multiple_values() {
        let headers = map(&[("x-a", "1"), ("x-a", "2"), ("host", "h")]);
        let m = hm(
            "x-a",
            sm(string_matcher::MatchPattern::Exact("1,2".into()), false),
            false,
        );
        assert!(m.matches_request("h", "/", &Method::GET, &headers));
        assert!(m.matches_headers(&headers));
        let method = hm(
            ":method",
            sm(string_matcher::MatchPattern::Exact("POST".into()), false),
            false,
        );
        assert!(method.matches_request("h", "/", &Method::POST, &headers));
        assert!(!method.matches_request("h", "/", &Method::GET, &headers));
        let auth = hm(
            ":authority",
            sm(string_matcher::MatchPattern::Prefix("api.".into()), false),
            false,
        );
        assert!(auth.matches_request("api.example.com", "/", &Method::GET, &headers));
        let path = hm(
            ":path",
            sm(string_matcher::MatchPattern::Contains("q=1".into()), false),
            false,
        );
        assert!(path.matches_request("h", "/a?q=1", &Method::GET, &headers));
        let host = hm("host", None, false);
        assert!(!host.matches_request("h", "/", &Method::GET, &headers));
    }

    #[test]
    fn header_matcher_errors_name_the_field() {
        let err = header_matcher(
            "match.headers[2]",
            &route_pb::HeaderMatcher {
                name: "x".into(),
                header_match_specifier: sm(
                    string_matcher::MatchPattern::SafeRegex(re("(unclosed")),
                    false,
                ),
                ..Default::default()
            },
        )
        .expect_err("bad regex");
        assert_eq!(err.field, "match.headers[2].string_match.safe_regex.regex");
        let err = header_matcher(
            "h",
            &route_pb::HeaderMatcher {
                name: String::new(),
                ..Default::default()
            },
        )
        .expect_err("no name");
        assert_eq!(err.field, "h.name");
        let err = header_matcher(
            "h",
            &route_pb::HeaderMatcher {
                name: "x".into(),
                treat_missing_header_as_empty: true,
                ..Default::default()
            },
        )
        .expect_err("unsupported");
        assert_eq!(err.field, "h.treat_missing_header_as_empty");
        let err = header_matcher(
            "h",
            &route_pb::HeaderMatcher {
                name: "x".into(),
                header_match_specifier: sm(
                    string_matcher::MatchPattern::Prefix(String::new()),
                    false,
                ),
                ..Default::default()
            },
        )
        .expect_err("empty prefix");
        assert_eq!(err.field, "h.string_match.prefix");
    }

    fn rm(p: route_pb::route_match::PathSpecifier, case_sensitive: Option<bool>) -> RouteMatcher {
        route_match(
            "match",
            &route_pb::RouteMatch {
                path_specifier: Some(p),
                case_sensitive: case_sensitive.map(|value| BoolValue { value }),
                ..Default::default()
            },
        )
        .expect("valid match")
    }

    #[test]
    fn path_criteria() {
        use route_pb::route_match::PathSpecifier as P;
        let prefix = rm(P::Prefix("/api".into()), None);
        assert!(prefix.matches_path("/api"));
        assert!(prefix.matches_path("/apix/y"));
        assert!(!prefix.matches_path("/API"));
        assert!(!prefix.matches_path("/ap?i"));
        let ci = rm(P::Prefix("/api".into()), Some(false));
        assert!(ci.matches_path("/API/x"));
        let exact = rm(P::Path("/a".into()), None);
        assert!(exact.matches_path("/a?x=1"));
        assert!(!exact.matches_path("/a/"));
        let exact_ci = rm(P::Path("/a".into()), Some(false));
        assert!(exact_ci.matches_path("/A"));
        let sep = rm(P::PathSeparatedPrefix("/api/dev".into()), None);
        for ok in [
            "/api/dev",
            "/api/dev/",
            "/api/dev/v1",
            "/api/dev?param=true",
        ] {
            assert!(sep.matches_path(ok), "{ok}");
        }
        assert!(!sep.matches_path("/api/developer"));
        assert!(!sep.matches_path("/api/de"));
        let rx = rm(P::SafeRegex(re("/v[0-9]+/.*")), None);
        assert!(rx.matches_path("/v1/x?y"));
        assert!(!rx.matches_path("/x/v1/x"));
        // Empty prefix matches everything.
        assert!(rm(P::Prefix(String::new()), None).matches_path("/anything"));
    }

    #[test]
    fn route_match_errors() {
        use route_pb::route_match::PathSpecifier as P;
        let bad = |m: route_pb::RouteMatch| route_match("match", &m).expect_err("invalid");
        assert_eq!(
            bad(route_pb::RouteMatch::default()).field,
            "match",
            "missing path specifier"
        );
        assert_eq!(
            bad(route_pb::RouteMatch {
                path_specifier: Some(P::PathSeparatedPrefix("/a/".into())),
                ..Default::default()
            })
            .field,
            "match.path_separated_prefix"
        );
        assert_eq!(
            bad(route_pb::RouteMatch {
                path_specifier: Some(P::Prefix("/".into())),
                query_parameters: vec![Default::default()],
                ..Default::default()
            })
            .field,
            "match.query_parameters"
        );
        assert_eq!(
            bad(route_pb::RouteMatch {
                path_specifier: Some(P::Prefix("/".into())),
                grpc: Some(Default::default()),
                ..Default::default()
            })
            .field,
            "match.grpc"
        );
        assert_eq!(
            bad(route_pb::RouteMatch {
                path_specifier: Some(P::Prefix("/".into())),
                runtime_fraction: Some(Default::default()),
                ..Default::default()
            })
            .field,
            "match.runtime_fraction"
        );
        assert_eq!(
            bad(route_pb::RouteMatch {
                path_specifier: Some(P::Prefix("/".into())),
                tls_context: Some(Default::default()),
                ..Default::default()
            })
            .field,
            "match.tls_context"
        );
    }
}
