//! A bounded number of concurrent streams (both ends of the DNS relay):
//! a guest that opens more has the excess closed at once, and neither end
//! runs out of threads or memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// At most `max` [`Slot`]s live at once.
#[derive(Debug, Clone)]
pub struct Slots {
    active: Arc<AtomicUsize>,
    max: usize,
}

/// One place, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub fn new(max: usize) -> Self {
        Slots {
            active: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place, or `None` when all are taken.
    pub fn take(&self) -> Option<Slot> {
        let max = self.max;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.active.clone()))
    }

    pub fn in_use(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_and_places_come_back() {
        let slots = Slots::new(32);
        let taken: Vec<Slot> = (0..32).map(|_| slots.take().unwrap()).collect();
        assert!(slots.take().is_none(), "one over the cap");
        drop(taken);
        assert_eq!(slots.in_use(), 0);
        assert!(slots.take().is_some());
    }
}
