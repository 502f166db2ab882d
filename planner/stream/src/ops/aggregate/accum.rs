//! Aggregation state: the values an event contributes and the accumulators
//! that add and remove them.
//!
//! Every accumulator supports removal, because events leave sliding windows:
//! - `Count`: a counter (`unique`: a value -> multiplicity map, so the count
//!   of distinct values is exact — "approximate unique" is answered exactly);
//! - `Sum` / `Average`: a running sum (`i128` for integers) and count; a sum
//!   that drops back to zero events restarts from exactly zero, so float
//!   rounding cannot outlive the events that caused it;
//! - `Stddev`: Welford's mean and M2 with its inverse update for removal
//!   (population standard deviation);
//! - `Min` / `Max` / `Distinct`: an ordered value -> multiplicity map;
//! - `Quantile`: a DDSketch-style histogram with logarithmic buckets of
//!   relative width 1% (counts, so removal is exact): the answer is within
//!   1% (relative) of the exact value at rank `floor(p * (n - 1))` of the
//!   sorted non-null values; zero and negative values are handled by a zero
//!   bucket and a mirrored negative store;
//! - `LastK` / `FirstK` need no accumulator: the events of a window are a
//!   contiguous run of the operator's time-ordered event map.
//!
//! Nulls are skipped by every aggregation except `Count` without `of` (which
//! counts rows) and `LastK` / `FirstK` without `dropnull`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use thyme_table::error::{Error, Result};

/// One value an event contributes (or a group-key component).
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    I(i64),
    F(f64),
    B(bool),
    S(Box<str>),
}

impl V {
    pub fn is_null(&self) -> bool {
        matches!(self, V::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            V::I(i) => Some(*i as f64),
            V::F(f) => Some(*f),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            V::Null => 0,
            V::B(_) => 1,
            V::I(_) => 2,
            V::F(_) => 3,
            V::S(_) => 4,
        }
    }

    /// Append a prefix-free encoding (used for group keys and stored state).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            V::Null => out.push(0),
            V::B(b) => {
                out.push(1);
                out.push(*b as u8);
            }
            V::I(i) => {
                out.push(2);
                out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
            }
            V::F(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            V::S(s) => {
                out.push(4);
                for &b in s.as_bytes() {
                    out.push(b);
                    if b == 0 {
                        out.push(0xFF);
                    }
                }
                out.extend_from_slice(&[0, 1]);
            }
        }
    }

    /// Decode one value from the front of `b`.
    pub fn decode(b: &mut &[u8]) -> Result<V> {
        let bad = || Error::Internal("corrupt pipeline state".into());
        let (&tag, rest) = b.split_first().ok_or_else(bad)?;
        *b = rest;
        let take8 = |b: &mut &[u8]| -> Result<[u8; 8]> {
            if b.len() < 8 {
                return Err(bad());
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            *b = &b[8..];
            Ok(a)
        };
        Ok(match tag {
            0 => V::Null,
            1 => {
                let (&v, rest) = b.split_first().ok_or_else(bad)?;
                *b = rest;
                V::B(v != 0)
            }
            2 => V::I((u64::from_be_bytes(take8(b)?) ^ (1 << 63)) as i64),
            3 => V::F(f64::from_bits(u64::from_be_bytes(take8(b)?))),
            4 => {
                let mut s = Vec::new();
                loop {
                    match b {
                        [0, 1, rest @ ..] => {
                            *b = rest;
                            break;
                        }
                        [0, 0xFF, rest @ ..] => {
                            s.push(0);
                            *b = rest;
                        }
                        [c, rest @ ..] => {
                            s.push(*c);
                            *b = rest;
                        }
                        [] => return Err(bad()),
                    }
                }
                V::S(String::from_utf8(s).map_err(|_| bad())?.into())
            }
            _ => return Err(bad()),
        })
    }
}

/// A total order over values (floats by `total_cmp`), for ordered maps.
#[derive(Debug, Clone, PartialEq)]
pub struct OrdV(pub V);

impl Eq for OrdV {}

impl PartialOrd for OrdV {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdV {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (V::I(a), V::I(b)) => a.cmp(b),
            (V::F(a), V::F(b)) => a.total_cmp(b),
            (V::B(a), V::B(b)) => a.cmp(b),
            (V::S(a), V::S(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

/// A hashable form of a value (floats by bit pattern).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HV {
    I(i64),
    F(u64),
    B(bool),
    S(Box<str>),
}

impl HV {
    fn of(v: &V) -> Option<HV> {
        Some(match v {
            V::Null => return None,
            V::I(i) => HV::I(*i),
            V::F(f) => HV::F(if *f == 0.0 { 0 } else { f.to_bits() }),
            V::B(b) => HV::B(*b),
            V::S(s) => HV::S(s.clone()),
        })
    }
}

/// Relative accuracy of the quantile sketch.
pub const QUANTILE_ALPHA: f64 = 0.01;

/// Logarithmic-bucket histogram with removable counts.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    pos: BTreeMap<i32, u64>,
    neg: BTreeMap<i32, u64>,
    zero: u64,
    n: u64,
}

impl Sketch {
    fn gamma() -> f64 {
        (1.0 + QUANTILE_ALPHA) / (1.0 - QUANTILE_ALPHA)
    }

