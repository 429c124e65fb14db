//! End-to-end test support lives in the test files; this crate has no library code.
