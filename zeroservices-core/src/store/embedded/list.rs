//! Lists of the embedded store, through an index when one answers the query:
//! - the filter is answered by an index ([`Plan::exact`]): matches and their count come from
//!   index keys; only the page's records are read (unless the order needs other fields);
//! - an index narrows the filter: only its candidates are read, then filtered;
//! - no filter, a limit and an indexed first sort key: records are read in index order until
//!   the page is certain;
//! - otherwise every record is read.

use std::collections::BTreeSet;

use redb::{Database, ReadOnlyTable, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::Value;

use super::index::{key_bounds, plan, table_name, IndexMeta, Plan, FILTER, SORT};
use super::keys::value_len;
use super::tables::read_indexes;
use crate::error::{Error, Result};
use crate::query::ListQuery;
use crate::resources::{list_in_memory, ListPage, Resource};

type RecordsRead = ReadOnlyTable<&'static str, &'static [u8]>;
type IndexRead = ReadOnlyTable<&'static [u8], u8>;

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// A record's data; `None` (logged) for one that cannot be decoded, so that one bad record
/// never makes the rest of its collection unreadable (a `get` of it still answers the error).
fn decode(id: &str, bytes: &[u8]) -> Option<Value> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(resource_id = %id, error = %e, "a stored record cannot be decoded; lists skip it");
            None
        }
    }
}

/// Answers `query` on the collection stored in table `records`.
pub(super) fn list(
    db: &Database,
    def: TableDefinition<'_, &'static str, &'static [u8]>,
    records: &str,
    query: &ListQuery,
) -> Result<ListPage> {
    let tx = db.begin_read().map_err(storage)?;
    let table = match tx.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return list_in_memory(std::iter::empty(), query);
        }
        Err(e) => return Err(storage(e)),
    };
    let indexes = read_indexes(&tx, records)?;
    let open_index = |path: &str| -> Result<IndexRead> {
        tx.open_table(TableDefinition::new(&table_name(records, path)))
            .map_err(storage)
    };
    if let Some(p) = plan(query.filter.doc(), &indexes) {
        let index = open_index(&p.path)?;
        let meta = indexes.iter().find(|m| m.path == p.path);
        return if p.exact {
            answered(&table, &index, &p, meta, query)
        } else {
            narrowed(&table, &index, &p, query)
        };
    }
    let sort_index = query
        .sort
        .0
        .first()
        .and_then(|k| indexes.iter().find(|m| m.path == k.path));
    match (sort_index, query.limit) {
        (Some(meta), Some(limit)) if query.filter.is_all() => {
            let index = open_index(&meta.path)?;
            sorted_scan(&table, &index, query, limit)
        }
        _ => full_scan(&table, query),
    }
}

fn full_scan(table: &RecordsRead, query: &ListQuery) -> Result<ListPage> {
    let mut rows: Vec<(String, Value)> = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        if let Some(data) = decode(k.value(), v.value()) {
            rows.push((k.value().to_owned(), data));
        }
    }
    list_in_memory(rows.iter().map(|(k, v)| (k.as_str(), v)), query)
}

/// The index entries in `plan`'s ranges flagged `flag`, as (encoded value, id), in key order.
fn entries_in(index: &IndexRead, plan: &Plan, flag: u8) -> Result<Vec<(Vec<u8>, String)>> {
    let mut out = Vec::new();
    for range in &plan.ranges {
        for row in index.range::<&[u8]>(key_bounds(range)).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if v.value() & flag != 0 {
                out.push(split(k.value())?);
            }
        }
    }
    Ok(out)
}

fn split(key: &[u8]) -> Result<(Vec<u8>, String)> {
    let at = value_len(key);
    let id =
        std::str::from_utf8(&key[at..]).map_err(|_| Error::Storage("corrupt index key".into()))?;
    Ok((key[..at].to_vec(), id.to_owned()))
}

