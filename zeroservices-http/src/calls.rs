//! Every resource request the HTTP node sends on behalf of a caller, REST route or action
//! route alike: authorization, the collection's read rule (see `visibility`) applied to the
//! parsed arguments (the same parse the provider applies), and metrics.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::Value;
use zeroservices_core::resources::StandardArgs;
use zeroservices_core::resources::{Action, ResourceRequest};

use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::visibility::{self, ReadRule};
use crate::AppState;

impl AppState {
    /// Runs a resource request with authorization, the collection's read rule and metrics;
    /// answers the result's JSON.
    pub(crate) async fn call(
        &self,
        who: &Principal,
        req: ResourceRequest,
    ) -> Result<Bytes, ApiError> {
        match self.read_rules.get(&req.collection) {
            None => self.call_plain(who, req).await,
            Some(rule) => self.call_ruled(who, rule, req).await,
        }
    }

    /// [`AppState::call`] on a collection with a read rule.
    async fn call_ruled(
        &self,
        who: &Principal,
        rule: &ReadRule,
        mut req: ResourceRequest,
    ) -> Result<Bytes, ApiError> {
        self.auth
            .authorize(who, &req.collection, Access::Action(&req.action))?;
        let user = visibility::user_of(who).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("sign in to use {:?}", req.collection),
            )
        })?;
        let Some(id) = req.resource_id.clone() else {
            return self.call_ruled_collection(who, rule, user, req).await;
        };
        if req.action.is_standard() {
            // Parsed once here, checked, and sent on in the form the provider parses.
            let args = StandardArgs::parse(&req.action, std::mem::take(&mut req.args))?;
            if let StandardArgs::Patch(update) = &args {
                rule.check_patch(user, update)?;
            }
            req.args = args.into_value()?;
        }
        if req.action == Action::Get {
            let json = self.call_plain(who, req).await?;
            return if visible(rule, user, &json) {
                Ok(json)
            } else {
                Err(hidden())
            };
        }
        if !self.visible_to(rule, user, &req.collection, &id).await? {
            return Err(hidden());
        }
        self.call_plain(who, req).await
    }

    /// A collection-level request under a read rule: list and create only (a custom action
    /// could read anything).
    async fn call_ruled_collection(
        &self,
        who: &Principal,
        rule: &ReadRule,
        user: &str,
        mut req: ResourceRequest,
    ) -> Result<Bytes, ApiError> {
        if !matches!(req.action, Action::List | Action::Create) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "collection actions are not available on a collection with a read rule",
            ));
        }
        match StandardArgs::parse(&req.action, std::mem::take(&mut req.args))? {
            StandardArgs::List(mut q) => {
                // The rule, parsed once when configured and checked then, joins the parsed
                // filter: nothing is parsed again here.
                let mine = rule.matcher(user).ok_or_else(|| {
                    ApiError::from(zeroservices_core::Error::Internal("read rule".into()))
                })?;
                q.filter = std::mem::take(&mut q.filter).and(mine);
                req.args = StandardArgs::List(q).into_value()?;
                self.call_plain(who, req).await
            }
            StandardArgs::Create {
                resource_id,
                mut resource_data,
            } => {
                rule.own_create(user, &mut resource_data)?;
                let chosen = resource_id.clone();
                req.args = StandardArgs::Create {
                    resource_id,
                    resource_data,
                }
                .into_value()?;
                let collection = req.collection.clone();
                match (self.call_plain(who, req).await, chosen) {
                    // A taken id the caller may not see answers as a missing one would on
                    // every other route: the 409 would tell that it exists.
                    (Err(e), Some(id)) if e.status() == StatusCode::CONFLICT => {
                        match self.visible_to(rule, user, &collection, &id).await? {
                            true => Err(e),
                            false => Err(hidden()),
                        }
                    }
                    (res, _) => res,
                }
            }
            _ => Err(ApiError::from(zeroservices_core::Error::Internal(
                "a collection-level request parsed as another action".into(),
            ))),
        }
    }

    /// Whether resource `id` exists and `user` may see it (a missing one is not visible).
    async fn visible_to(
        &self,
        rule: &ReadRule,
        user: &str,
        collection: &str,
        id: &str,
    ) -> Result<bool, ApiError> {
        let get = ResourceRequest::new(collection, Action::Get, Value::Null).on(id);
        match self.node.send_json(get).await {
            Ok(json) => Ok(visible(rule, user, &json)),
            Err(zeroservices_core::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(ApiError::from(e)),
        }
    }

    /// [`AppState::call`] without the read rule.
    pub(crate) async fn call_plain(
        &self,
        who: &Principal,
        req: ResourceRequest,
    ) -> Result<Bytes, ApiError> {
        self.auth
            .authorize(who, &req.collection, Access::Action(&req.action))?;
        let start = Instant::now();
        let (collection, action) = (req.collection.clone(), req.action.clone());
        let res = self.node.send_json(req).await.map_err(ApiError::from);
        let status = match &res {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        };
        // Names of collections that do not exist come from clients: one series for them all,
        // so the metrics stay bounded (checked on 404 only, off the hot path).
        let label = if status == 404
            && !self.node.directory().has_seen(&collection)
            && !self.node.local_collections().contains(&collection)
        {
            "_unknown"
        } else {
            collection.as_str()
        };
        self.metrics
            .observe_request(label, action.as_str(), status, start.elapsed());
        res
    }
}

/// Whether the resource JSON `json` is visible to `user` under `rule`.
fn visible(rule: &ReadRule, user: &str, json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct One {
        resource_data: Value,
    }
    match (serde_json::from_slice::<One>(json), rule.matcher(user)) {
        (Ok(r), Some(f)) => f.matches(&r.resource_data),
        _ => false,
    }
}

/// What a resource hidden by a read rule answers: the same as a missing one.
fn hidden() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "resource not found")
}
