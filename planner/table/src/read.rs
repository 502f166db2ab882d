//! Batched reads of keyed datasets as of given times: the one store-read
//! primitive above the temporal store. Featureset lookups, pipeline as-of
//! joins and ASOF seeks all read through [`lookup_rows`]: one key and one
//! read time per row, answered with one multi-key seek per distinct read
//! time (or a single cursor visiting the rows in key and time order).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use thyme_storage::TemporalStore;

use thyme_model::snake_case;

use crate::catalog::{Catalog, Dataset};
use crate::codec::{Col, RowDecoder};
use crate::error::{Error, Result};

/// Read a keyed dataset for many rows: row `i` gets the version of key
/// `(keys[0][i], keys[1][i], ...)` with the greatest event time `<= ts[i]`
/// (decayed fields as read at `ts[i]`). Returns the `projection` fields
/// (dataset positions), null where the key is absent (never written, a
/// delete, or a null key value), and whether each row was found. One read
/// cursor serves all rows, visited in key then time order.
pub fn lookup_rows(
    store: &dyn TemporalStore,
    ds: &Dataset,
    keys: &[ArrayRef],
    ts: &[i64],
    projection: &[usize],
) -> Result<(RecordBatch, Vec<bool>)> {
    let n = ts.len();
    if keys.len() != ds.key_indices().len() {
        return Err(Error::Internal(format!(
            "lookup of {}: {} key columns for {} key fields",
            ds.name(),
            keys.len(),
            ds.key_indices().len()
        )));
    }
    // Keys cast to the key fields' types, encoded into one buffer.
    let mut cast_keys = Vec::with_capacity(keys.len());
    for (k, &fi) in keys.iter().zip(ds.key_indices()) {
        if k.len() != n {
            return Err(Error::Internal(
                "lookup: key and time lengths differ".into(),
            ));
        }
        let target = ds.fields()[fi].dtype.arrow();
        let c = if k.data_type() == &target {
            k.clone()
        } else {
            arrow::compute::cast(k, &target)?
        };
        cast_keys.push(c);
    }
    let cols = cast_keys
        .iter()
        .zip(ds.key_indices())
        .map(|(a, &fi)| Col::new(ds.fields()[fi].dtype, a))
        .collect::<Result<Vec<_>>>()?;
    let mut buf: Vec<u8> = Vec::with_capacity(n * 16);
    let mut ends: Vec<usize> = Vec::with_capacity(n);
    let mut valid = vec![true; n];
    for (i, ok) in valid.iter_mut().enumerate() {
        for c in &cols {
            if c.is_null(i) {
                *ok = false;
            } else {
                c.encode_key(i, &mut buf);
            }
        }
        ends.push(buf.len());
    }
    let key_of = |i: usize| &buf[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
    let mut order: Vec<u32> = (0..n as u32).filter(|&i| valid[i as usize]).collect();
    let one_time = ts.windows(2).all(|w| w[0] == w[1]);
    if !one_time {
        // Ordered by key, then time: neighbouring reads share blocks.
        order.sort_unstable_by(|&a, &b| {
            key_of(a as usize)
                .cmp(key_of(b as usize))
                .then(ts[a as usize].cmp(&ts[b as usize]))
        });
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(
        projection
            .iter()
            .map(|&p| {
                let f = &ds.fields()[p];
                arrow::datatypes::Field::new(&f.name, f.dtype.arrow(), true)
            })
            .collect::<Vec<_>>(),
    ));
    let mut decoder = RowDecoder::new(ds, projection, schema, n);
    let mut slot: Vec<Option<u32>> = vec![None; n];
    let decay = ds.decay();
    let refs: Vec<&[u8]> = order.iter().map(|&i| key_of(i as usize)).collect();
    let mut err = None;
    let mut visit = |j: usize, v: Option<thyme_storage::VersionRef<'_>>| {
        let Some(v) = v else { return };
        if v.deleted || err.is_some() {
            return;
        }
        let row = order[j] as usize;
        let res = if decay.is_empty() {
            decoder.append(v.value)
        } else {
            decay
                .apply(ds, v.value, ts[row])
                .and_then(|r| decoder.append(&r))
        };
        match res {
            Ok(()) => slot[row] = Some(decoder.len() as u32 - 1),
            Err(e) => err = Some(e),
        }
    };
    if let Some(&first) = order.first() {
        if one_time {
            // The online case: every row read now (or at one time).
            store.get_as_of(ds.id, &refs, ts[first as usize], &mut visit)?;
        } else {
            let times: Vec<i64> = order.iter().map(|&i| ts[i as usize]).collect();
            store.get_as_of_each(ds.id, &refs, &times, &mut visit)?;
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let dense = decoder.finish(vec![])?;
    let found: Vec<bool> = slot.iter().map(Option::is_some).collect();
    let indices = UInt32Array::from(slot);
    let columns = dense
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None).map_err(Error::from))
        .collect::<Result<Vec<ArrayRef>>>()?;
    let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n));
    let batch = RecordBatch::try_new_with_options(dense.schema(), columns, &opts)?;
    debug_assert!(batch.columns().iter().all(|c| c.len() == n));
    Ok((batch, found))
}