    fn index(x: f64) -> i32 {
        (x.ln() / Self::gamma().ln()).ceil() as i32
    }

    fn value(i: i32) -> f64 {
        let g = Self::gamma();
        2.0 * g.powi(i) / (g + 1.0)
    }

    fn update(&mut self, x: f64, add: bool) {
        let slot = if x > f64::MIN_POSITIVE {
            Some((true, Self::index(x)))
        } else if x < -f64::MIN_POSITIVE {
            Some((false, Self::index(-x)))
        } else {
            None
        };
        if add {
            self.n += 1;
            match slot {
                None => self.zero += 1,
                Some((true, i)) => *self.pos.entry(i).or_default() += 1,
                Some((false, i)) => *self.neg.entry(i).or_default() += 1,
            }
        } else {
            self.n -= 1;
            let map = match slot {
                None => {
                    self.zero -= 1;
                    return;
                }
                Some((true, i)) => (&mut self.pos, i),
                Some((false, i)) => (&mut self.neg, i),
            };
            if let Some(c) = map.0.get_mut(&map.1) {
                *c -= 1;
                if *c == 0 {
                    map.0.remove(&map.1);
                }
            }
        }
    }

    /// Estimate of the value at rank `floor(p * (n - 1))`.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = (p * (self.n - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (&i, &c) in self.neg.iter().rev() {
            seen += c;
            if seen > rank {
                return Some(-Self::value(i));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (&i, &c) in &self.pos {
            seen += c;
            if seen > rank {
                return Some(Self::value(i));
            }
        }
        None
    }
}

/// What one aggregation keeps between events.
#[derive(Debug, Clone)]
pub enum Acc {
    Rows(i64),
    NonNull(i64),
    Unique(HashMap<HV, u32>),
    SumI {
        sum: i128,
        n: i64,
    },
    SumF {
        sum: f64,
        n: i64,
    },
    Welford {
        n: i64,
        mean: f64,
        m2: f64,
    },
    Ordered(BTreeMap<OrdV, u32>),
    Sketch(Sketch),
    /// LastK / FirstK: read from the event map.
    None,
}

impl Acc {
    pub fn reset(&mut self) {
        match self {
            Acc::Rows(n) | Acc::NonNull(n) => *n = 0,
            Acc::Unique(m) => m.clear(),
            Acc::SumI { sum, n } => {
                *sum = 0;
                *n = 0
            }
            Acc::SumF { sum, n } => {
                *sum = 0.0;
                *n = 0
            }
            Acc::Welford { n, mean, m2 } => {
                *n = 0;
                *mean = 0.0;
                *m2 = 0.0
            }
            Acc::Ordered(m) => m.clear(),
            Acc::Sketch(s) => *s = Sketch::default(),
            Acc::None => {}
        }
    }

    /// Add (`add`) or remove one event's value.
    pub fn update(&mut self, v: &V, add: bool) {
        let d: i64 = if add { 1 } else { -1 };
        match self {
            Acc::Rows(n) => *n += d,
            Acc::None => {}
            _ if v.is_null() => {}
            Acc::NonNull(n) => *n += d,
            Acc::Unique(m) => {
                let k = HV::of(v).expect("not null");
                if add {
                    *m.entry(k).or_default() += 1;
                } else if let Some(c) = m.get_mut(&k) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&k);
                    }
                }
            }
            Acc::SumI { sum, n } => {
                if let V::I(i) = v {
                    *sum += (*i as i128) * d as i128;
                    *n += d;
                }
            }
            Acc::SumF { sum, n } => {
                let x = v.as_f64().unwrap_or(0.0);
                *n += d;
                if *n == 0 {
                    *sum = 0.0;
                } else {
                    *sum += x * d as f64;
                }
            }
            Acc::Welford { n, mean, m2 } => {
                let x = v.as_f64().unwrap_or(0.0);
                if add {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                } else {
                    *n -= 1;
                    if *n == 0 {
                        *mean = 0.0;
                        *m2 = 0.0;
                    } else if *n == 1 {
                        // One value left: its mean is exact and it has no
                        // spread (drop the rounding the removals left).
                        *mean = *mean * 2.0 - x;
                        *m2 = 0.0;
                    } else {
                        let old_mean = (*mean * (*n + 1) as f64 - x) / *n as f64;
                        *m2 -= (x - *mean) * (x - old_mean);
                        *mean = old_mean;
                        if *m2 < 0.0 {
                            *m2 = 0.0;
                        }
                    }
                }
            }
            Acc::Ordered(m) => {
                let k = OrdV(v.clone());
                if add {
                    *m.entry(k).or_default() += 1;
                } else if let Some(c) = m.get_mut(&k) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&k);
                    }
                }
            }
            Acc::Sketch(s) => {
                if let Some(x) = v.as_f64() {
                    s.update(x, add)
                }
            }
        }
    }
}
