//! [`Events`]: one aggregation key's events, ordered by (event time, input
//! order), with the values each contributes.
//!
//! Events mostly arrive in time order, so they live in two flat vectors
//! (times, and `stride` values per event) rather than a tree: appending is
//! amortized O(1), the aggregation operator's cursors are plain indices
//! (`events[..cursor]` have passed), and stepping a cursor is an index
//! increment. An event inserted out of order shifts the events after it,
//! which costs the events of the key newer than it (bounded by the
//! source's disorder for live data).

use super::accum::V;

/// An event's position in a key's order: (event time, input order).
pub type EvKey = (i64, u64);

pub struct Events {
    keys: Vec<EvKey>,
    vals: Vec<V>,
    stride: usize,
}

impl Events {
    /// Events contributing `stride` values each.
    pub fn new(stride: usize) -> Self {
        Events {
            keys: Vec::new(),
            vals: Vec::new(),
            stride,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Event time of the `i`-th event.
    #[inline]
    pub fn time(&self, i: usize) -> i64 {
        self.keys[i].0
    }

    /// Event time of the `i`-th event, if there is one.
    #[inline]
    pub fn time_at(&self, i: usize) -> Option<i64> {
        self.keys.get(i).map(|k| k.0)
    }

    /// Values contributed by the `i`-th event.
    #[inline]
    pub fn vals(&self, i: usize) -> &[V] {
        &self.vals[i * self.stride..(i + 1) * self.stride]
    }

    /// Number of events with time `<= t`.
    pub fn count_upto(&self, t: i64) -> usize {
        if self.keys.last().is_none_or(|k| k.0 <= t) {
            return self.keys.len();
        }
        self.keys.partition_point(|k| k.0 <= t)
    }

    pub fn contains(&self, k: EvKey) -> bool {
        // Most events arrive after every event of their key.
        self.keys.last().is_some_and(|l| *l >= k) && self.keys.binary_search(&k).is_ok()
    }

    /// Insert an event (its key must be new); returns its index. `vals` is
    /// drained.
    pub fn insert(&mut self, k: EvKey, vals: &mut Vec<V>) -> usize {
        debug_assert_eq!(vals.len(), self.stride);
        if self.keys.last().is_none_or(|l| *l < k) {
            self.keys.push(k);
            self.vals.append(vals);
            return self.keys.len() - 1;
        }
        let at = self.keys.partition_point(|x| *x < k);
        self.keys.insert(at, k);
        let v = at * self.stride;
        self.vals.splice(v..v, vals.drain(..));
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_values_together() {
        let mut e = Events::new(2);
        for (t, s) in [(5, 0), (1, 0), (5, 1), (3, 9), (1, 1), (9, 0)] {
            let at = e.insert((t, s), &mut vec![V::I(t), V::I(s as i64)]);
            assert_eq!(e.time(at), t);
        }
        let got: Vec<(i64, &[V])> = (0..e.len()).map(|i| (e.time(i), e.vals(i))).collect();
        let want = [(1, 0), (1, 1), (3, 9), (5, 0), (5, 1), (9, 0)];
        assert_eq!(got.len(), want.len());
        for ((t, v), (wt, ws)) in got.iter().zip(want) {
            assert_eq!(*t, wt);
            assert!(matches!(v, [V::I(a), V::I(b)] if *a == wt && *b == ws as i64));
        }
        assert_eq!(e.count_upto(0), 0);
        assert_eq!(e.count_upto(1), 2);
        assert_eq!(e.count_upto(4), 3);
        assert_eq!(e.count_upto(9), 6);
        assert!(e.contains((5, 1)) && !e.contains((5, 2)));
        assert_eq!(e.time_at(6), None);
        let mut z = Events::new(0);
        z.insert((1, 0), &mut vec![]);
        assert_eq!(z.vals(0).len(), 0);
    }
}
