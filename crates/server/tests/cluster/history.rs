//! Records client operations on the task definition registry and checks the
//! history for linearizability.
//!
//! The model: per family, a register holding the number of revisions
//! registered so far. `Register` moves it from n to n + 1 and answers n + 1;
//! `Latest` answers the current value (`None` for none). A register whose
//! answer was lost (an error) may have taken effect at any point after it
//! was called, or never. The checker is a Wing–Gong search with memoised
//! (linearized set, state) pairs, run per family (linearizability is
//! compositional over independent objects).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `Register` answered with this revision.
    Registered(u32),
    /// `Latest` answered with this revision.
    Latest(Option<u32>),
    /// A `Register` whose outcome is unknown (it failed).
    RegisterUnknown,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub family: String,
    /// Logical times from one clock: `call` before the request was made,
    /// `ret` after its answer arrived (`u64::MAX` when there was none).
    pub call: u64,
    pub ret: u64,
    pub outcome: Outcome,
    /// Which client made it, for messages.
    pub client: usize,
}

#[derive(Default)]
pub struct History {
    clock: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl History {
    /// The time of a call, to be taken just before it is made.
    pub fn call(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Records an answered (or failed) call made at `call`.
    pub fn record(&self, client: usize, family: &str, call: u64, outcome: Outcome) {
        let ret = match outcome {
            Outcome::RegisterUnknown => u64::MAX,
            _ => self.clock.fetch_add(1, Ordering::SeqCst),
        };
        self.ops.lock().unwrap().push(Op {
            family: family.to_string(),
            call,
            ret,
            outcome,
            client,
        });
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

/// `Ok` if every family's history is linearizable, else the first family
/// that is not, with its operations.
pub fn check(ops: &[Op]) -> Result<(), String> {
    let mut families: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        families.entry(&op.family).or_default().push(op.clone());
    }
    for (family, mut ops) in families {
        ops.sort_by_key(|o| o.call);
        if !Search::new(&ops).run() {
            return Err(format!(
                "family {family} is not linearizable; its operations (call, ret, client, outcome):\n{}",
                ops.iter()
                    .map(|o| format!("  {:>6} {:>20} c{} {:?}", o.call, o.ret, o.client, o.outcome))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    Ok(())
}

/// Applies `op` to a register holding `n`, if the answer fits.
fn step(n: u32, op: &Op) -> Option<u32> {
    match op.outcome {
        Outcome::Registered(r) if r == n + 1 => Some(n + 1),
        Outcome::RegisterUnknown => Some(n + 1),
        Outcome::Latest(seen) if seen.unwrap_or(0) == n => Some(n),
        _ => None,
    }
}

struct Search<'a> {
    ops: &'a [Op],
    /// Operations that must be linearized (every one that answered).
    required: Vec<bool>,
    seen: HashSet<(Vec<u64>, u32)>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op]) -> Self {
        Self {
            ops,
            required: ops
                .iter()
                .map(|o| o.outcome != Outcome::RegisterUnknown)
                .collect(),
            seen: HashSet::new(),
        }
    }

    fn run(&mut self) -> bool {
        let done = vec![0u64; self.ops.len().div_ceil(64)];
        self.dfs(done, 0)
    }

    fn is_done(done: &[u64], i: usize) -> bool {
        done[i / 64] & (1 << (i % 64)) != 0
    }

    fn dfs(&mut self, done: Vec<u64>, state: u32) -> bool {
        let pending: Vec<usize> = (0..self.ops.len())
            .filter(|&i| !Self::is_done(&done, i))
            .collect();
        if pending.iter().all(|&i| !self.required[i]) {
            // Unknown registers still pending simply never took effect.
            return true;
        }
        if !self.seen.insert((done.clone(), state)) {
            return false;
        }
        // Only an operation called before every pending one returned can
        // come next.
        let first_ret = pending
            .iter()
            .map(|&i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for &i in &pending {
            let op = &self.ops[i];
            if op.call > first_ret {
                continue;
            }
            if let Some(next) = step(state, op) {
                let mut done = done.clone();
                done[i / 64] |= 1 << (i % 64);
                if self.dfs(done, next) {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, outcome: Outcome) -> Op {
        Op {
            family: "web".into(),
            call,
            ret,
            outcome,
            client: 0,
        }
    }

    #[test]
    fn known_histories_are_judged_right() {
        use Outcome::*;
        // Sequential and right.
        assert!(check(&[op(1, 2, Registered(1)), op(3, 4, Latest(Some(1)))]).is_ok());
        // A read after an acknowledged register that does not see it.
        assert!(check(&[op(1, 2, Registered(1)), op(3, 4, Latest(None))]).is_err());
        // Two registers answered with the same revision (applied once,
        // acknowledged twice).
        assert!(check(&[op(1, 2, Registered(1)), op(3, 4, Registered(1))]).is_err());
        // A revision skipped: something applied twice.
        assert!(check(&[op(1, 2, Registered(2))]).is_err());
        // Overlapping: the read may go first.
        assert!(check(&[op(1, 4, Registered(1)), op(2, 3, Latest(None))]).is_ok());
        // A stale read after a newer one (time travel).
        assert!(check(&[
            op(1, 2, Registered(1)),
            op(3, 10, Registered(2)),
            op(4, 5, Latest(Some(2))),
            op(6, 7, Latest(Some(1))),
        ])
        .is_err());
        // An unknown register may have happened, at any time after its call...
        assert!(check(&[op(1, u64::MAX, RegisterUnknown), op(5, 6, Latest(Some(1)))]).is_ok());
        // ...or not at all...
        assert!(check(&[op(1, u64::MAX, RegisterUnknown), op(5, 6, Latest(None))]).is_ok());
        // ...but not before it was called.
        assert!(check(&[op(1, 2, Latest(Some(1))), op(3, u64::MAX, RegisterUnknown)]).is_err());
        // Families are independent.
        let mut other = op(1, 2, Registered(1));
        other.family = "db".into();
        assert!(check(&[op(1, 2, Registered(1)), other]).is_ok());
    }
}