/// The records of `ids` (an id whose record is gone is skipped), projected by `query`.
fn fetch<'a>(
    table: &RecordsRead,
    ids: impl Iterator<Item = &'a String>,
    query: &ListQuery,
) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(data) = table
            .get(id.as_str())
            .map_err(storage)?
            .and_then(|v| decode(id, v.value()))
        {
            out.push(Resource {
                resource_id: id.clone(),
                resource_data: query.fields.apply(data),
            });
        }
    }
    Ok(out)
}

fn page<T>(items: impl Iterator<Item = T>, query: &ListQuery) -> impl Iterator<Item = T> {
    let skip = usize::try_from(query.skip).unwrap_or(usize::MAX);
    let limit = query
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    items.skip(skip).take(limit)
}

/// The index answers the filter: the matches (and their count) are its entries in the ranges.
fn answered(
    table: &RecordsRead,
    index: &IndexRead,
    plan: &Plan,
    meta: Option<&IndexMeta>,
    query: &ListQuery,
) -> Result<ListPage> {
    let single_valued = meta.is_some_and(|m| !m.multikey);
    let keys = &query.sort.0;
    if keys.len() == 1 && keys[0].path == plan.path && single_valued {
        // Each match has one entry, which is also its sort value: index order is the order.
        let mut hits = entries_in(index, plan, FILTER)?;
        if keys[0].descending {
            hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        }
        let total = hits.len() as u64;
        let items = fetch(table, page(hits.iter().map(|(_, id)| id), query), query)?;
        return Ok(ListPage { items, total });
    }
    let ids: BTreeSet<String> = entries_in(index, plan, FILTER)?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    if keys.is_empty() {
        let total = ids.len() as u64;
        let items = fetch(table, page(ids.iter(), query), query)?;
        return Ok(ListPage { items, total });
    }
    narrowed_from(table, ids, query)
}

/// The index narrows the filter: its candidates are read and filtered.
fn narrowed(
    table: &RecordsRead,
    index: &IndexRead,
    plan: &Plan,
    query: &ListQuery,
) -> Result<ListPage> {
    let ids: BTreeSet<String> = entries_in(index, plan, FILTER)?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    narrowed_from(table, ids, query)
}

fn narrowed_from(
    table: &RecordsRead,
    ids: BTreeSet<String>,
    query: &ListQuery,
) -> Result<ListPage> {
    let rows = read_rows(table, ids)?;
    list_in_memory(rows.iter().map(|(k, v)| (k.as_str(), v)), query)
}

/// The records of `ids`, decoded (an id whose record is gone is skipped).
fn read_rows(
    table: &RecordsRead,
    ids: impl IntoIterator<Item = String>,
) -> Result<Vec<(String, Value)>> {
    let mut rows = Vec::new();
    for id in ids {
        let data = table
            .get(id.as_str())
            .map_err(storage)?
            .and_then(|v| decode(&id, v.value()));
        if let Some(data) = data {
            rows.push((id, data));
        }
    }
    Ok(rows)
}

/// No filter, a limit, and an index on the first sort key: reads records in that key's order
/// until the page is certain (the last value's ties included), then orders them exactly.
fn sorted_scan(
    table: &RecordsRead,
    index: &IndexRead,
    query: &ListQuery,
    limit: u64,
) -> Result<ListPage> {
    let need = usize::try_from(query.skip.saturating_add(limit)).unwrap_or(usize::MAX);
    let descending = query.sort.0.first().is_some_and(|k| k.descending);
    let all = index.iter().map_err(storage)?;
    let rows: Box<dyn Iterator<Item = _>> = if descending {
        Box::new(all.rev())
    } else {
        Box::new(all)
    };
    let mut picked: Vec<(Vec<u8>, String)> = Vec::new();
    for row in rows {
        let (k, v) = row.map_err(storage)?;
        if v.value() & SORT == 0 {
            continue;
        }
        let (value, id) = split(k.value())?;
        if picked.len() >= need && picked.last().is_some_and(|(last, _)| *last != value) {
            break;
        }
        picked.push((value, id));
    }
    let rows = read_rows(table, picked.into_iter().map(|(_, id)| id))?;
    let mut page = list_in_memory(rows.iter().map(|(k, v)| (k.as_str(), v)), query)?;
    page.total = table.len().map_err(storage)?;
    Ok(page)
}
