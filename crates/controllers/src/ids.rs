//! Fresh identifiers for controllers. Ids are decided by the proposer (the
//! state machine must stay deterministic), so a controller draws them from
//! the seed its driver gives it. 128 bits from a random seed make a clash
//! between leaders negligible, and the state machine refuses one anyway.

use std::cell::Cell;

pub struct IdSource {
    state: Cell<u64>,
}

impl IdSource {
    pub fn new(seed: u64) -> Self {
        Self {
            state: Cell::new(seed),
        }
    }

    // splitmix64: a good, tiny generator for well-spread 64-bit values.
    fn next_u64(&self) -> u64 {
        let next = self.state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 32 hex digits, the shape of every task id.
    pub fn task_id(&self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }

    /// A number for placement sampling.
    pub fn seed(&self) -> u64 {
        self.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_repeatable_from_a_seed() {
        let a = IdSource::new(7);
        let ids: Vec<String> = (0..1000).map(|_| a.task_id()).collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id.len() == 32));
        let b = IdSource::new(7);
        assert_eq!(b.task_id(), ids[0]);
        assert_ne!(IdSource::new(8).task_id(), ids[0]);
    }
}
