//! How an ASOF join with a keyed dataset on the right reads it
//! ([`AsOfStrategy`]) and the sizes that choose a strategy.

/// How an ASOF join with a keyed dataset on the right reads it, from the
/// session variable `thyme.asof_strategy` (`auto`, `seek`, `hash`,
/// `merge`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AsOfStrategy {
    /// Seeks when the left side is small next to the dataset's history
    /// (see [`SEEK_RATIO`]), else hash when the right side fits the memory
    /// pool, else merge.
    #[default]
    Auto,
    /// Seeks whenever the join allows them (a backward match on the
    /// dataset's own key and time).
    Seek,
    /// Always index the right side in memory ([`AsOfHashJoinExec`]).
    Hash,
    /// Always sort both sides and merge ([`AsOfJoinExec`]).
    Merge,
}

impl AsOfStrategy {
    /// The session variable's value, if valid.
    pub fn parse(s: &str) -> Option<AsOfStrategy> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "default" | "" => Some(AsOfStrategy::Auto),
            "seek" => Some(AsOfStrategy::Seek),
            "hash" => Some(AsOfStrategy::Hash),
            "merge" => Some(AsOfStrategy::Merge),
            _ => None,
        }
    }
}

/// Seeks are chosen when `left rows * SEEK_RATIO <= dataset versions`. On
/// the 2-core reference machine one as-of read costs 10-15 µs
/// (`bench/offline.sh`: 2M reads in 10.8 s on two cores; `bench/storage.sh`:
/// 60-70k as-of lookups/s). The sorted merge cost about 0.6 µs per row of
/// either side, which set the ratio; the hash join now costs about 0.25 µs
/// of CPU per row (`bench/asof.sh`: 10M x 10M in about 2.5 s on two
/// cores), which would put it nearer 50. It stays at 16: seeks read no
/// history and hold no memory, and the difference only matters for left
/// sides between 1/50 and 1/16 of the history.
pub const SEEK_RATIO: usize = 16;
