//! What a connection may see of a collection with a read rule: an event whose changed data
//! matches the caller's rule, and, for a resource the connection saw as visible (in an event
//! or in a live query's first listing), its deletion and its leaving the rule.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use zeroservices_core::query::Filter;

use super::collection_of;
use super::hub::HubEvent;
use crate::auth::Principal;
use crate::visibility::{self, ReadRule};

/// Visible resources a connection remembers at most (then it starts over).
const SEEN_VISIBLE: usize = 10_000;

/// An event as the connection's read rule lets it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// No rule, or the changed data matches it (or a delete of a resource seen as visible).
    Visible,
    /// A resource seen as visible that the rule now hides: live queries get a `leave`
    /// (without the data); topic subscribers get nothing.
    Left,
    /// Nothing of it.
    Hidden,
}

/// The resources a connection saw as visible and its user's parsed rules (both cleared when
/// the connection's credentials change).
#[derive(Debug, Default)]
pub(super) struct SeenVisible {
    seen: HashSet<(String, String)>,
    filters: HashMap<String, Option<Filter>>,
}

impl SeenVisible {
    /// Forgets everything (new credentials).
    pub(super) fn clear(&mut self) {
        self.seen.clear();
        self.filters.clear();
    }

    /// Remembers resources listed to the connection (a live query's first page).
    pub(super) fn listed<'a>(&mut self, collection: &str, ids: impl Iterator<Item = &'a String>) {
        for id in ids {
            self.remember((collection.to_owned(), id.clone()));
        }
    }

    fn remember(&mut self, key: (String, String)) {
        if self.seen.len() >= SEEN_VISIBLE {
            self.seen.clear();
        }
        self.seen.insert(key);
    }

    /// What `who` may see of `ev` under `rule` (`None`: the collection has no rule).
    pub(super) fn classify(
        &mut self,
        rule: Option<&ReadRule>,
        who: &Principal,
        ev: &HubEvent,
    ) -> Seen {
        #[derive(Deserialize)]
        struct Env {
            data: Data,
        }
        #[derive(Deserialize)]
        struct Data {
            resource_id: String,
            #[serde(default)]
            resource_data: Option<serde_json::Value>,
        }
        let Some(rule) = rule else {
            return Seen::Visible;
        };
        let Some(user) = visibility::user_of(who) else {
            return Seen::Hidden;
        };
        let Ok(Env { data }) = serde_json::from_str::<Env>(ev.text.as_str()) else {
            return Seen::Hidden;
        };
        let collection = collection_of(&ev.topic);
        let key = (collection.to_owned(), data.resource_id);
        let Some(d) = data.resource_data else {
            // A delete: told only to a connection that saw the resource.
            return match self.seen.remove(&key) {
                true => Seen::Visible,
                false => Seen::Hidden,
            };
        };
        // Parsed once per collection and credentials, not per event.
        let filter = self
            .filters
            .entry(key.0.clone())
            .or_insert_with(|| rule.matcher(user));
        if filter.as_ref().is_some_and(|f| f.matches(&d)) {
            self.remember(key);
            Seen::Visible
        } else if self.seen.remove(&key) {
            Seen::Left
        } else {
            Seen::Hidden
        }
    }
}
