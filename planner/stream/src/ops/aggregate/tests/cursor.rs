//! Window cursors: the bounds a cursor keeps agree with when events
//! enter and leave the window.

use crate::ops::aggregate::*;

#[test]
fn cursor_bounds_agree_with_enter_and_leave() {
    let wins = [
        Win::Continuous(Some(10)),
        Win::Continuous(None),
        Win::Hopping {
            duration: Some(10),
            stride: 10,
            lookback: 0,
        },
        Win::Hopping {
            duration: Some(12),
            stride: 4,
            lookback: 3,
        },
        Win::Hopping {
            duration: None,
            stride: 5,
            lookback: 2,
        },
    ];
    for w in wins {
        for t in -50..50 {
            let entered = (-200..200).filter(|&e| w.enter(e) <= t).max();
            let left = (-200..200).filter(|&e| w.leave(e) <= t).max();
            assert_eq!(max_event_entered(&w, t), entered, "{w:?} t={t}");
            assert_eq!(max_event_left(&w, t), left, "{w:?} t={t}");
        }
    }
}
