//! Windows as intervals of read time.
//!
//! Every window kind except `Session` is described by two functions of an
//! event's time `e`: the read time at which the event starts counting
//! (`enter(e)`) and the first read time at which it no longer counts
//! (`leave(e)`). Reading an aggregate at `t` aggregates exactly the events
//! with `enter(e) <= t < leave(e)`. Both functions are non-decreasing in `e`,
//! which is what lets the aggregation operator walk its events with two
//! cursors per window.
//!
//! - `Continuous(W)`: `[e, e + W]`, both ends included (`leave = e + W + 1µs`);
//!   `Continuous("forever")`: `[e, ∞)`.
//! - `Tumbling(D, lookback L)`: windows `[kD, (k+1)D)`; at `t` the value is
//!   that of the most recent window that ended at or before `t - L`, so
//!   `enter = end(e) + L`, `leave = end(e) + D + L`.
//! - `Hopping(D, stride S, lookback L)`: windows `[jS, jS + D)`; at `t` the
//!   value is that of the most recent window ended by `t - L`: `enter` is the
//!   end of the first window holding `e`, `leave` the end of the first window
//!   after the last one holding `e` (plus `L`). `D = forever` counts every
//!   event up to the window end.
//! - `Session(gap)`: not interval-shaped (an event's effect depends on its
//!   neighbours); handled by the aggregation operator directly.

use thyme_model::payload::Window;

use thyme_table::error::{Error, Result};

use crate::ops::micros;

/// A window in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Win {
    /// `None` duration: forever.
    Continuous(Option<i64>),
    Hopping {
        duration: Option<i64>,
        stride: i64,
        lookback: i64,
    },
    Session {
        gap: i64,
    },
}

fn lookback_of(l: &Option<String>) -> Result<i64> {
    Ok(l.as_deref().map(micros).transpose()?.flatten().unwrap_or(0))
}

impl Win {
    pub fn from_model(w: &Window) -> Result<Win> {
        Ok(match w {
            Window::Continuous { duration } => Win::Continuous(micros(duration)?),
            Window::Tumbling { duration, lookback } => {
                let d = micros(duration)?.ok_or_else(|| {
                    Error::InvalidDefinition("a Tumbling window cannot be forever".into())
                })?;
                Win::Hopping {
                    duration: Some(d),
                    stride: d,
                    lookback: lookback_of(lookback)?,
                }
            }
            Window::Hopping {
                duration,
                stride,
                lookback,
            } => {
                let stride = micros(stride)?.filter(|s| *s > 0).ok_or_else(|| {
                    Error::InvalidDefinition("a Hopping stride must be a positive duration".into())
                })?;
                let duration = micros(duration)?;
                if duration.is_some_and(|d| d < stride) {
                    return Err(Error::InvalidDefinition(
                        "a Hopping stride must be at most the duration".into(),
                    ));
                }
                Win::Hopping {
                    duration,
                    stride,
                    lookback: lookback_of(lookback)?,
                }
            }
            Window::Session { gap } => Win::Session {
                gap: micros(gap)?.filter(|g| *g > 0).ok_or_else(|| {
                    Error::InvalidDefinition("a Session gap must be a positive duration".into())
                })?,
            },
        })
    }

    /// First read time at which an event at `e` counts.
    pub fn enter(&self, e: i64) -> i64 {
        match *self {
            Win::Continuous(_) => e,
            Win::Hopping {
                duration,
                stride,
                lookback,
            } => match duration {
                // Smallest j with j*S + D > e.
                Some(d) => {
                    let j0 = (e - d).div_euclid(stride) + 1;
                    (j0 * stride + d).saturating_add(lookback)
                }
                None => ((e.div_euclid(stride) + 1) * stride).saturating_add(lookback),
            },
            Win::Session { .. } => e,
        }
    }

    /// First read time at which an event at `e` no longer counts
    /// (`i64::MAX`: never).
    pub fn leave(&self, e: i64) -> i64 {
        match *self {
            Win::Continuous(None) => i64::MAX,
            Win::Continuous(Some(w)) => e.saturating_add(w).saturating_add(1),
            Win::Hopping {
                duration,
                stride,
                lookback,
            } => match duration {
                None => i64::MAX,
                // One past the last window holding e: j1 = floor(e / S).
                Some(d) => ((e.div_euclid(stride) + 1) * stride + d).saturating_add(lookback),
            },
            Win::Session { .. } => i64::MAX,
        }
    }

    /// How far before a read time the events that count can lie (`None`:
    /// unbounded).
    pub fn reach(&self) -> Option<i64> {
        match *self {
            Win::Continuous(w) => w.map(|w| w + 1),
            Win::Hopping {
                duration,
                stride,
                lookback,
            } => duration.map(|d| d + stride + lookback),
            Win::Session { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_hopping(e: i64, t: i64, d: i64, s: i64, l: i64) -> bool {
        // The most recent window [jS, jS + D) ended by t - L.
        let j = (t - l - d).div_euclid(s);
        e >= j * s && e < j * s + d
    }

    #[test]
    fn hopping_intervals_match_the_window_definition() {
        for (d, s, l) in [(10, 10, 0), (10, 5, 0), (10, 3, 2), (7, 7, 5), (9, 1, 0)] {
            let w = Win::Hopping {
                duration: Some(d),
                stride: s,
                lookback: l,
            };
            for e in -40..40 {
                for t in -40..80 {
                    let counted = w.enter(e) <= t && t < w.leave(e);
                    assert_eq!(
                        counted,
                        brute_hopping(e, t, d, s, l),
                        "d={d} s={s} l={l} e={e} t={t}"
                    );
                }
            }
        }
    }

    #[test]
    fn continuous_covers_both_ends() {
        let w = Win::Continuous(Some(10));
        assert_eq!(w.enter(5), 5);
        assert_eq!(w.leave(5), 16);
        assert_eq!(Win::Continuous(None).leave(5), i64::MAX);
    }
}
