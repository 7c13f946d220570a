//! Envoy-named stats: counters, gauges, histograms, and their admin renderings.
