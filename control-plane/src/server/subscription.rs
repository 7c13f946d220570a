//! What a client subscribes to, per type: a wildcard and/or explicit names.

use legate_proto::type_url::is_wildcard_capable;
use std::collections::BTreeSet;

/// One type's subscription on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Subscribed to every resource of the type.
    pub wildcard: bool,
    /// The wildcard came from an empty first request (legacy form), so later empty requests
    /// keep it; an explicit `*` is the other form.
    legacy_wildcard: bool,
    /// Explicitly named resources.
    pub names: BTreeSet<String>,
}

impl Subscription {
    /// The subscription a SotW request asks for. `previous` is `None` on the first request of
    /// the type: only then (or while a legacy wildcard lasts) does an empty list mean "all".
    pub fn sotw(type_url: &str, names: &[String], previous: Option<&Subscription>) -> Self {
        let star = names.iter().any(|n| n == "*");
        let named: BTreeSet<String> = names.iter().filter(|n| *n != "*").cloned().collect();
        let legacy = names.is_empty()
            && is_wildcard_capable(type_url)
            && previous.is_none_or(|p| p.legacy_wildcard);
        Subscription {
            wildcard: star || legacy,
            legacy_wildcard: legacy,
            names: named,
        }
    }

    /// The subscription a first delta request asks for.
    pub fn delta_initial(type_url: &str, subscribe: &[String]) -> Self {
        let mut s = Subscription::default();
        if subscribe.is_empty() && is_wildcard_capable(type_url) {
            s.wildcard = true;
            s.legacy_wildcard = true;
        }
        s.apply_delta(subscribe, &[]);
        s
    }

    /// Applies a delta request's subscribe and unsubscribe lists.
    pub fn apply_delta(&mut self, subscribe: &[String], unsubscribe: &[String]) {
        for n in subscribe {
            if n == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(n.clone());
            }
        }
        for n in unsubscribe {
            if n == "*" {
                self.wildcard = false;
                self.legacy_wildcard = false;
            } else {
                self.names.remove(n);
            }
        }
    }

    /// True when `self` names something `before` did not (so the client must get it again).
    pub fn adds_to(&self, before: &Subscription) -> bool {
        (self.wildcard && !before.wildcard) || self.names.iter().any(|n| !before.names.contains(n))
    }

    /// True when `name` is covered by this subscription.
    pub fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// For display: `*` then the names.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.wildcard {
            out.push("*".into());
        }
        out.extend(self.names.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_proto::type_url::{CLUSTER, ENDPOINT};

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_first_request_is_wildcard_only_for_lds_cds() {
        assert!(Subscription::sotw(CLUSTER, &[], None).wildcard);
        assert!(!Subscription::sotw(ENDPOINT, &[], None).wildcard);
    }

    #[test]
    fn empty_list_after_names_means_none() {
        let first = Subscription::sotw(CLUSTER, &v(&["a"]), None);
        assert!(!first.wildcard);
        let next = Subscription::sotw(CLUSTER, &[], Some(&first));
        assert!(!next.wildcard);
        assert!(next.names.is_empty());
    }

    #[test]
    fn legacy_wildcard_persists_and_star_is_explicit() {
        let first = Subscription::sotw(CLUSTER, &[], None);
        assert!(Subscription::sotw(CLUSTER, &[], Some(&first)).wildcard);
        let star = Subscription::sotw(CLUSTER, &v(&["*", "x"]), None);
        assert!(star.wildcard && star.names.contains("x"));
    }

    #[test]
    fn delta_subscribe_unsubscribe() {
        let mut s = Subscription::delta_initial(ENDPOINT, &v(&["a", "b"]));
        assert!(!s.wildcard);
        s.apply_delta(&v(&["c"]), &v(&["a"]));
        assert_eq!(s.describe(), v(&["b", "c"]));
        let mut w = Subscription::delta_initial(CLUSTER, &[]);
        assert!(w.wildcard);
        w.apply_delta(&[], &v(&["*"]));
        assert!(!w.wildcard);
    }

    #[test]
    fn adds_to_detects_new_names() {
        let a = Subscription::sotw(ENDPOINT, &v(&["a"]), None);
        let ab = Subscription::sotw(ENDPOINT, &v(&["a", "b"]), Some(&a));
        assert!(ab.adds_to(&a));
        assert!(!a.adds_to(&ab));
    }
}
