//! Zero-copy views over frames (after smoltcp's `wire`).
