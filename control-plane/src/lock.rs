//! Lock helpers: a panic while holding a lock must not take every later caller down with it.

use std::sync::{Mutex, MutexGuard};

/// Locks, recovering the data if a previous holder panicked: our critical sections leave it consistent.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
