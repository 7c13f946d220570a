//! Response-code counters under one prefix, as Envoy's `CodeStatsImpl::chargeBasicResponseStat`
//! keeps them: `<prefix>upstream_rq_completed`, `<prefix>upstream_rq_<class>xx` and
//! `<prefix>upstream_rq_<code>`; and `<prefix>upstream_rq_time` (`chargeResponseTiming`).
//!
//! A cluster has four such sets: `cluster.<c>.` for the attempt whose response goes downstream,
//! `cluster.<c>.external.` / `cluster.<c>.internal.` (the same response again, split by whether
//! the request was internal) and `cluster.<c>.retry.` for attempts that were retried.
//!
//! Counters Envoy creates lazily are created on first use here too (so `/stats` lists them only
//! once charged); charging is then a few relaxed atomic operations, no lock, no allocation.

use super::{Counter, Histogram, Store};
use std::sync::OnceLock;

/// The lowest status code with a counter of its own.
const FIRST_CODE: u16 = 100;
/// Number of per-code slots (100–599).
const CODES: usize = 500;

/// `upstream_rq_completed` / `upstream_rq_<class>xx` / `upstream_rq_<code>` under one prefix.
pub struct CodeStats {
    prefix: Box<str>,
    store: Store,
    completed: OnceLock<Counter>,
    classes: [OnceLock<Counter>; 5],
    /// Allocated on the first charge of a code (retry and internal sets are often unused).
    codes: OnceLock<Box<[OnceLock<Counter>]>>,
    rq_time: OnceLock<Histogram>,
}

impl CodeStats {
    /// Counters under `prefix` (e.g. `cluster.payments.retry.`), each created when first
    /// charged.
    pub fn lazy(store: &Store, prefix: &str) -> Self {
        CodeStats {
            prefix: prefix.into(),
            store: store.clone(),
            completed: OnceLock::new(),
            classes: Default::default(),
            codes: OnceLock::new(),
            rq_time: OnceLock::new(),
        }
    }

    /// Like [`CodeStats::lazy`], with `upstream_rq_completed` and the five class counters
    /// created now (listed in `/stats` at 0).
    pub fn eager(store: &Store, prefix: &str) -> Self {
        let stats = CodeStats::lazy(store, prefix);
        let _ = stats.completed();
        for class in 1..=5 {
            let _ = stats.class(class);
        }
        stats
    }

    /// `<prefix>upstream_rq_completed`.
    pub fn completed(&self) -> &Counter {
        self.completed.get_or_init(|| {
            self.store
                .counter(&format!("{}upstream_rq_completed", self.prefix))
        })
    }

    /// `<prefix>upstream_rq_time`, created when first recorded.
    pub fn rq_time(&self) -> &Histogram {
        self.rq_time.get_or_init(|| {
            self.store
                .histogram(&format!("{}upstream_rq_time", self.prefix))
        })
    }

    fn class(&self, class: usize) -> &Counter {
        self.classes[class - 1].get_or_init(|| {
            self.store
                .counter(&format!("{}upstream_rq_{class}xx", self.prefix))
        })
    }

    /// Charges one response with status `code`: `upstream_rq_completed`, and for codes
    /// 100–599 `upstream_rq_<class>xx` and `upstream_rq_<code>`.
    #[inline]
    pub fn charge(&self, code: u16) {
        self.completed().inc();
        let class = usize::from(code / 100);
        if !(1..=5).contains(&class) {
            return;
        }
        self.class(class).inc();
        let slots = self
            .codes
            .get_or_init(|| (0..CODES).map(|_| OnceLock::new()).collect());
        if let Some(slot) = slots.get(usize::from(code - FIRST_CODE)) {
            slot.get_or_init(|| {
                self.store
                    .counter(&format!("{}upstream_rq_{code}", self.prefix))
            })
            .inc();
        }
    }
}

impl std::fmt::Debug for CodeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeStats")
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_completed_class_and_code() {
        let store = Store::new();
        let retry = CodeStats::lazy(&store, "cluster.c.retry.");
        assert!(!store.render_text(None, false).contains("retry."));
        retry.charge(503);
        retry.charge(503);
        retry.charge(409);
        let text = store.render_text(None, false);
        for line in [
            "cluster.c.retry.upstream_rq_503: 2",
            "cluster.c.retry.upstream_rq_5xx: 2",
            "cluster.c.retry.upstream_rq_409: 1",
            "cluster.c.retry.upstream_rq_4xx: 1",
            "cluster.c.retry.upstream_rq_completed: 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("retry.upstream_rq_2xx"), "lazy classes");
    }

    #[test]
    fn eager_lists_completed_and_classes() {
        let store = Store::new();
        let main = CodeStats::eager(&store, "cluster.c.");
        let text = store.render_text(None, false);
        assert!(text.contains("cluster.c.upstream_rq_completed: 0"));
        assert!(text.contains("cluster.c.upstream_rq_2xx: 0"));
        main.charge(200);
        main.charge(99);
        let text = store.render_text(None, false);
        assert!(text.contains("cluster.c.upstream_rq_200: 1"));
        assert!(text.contains("cluster.c.upstream_rq_completed: 2"));
    }
}
