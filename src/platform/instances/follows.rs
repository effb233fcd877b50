//! Live log follows counted per user, so a flood of them stops at a bound.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Live log follows one user may have open at once: each holds a connection and a watch on the
/// runtime (on Kubernetes, a log stream per pod), so a flood of them must stop somewhere.
pub const MAX_FOLLOWS_PER_USER: usize = 8;

/// One open follow, counted against its user until the stream is dropped.
pub(super) struct FollowSlot {
    follows: Arc<Mutex<HashMap<i64, usize>>>,
    user: i64,
}

impl FollowSlot {
    /// A slot for `user`, or `None` when they have [`MAX_FOLLOWS_PER_USER`] already.
    pub(super) fn take(follows: &Arc<Mutex<HashMap<i64, usize>>>, user: i64) -> Option<FollowSlot> {
        let mut open = follows.lock();
        let count = open.entry(user).or_default();
        if *count >= MAX_FOLLOWS_PER_USER {
            return None;
        }
        *count += 1;
        Some(FollowSlot { follows: follows.clone(), user })
    }
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        let mut open = self.follows.lock();
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}
