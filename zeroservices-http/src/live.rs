//! Live queries on `/realtime`: a subscription to the resources of one collection matching a
//! filter (the query language of lists), kept by the server.
//!
//! `{"type":"subscribe","collection":"power","where":{...},"id":"q1"}` answers
//! `{"type":"subscribed","query":"q1","collection":"power","items":[...],"total":N}` with the
//! resources matching now, then for each change of the collection one of
//! - `{"type":"enter","query":..,"resource_id":..,"resource_data":..,"node_id":..,"seq":..}`: a
//!   resource starts matching (created, or patched into the filter);
//! - `{"type":"update",...,"patch":..}`: it still matches and changed;
//! - `{"type":"leave","query":..,"resource_id":..,"node_id":..,"seq":..}`: patched out of the
//!   filter, or deleted.
//!
//! The server keeps, per query, the ids matching now (listed at subscribe, then followed
//! from the events), which is what tells `enter` from `update` and a patch out of the filter
//! from a change elsewhere. Bounds: [`MAX_LIVE_QUERIES`] per connection and [`MAX_MEMBERS`]
//! matches per query (a filter matching more at subscribe is refused; a query that grows past
//! it gets `{"type":"resync","query":..,"reason":"overflow"}` and ends). Resuming is
//! re-subscribing: the `subscribed` answer is the whole current result set, so a client that
//! was away (or got a `resync`) replaces what it shows and misses nothing; a `since` sent with
//! a live query is not needed and ignored. `{"type":"unsubscribe","query":"q1"}` ends one.

use std::collections::HashSet;

use crate::outgoing::{Change, ServerMessage};

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroservices_core::query::Filter;
use zeroservices_core::resources::{Action, ListPage, ResourceEvent, ResourceRequest};

use crate::auth::{Access, Principal};
use crate::AppState;

/// Live queries one connection may hold.
pub(crate) const MAX_LIVE_QUERIES: usize = 16;
/// Resources one live query may match.
pub(crate) const MAX_MEMBERS: usize = 10_000;

/// A `subscribe` naming a collection: a live query.
#[derive(Debug, Deserialize)]
pub(crate) struct LiveSubscribe {
    pub(crate) collection: String,
    #[serde(default, rename = "where")]
    pub(crate) filter: Value,
    /// The client's name for the query (default: the collection).
    #[serde(default)]
    pub(crate) id: Option<String>,
}

/// One live query of a connection.
#[derive(Debug)]
pub(crate) struct LiveQuery {
    id: String,
    collection: String,
    filter: Filter,
    members: HashSet<String>,
}

fn error(code: &str, message: &str) -> Utf8Bytes {
    crate::outgoing::error_message(code, message)
}

/// Checks and starts a live query: the grant, the filter, and the first listing. Answers the
/// query and its `subscribed` message, or the error message to send.
pub(crate) async fn open(
    st: &AppState,
    who: &Principal,
    sub: &LiveSubscribe,
) -> Result<(LiveQuery, Utf8Bytes), Utf8Bytes> {
    for access in [Access::Subscribe, Access::Action(&Action::List)] {
        if let Err(e) = st.auth.authorize(who, &sub.collection, access) {
            let code = if e.status().as_u16() == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            return Err(error(
                code,
                &format!("not allowed to {access} {:?}", sub.collection),
            ));
        }
    }
    let filter = match &sub.filter {
        Value::Null => Filter::all(),
        doc => Filter::parse(doc).map_err(|e| error("bad_request", &e.to_string()))?,
    };
    let req = ResourceRequest::new(
        &sub.collection,
        "list",
        json!({"where": sub.filter, "limit": MAX_MEMBERS}),
    );
    let page: ListPage = match st.node.send(req).await {
        Ok(v) => serde_json::from_value(v).map_err(|e| error("internal", &e.to_string()))?,
        Err(e) => return Err(error("unavailable", &e.to_string())),
    };
    if page.total > MAX_MEMBERS as u64 {
        let m = format!(
            "{} resources match; a live query may match at most {MAX_MEMBERS}: narrow the filter",
            page.total
        );
        return Err(error("bad_request", &m));
    }
    let id = sub.id.clone().unwrap_or_else(|| sub.collection.clone());
    let q = LiveQuery {
        id: id.clone(),
        collection: sub.collection.clone(),
        filter,
        members: page.items.iter().map(|r| r.resource_id.clone()).collect(),
    };
    let msg = ServerMessage::LiveSubscribed {
        query: &id,
        collection: &sub.collection,
        items: &page.items,
        total: page.total,
    };
    Ok((q, msg.text()))
}

