//! The tables one write transaction works on: records (id → JSON bytes), the secondary indexes
//! of each collection, and the list of indexes (which the transaction keeps in step with every
//! record it writes).

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde_json::Value;

use super::index::{entries, table_name, IndexMeta};
use crate::error::{Error, Result};

/// A collection's records: id → JSON bytes.
pub(super) type Records<'t> = Table<'t, &'static str, &'static [u8]>;
/// An index: `encode(value) ++ id` → entry flags.
pub(super) type IndexTable<'t> = Table<'t, &'static [u8], u8>;

/// Per collection (by records table name), the JSON list of its indexes ([`IndexMeta`]).
pub(super) const INDEXES: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("zeroservices:indexes");

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// The indexes of the collection stored in `records`, as a read transaction sees them.
pub(super) fn read_indexes(tx: &ReadTransaction, records: &str) -> Result<Vec<IndexMeta>> {
    let table = match tx.open_table(INDEXES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    decode_indexes(
        table
            .get(records)
            .map_err(storage)?
            .map(|v| v.value().to_vec()),
    )
}

fn decode_indexes(bytes: Option<Vec<u8>>) -> Result<Vec<IndexMeta>> {
    match bytes {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::Storage(format!("corrupt index list: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// The tables a batch's writes have opened in its transaction, kept open for the next writes
/// (opening a table is a tree lookup; a batch usually writes one or two).
pub(super) struct Tables<'t> {
    tx: &'t WriteTransaction,
    open: Vec<(Arc<str>, Records<'t>)>,
    indexes: Vec<(String, IndexTable<'t>)>,
    metas: HashMap<Arc<str>, Vec<IndexMeta>>,
}

impl<'t> Tables<'t> {
    pub(super) fn new(tx: &'t WriteTransaction) -> Tables<'t> {
        Tables {
            tx,
            open: Vec::new(),
            indexes: Vec::new(),
            metas: HashMap::new(),
        }
    }

    /// The records table `name`, created if missing.
    pub(super) fn get(&mut self, name: &Arc<str>) -> Result<&mut Records<'t>> {
        let at = match self.open.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                let t = self
                    .tx
                    .open_table(TableDefinition::new(name))
                    .map_err(storage)?;
                self.open.push((name.clone(), t));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[at].1)
    }

    fn index_table(&mut self, name: String) -> Result<&mut IndexTable<'t>> {
        let at = match self.indexes.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                let t = self
                    .tx
                    .open_table(TableDefinition::new(&name))
                    .map_err(storage)?;
                self.indexes.push((name, t));
                self.indexes.len() - 1
            }
        };
        Ok(&mut self.indexes[at].1)
    }

    /// The indexes of the collection stored in `records`.
    pub(super) fn indexes(&mut self, records: &Arc<str>) -> Result<Vec<IndexMeta>> {
        if let Some(m) = self.metas.get(records) {
            return Ok(m.clone());
        }
        let table = self.tx.open_table(INDEXES).map_err(storage)?;
        let bytes = table
            .get(&**records)
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        let metas = decode_indexes(bytes)?;
        self.metas.insert(records.clone(), metas.clone());
        Ok(metas)
    }

    fn save_indexes(&mut self, records: &Arc<str>, metas: Vec<IndexMeta>) -> Result<()> {
        let bytes = serde_json::to_vec(&metas).map_err(storage)?;
        let mut table = self.tx.open_table(INDEXES).map_err(storage)?;
        table
            .insert(&**records, bytes.as_slice())
            .map_err(storage)?;
        self.metas.insert(records.clone(), metas);
        Ok(())
    }

    /// Brings the indexes of `records` in step with the record `id` going from `old` to `new`
    /// (`None`: absent).
    pub(super) fn reindex(
        &mut self,
        records: &Arc<str>,
        id: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<()> {
        let mut metas = self.indexes(records)?;
        let mut changed = false;
        for meta in &mut metas {
            let (before, _) = old.map(|v| entries(v, &meta.path)).unwrap_or_default();
            let (after, multikey) = new.map(|v| entries(v, &meta.path)).unwrap_or_default();
            let table = self.index_table(table_name(records, &meta.path))?;
            for value in before.keys().filter(|k| !after.contains_key(*k)) {
                let key = [value.as_slice(), id.as_bytes()].concat();
                table.remove(key.as_slice()).map_err(storage)?;
            }
            for (value, flags) in &after {
                if before.get(value) != Some(flags) {
                    let key = [value.as_slice(), id.as_bytes()].concat();
                    table.insert(key.as_slice(), *flags).map_err(storage)?;
                }
            }
            if multikey && !meta.multikey {
                meta.multikey = true;
                changed = true;
            }
        }
        if changed {
            self.save_indexes(records, metas)?;
        }
        Ok(())
    }

    /// Makes the index on `path` of `records` from the records already stored; `false` when it
    /// exists already. Records that cannot be decoded are left out (and logged).
    pub(super) fn build_index(&mut self, records: &Arc<str>, path: &str) -> Result<bool> {
        let mut metas = self.indexes(records)?;
        if metas.iter().any(|m| m.path == path) {
            return Ok(false);
        }
        let name = table_name(records, path);
        let mut multikey = false;
        let tx = self.tx;
        let mut index: IndexTable<'t> = tx
            .open_table(TableDefinition::new(&name))
            .map_err(storage)?;
        self.get(records)?;
        if let Some((_, source)) = self.open.iter().find(|(n, _)| n == records) {
            for row in source.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let data = match serde_json::from_slice::<Value>(v.value()) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::warn!(id = k.value(), error = %e, "an undecodable record is left out of a new index");
                        continue;
                    }
                };
                let (e, multi) = entries(&data, path);
                multikey |= multi;
                for (value, flags) in e {
                    let key = [value.as_slice(), k.value().as_bytes()].concat();
                    index.insert(key.as_slice(), flags).map_err(storage)?;
                }
            }
        }
        self.indexes.push((name, index));
        metas.push(IndexMeta {
            path: path.to_owned(),
            multikey,
        });
        self.save_indexes(records, metas)?;
        Ok(true)
    }
}
