//! What the server runs for a collection: lists whose filter translates exactly (sort, page,
//! projection and count too), counts, and patches through the server's update operators.

use futures::TryStreamExt;
use mongodb::bson::raw::RawDocumentBuf;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use zeroservices_core::query::{ListQuery, Update};
use zeroservices_core::{
    resources::{ListPage, Resource},
    Error, Result,
};

use super::{read, MongoCollection};
use crate::convert::{id_filter, map_error, raw_to_resource};
use crate::pushdown;
use crate::recent::Known;

impl MongoCollection {
    /// How many documents match `filter`: the `count` command with the filter (exact on sharded
    /// clusters since MongoDB 4.0, and run by nx-27017's query engine), or an aggregation for
    /// the empty filter (`count` without one reads metadata, which may be off).
    pub(super) async fn count(&self, filter: &Document) -> Result<u64> {
        if filter.is_empty() {
            return self.coll.count_documents(doc! {}).await.map_err(map_error);
        }
        let reply = self
            .coll
            .client()
            .database(&self.coll.namespace().db)
            .run_command(doc! {"count": self.coll.name(), "query": filter.clone()})
            .await
            .map_err(map_error)?;
        match reply.get("n") {
            Some(Bson::Int32(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
            Some(Bson::Int64(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
            Some(Bson::Double(n)) if *n >= 0.0 => Ok(*n as u64),
            _ => Err(Error::Storage(format!("count answered {reply}"))),
        }
    }

    /// Applies a patch with the server's update operators in one atomic write, when they mean
    /// what the shared semantics mean ([`pushdown::update`]) and no check must see the result
    /// first. `None`: the node applies it (the document is absent, a guard did not hold, or the
    /// server refused what the node may still accept).
    pub(super) async fn patch_on_server(
        &self,
        id: &str,
        update: &Update,
    ) -> Result<Option<Resource>> {
        if update.is_checked() {
            return Ok(None);
        }
        let Some(pushed) = pushdown::update(update.document()) else {
            return Ok(None);
        };
        let mut filter = id_filter(id);
        filter.extend(pushed.guard);
        let after = self
            .raw
            .find_one_and_update(filter, pushed.update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_error);
        let d = match after {
            Ok(Some(d)) => d,
            Ok(None) | Err(Error::BadRequest(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (at, mut r) = read(&d)?;
        r.resource_id = id.to_owned();
        let data = r.resource_data.clone();
        self.recent_lock().remember(id, Known { at, data });
        Ok(Some(r))
    }

    /// Whether some document matches `filter` (reads at most one id).
    pub(super) async fn any(&self, filter: Document) -> Result<bool> {
        let found = self
            .coll
            .find_one(filter)
            .projection(doc! {"_id": 1})
            .await
            .map_err(map_error)?;
        Ok(found.is_some())
    }

    /// Runs a query whose filter translated exactly on the server: sort, skip, limit, projection
    /// and count too, so the node reads only the page (ties by `_id`, in MongoDB's order). `None`
    /// when the server could order the matches differently from the shared order (see
    /// [`pushdown::sort_hazards`]).
    pub(super) async fn list_on_server(
        &self,
        filter: &Document,
        query: &ListQuery,
    ) -> Result<Option<ListPage>> {
        let Some(sort) = pushdown::sort(&query.sort) else {
            return Ok(None);
        };
        if let Some(hazards) = pushdown::sort_hazards(&query.sort) {
            if self.any(doc! {"$and": [filter.clone(), hazards]}).await? {
                return Ok(None);
            }
        }
        let total = self.count(filter).await?;
        let limit = query
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        if total <= query.skip || limit == 0 {
            return Ok(Some(ListPage {
                items: Vec::new(),
                total,
            }));
        }
        let mut find = self
            .raw
            .find(filter.clone())
            .sort(sort)
            .skip(query.skip)
            .limit(limit);
        if let Some(p) = pushdown::projection(&query.fields) {
            find = find.projection(p);
        }
        let docs: Vec<RawDocumentBuf> = find
            .await
            .map_err(map_error)?
            .try_collect()
            .await
            .map_err(map_error)?;
        let items = docs
            .iter()
            .map(|d| {
                let (mut r, _) = raw_to_resource(d)?;
                r.resource_data = query.fields.apply(r.resource_data);
                Ok(r)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(ListPage { items, total }))
    }
}

/// The rank of an `_id`'s BSON type in MongoDB's order (numbers, strings, documents, arrays,
/// binary data, ObjectIds, booleans, dates, ...).
pub(super) fn id_kind(id: &Bson) -> u8 {
    match id {
        Bson::Null => 0,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 1,
        Bson::String(_) | Bson::Symbol(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        _ => 10,
    }
}
