//! The ADS client (SotW and delta).