/// Key fields of a dataset: names and Arrow types, in key order.
pub type KeyFields = Vec<(String, DataType)>;

/// Reads keyed datasets for Python extractors (`Dataset.lookup`).
pub trait DatasetReader: Send + Sync {
    /// Key fields (name and Arrow type) and every field name of a dataset,
    /// by class name.
    fn describe(&self, dataset: &str) -> Result<(KeyFields, Vec<String>)>;

    /// Row `i` of `dataset` for key `keys[..][i]` as of `ts[i]`: the chosen
    /// `fields` (all when `None`) and whether each key was found.
    fn lookup(
        &self,
        dataset: &str,
        keys: &[ArrayRef],
        ts: &[i64],
        fields: Option<&[String]>,
    ) -> Result<(RecordBatch, Vec<bool>)>;
}

/// [`DatasetReader`] over the catalog and its temporal store.
pub struct StoreReader {
    catalog: Arc<Catalog>,
}

impl StoreReader {
    pub fn new(catalog: Arc<Catalog>) -> StoreReader {
        StoreReader { catalog }
    }

    pub fn dataset(&self, name: &str) -> Result<Arc<Dataset>> {
        let ds = self
            .catalog
            .get(&snake_case(name))
            .or_else(|| self.catalog.get(name))
            .ok_or_else(|| Error::UnknownTable(name.to_string()))?;
        if !ds.is_keyed() {
            return Err(Error::InvalidDefinition(format!(
                "dataset {name} is keyless and cannot be looked up"
            )));
        }
        Ok(ds)
    }
}

impl DatasetReader for StoreReader {
    fn describe(&self, dataset: &str) -> Result<(KeyFields, Vec<String>)> {
        let ds = self.dataset(dataset)?;
        let keys = ds
            .key_indices()
            .iter()
            .map(|&i| (ds.fields()[i].name.clone(), ds.fields()[i].dtype.arrow()))
            .collect();
        Ok((keys, ds.fields().iter().map(|f| f.name.clone()).collect()))
    }

    fn lookup(
        &self,
        dataset: &str,
        keys: &[ArrayRef],
        ts: &[i64],
        fields: Option<&[String]>,
    ) -> Result<(RecordBatch, Vec<bool>)> {
        let ds = self.dataset(dataset)?;
        let projection: Vec<usize> = match fields {
            None => (0..ds.fields().len()).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    ds.fields()
                        .iter()
                        .position(|f| &f.name == n)
                        .ok_or_else(|| Error::UnknownColumn {
                            table: dataset.to_string(),
                            column: n.clone(),
                        })
                })
                .collect::<Result<_>>()?,
        };
        lookup_rows(self.catalog.store().as_ref(), &ds, keys, ts, &projection)
    }
}