impl LiveQuery {
    /// The ids of the resources in the query now.
    pub(crate) fn members(&self) -> impl Iterator<Item = &String> {
        self.members.iter()
    }
}

/// The live queries of one connection.
#[derive(Debug, Default)]
pub(crate) struct LiveQueries {
    queries: Vec<LiveQuery>,
}

impl LiveQueries {
    /// Adds (or replaces, by id) a query; `Err` when the connection holds too many.
    pub(crate) fn add(&mut self, q: LiveQuery) -> Result<(), Utf8Bytes> {
        self.queries.retain(|x| x.id != q.id);
        if self.queries.len() >= MAX_LIVE_QUERIES {
            let m = format!("at most {MAX_LIVE_QUERIES} live queries per connection");
            return Err(error("bad_request", &m));
        }
        self.queries.push(q);
        Ok(())
    }

    /// Ends the query `id`; whether there was one.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let before = self.queries.len();
        self.queries.retain(|q| q.id != id);
        self.queries.len() != before
    }

    /// Whether some query follows `collection`.
    pub(crate) fn follows(&self, collection: &str) -> bool {
        self.queries.iter().any(|q| q.collection == collection)
    }

    /// What the hub message `text` (`{"type":"event","topic":..,"data":<event>}`) means to
    /// each query; `visible`: false when the caller's read rule now hides the resource (a
    /// member then leaves, and its data is not sent).
    pub(crate) fn on_event(&mut self, text: &str, visible: bool) -> Vec<Utf8Bytes> {
        #[derive(Deserialize)]
        struct Envelope {
            data: ResourceEvent,
        }
        let Ok(Envelope { data: ev }) = serde_json::from_str::<Envelope>(text) else {
            return Vec::new(); // not a resource change
        };
        let mut out = Vec::new();
        let mut overflowed = Vec::new();
        for q in &mut self.queries {
            if q.collection != ev.collection {
                continue;
            }
            let was = q.members.contains(&ev.resource_id);
            let now = visible
                && ev
                    .resource_data
                    .as_ref()
                    .is_some_and(|d| q.filter.matches(d));
            let kind = match (was, now) {
                (false, true) => "enter",
                (true, true) => "update",
                (true, false) => "leave",
                (false, false) => continue,
            };
            if now {
                if !was && q.members.len() >= MAX_MEMBERS {
                    overflowed.push(q.id.clone());
                    continue;
                }
                q.members.insert(ev.resource_id.clone());
            } else {
                q.members.remove(&ev.resource_id);
            }
            let change = Change {
                query: &q.id,
                collection: &ev.collection,
                resource_id: &ev.resource_id,
                action: ev.action.as_str(),
                node_id: &ev.node_id,
                seq: ev.seq,
                ts: ev.ts,
                resource_data: if now {
                    Some(ev.resource_data.as_ref().unwrap_or(&Value::Null))
                } else {
                    None
                },
                patch: ev.patch.as_ref().filter(|_| kind == "update"),
            };
            out.push(
                match kind {
                    "enter" => ServerMessage::Enter(change),
                    "update" => ServerMessage::Update(change),
                    _ => ServerMessage::Leave(change),
                }
                .text(),
            );
        }
        for id in overflowed {
            self.remove(&id);
            out.push(
                ServerMessage::LiveResync {
                    query: &id,
                    reason: "overflow",
                }
                .text(),
            );
        }
        out
    }
}
