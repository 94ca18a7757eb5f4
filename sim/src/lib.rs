//! Deterministic simulator and consistency checker for ringkv.
