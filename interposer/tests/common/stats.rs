//! Reading the counters of docs/counters.md (stub: being written).
