//! Load-balancing algorithms.
