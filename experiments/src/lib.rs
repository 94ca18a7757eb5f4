//! Workloads and experiment reports for ringkv.
