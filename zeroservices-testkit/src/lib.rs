//! # ZeroServices testkit
//!
//! The conformance cases every [`Medium`] and every [`Collection`] backend must pass, one async
//! function per case, and two macros that turn them into one `#[tokio::test]` per case for a
//! backend or medium: a failure names the behaviour (`filters`, `events`, ...), and each case
//! runs alone, on fresh media and collections.
//!
//! ```no_run
//! // in tests/conformance.rs of a backend crate (dev-dependencies: zeroservices-testkit, tokio)
//! mod memory {
//!     zeroservices_testkit::collection_suite!(zeroservices_testkit::collection_factory(|| {
//!         std::sync::Arc::new(zeroservices_core::store::MemoryCollection::new())
//!     }));
//! }
//! # fn main() {}
//! ```

pub mod collection;
pub mod medium;
pub mod nats;

use std::sync::Arc;

use futures::future::BoxFuture;
use zeroservices_core::medium::Inbox;
use zeroservices_core::{medium::Medium, resources::Collection, ClusterKey, Result};

/// Makes a fresh, empty collection.
pub type CollectionFactory = Box<dyn Fn() -> BoxFuture<'static, Arc<dyn Collection>> + Send + Sync>;

/// Makes a fresh, bound medium, sealing its messages with the cluster key given (if any).
pub type MediumFactory = Box<
    dyn Fn(Option<Arc<ClusterKey>>) -> BoxFuture<'static, Result<(Arc<dyn Medium>, Inbox)>>
        + Send
        + Sync,
>;

/// A [`CollectionFactory`] from a synchronous constructor.
pub fn collection_factory(
    make: impl Fn() -> Arc<dyn Collection> + Send + Sync + 'static,
) -> CollectionFactory {
    Box::new(move || {
        let c = make();
        Box::pin(async move { c })
    })
}

/// The failures of one case, reported together when it ends.
#[derive(Debug)]
pub struct Failures {
    case: &'static str,
    failed: Vec<String>,
    checked: usize,
}

impl Failures {
    /// No failure yet in `case`.
    pub fn new(case: &'static str) -> Failures {
        Failures {
            case,
            failed: Vec::new(),
            checked: 0,
        }
    }

    /// Records a failure.
    pub fn push(&mut self, failure: String) {
        self.checked += 1;
        self.failed.push(failure);
    }

    /// Records a check that passed.
    pub fn pass(&mut self) {
        self.checked += 1;
    }

    /// Records a check named `name`: a failure unless `ok`.
    pub fn check(&mut self, name: &str, ok: bool) {
        self.checked += 1;
        if !ok {
            self.failed.push(name.to_owned());
        }
    }

    /// Panics listing every failure, if any, and when no check ran (a case that checks
    /// nothing proves nothing).
    pub fn finish(self) {
        assert!(self.checked > 0, "{}: the case checked nothing", self.case);
        assert!(
            self.failed.is_empty(),
            "{}: {} failures:\n{}",
            self.case,
            self.failed.len(),
            self.failed.join("\n")
        );
    }
}

/// One `#[tokio::test]` per collection case, for the backend `$factory` (an expression of type
/// [`CollectionFactory`], evaluated in each test). Use it inside a module per backend.
#[macro_export]
macro_rules! collection_suite {
    ($factory:expr) => {
        $crate::collection_suite!(@cases $factory;
            filters, bad_filters, sort_skip_limit, projections, ids_and_conflicts, id_rules,
            not_found_and_deletes, large_nested_and_unknown, updates, bad_updates, links, events,
            custom_actions, schema, deep_documents);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let make: $crate::CollectionFactory = $factory;
                $crate::collection::$case(&make).await;
            }
        )*
    };
}

/// One `#[tokio::test]` per medium case, for the medium `$factory` (an expression of type
/// [`MediumFactory`], evaluated in each test). Use it inside a module per medium.
#[macro_export]
macro_rules! medium_suite {
    ($factory:expr) => {
        $crate::medium_suite!(@cases $factory;
            request_reply_both_ways, concurrent_requests_get_their_own_replies,
            unknown_peer_is_gone_at_once, silent_peer_times_out_on_time,
            dropped_request_is_answered_internal, ping_is_answered_by_the_medium,
            oversized_body_is_refused_before_sending, one_way_messages_arrive,
            events_reach_matching_subscribers_in_order, disconnected_peer_is_gone, cluster_key);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let make: $crate::MediumFactory = $factory;
                $crate::medium::$case(&make).await;
            }
        )*
    };
}
