//! Fixtures shared by the unit tests.

use crate::crd::{MetaStore, MetaStoreSpec};

/// MetaStore `demo` in namespace `prod`, 3 replicas, at generation 4.
pub(crate) fn demo() -> MetaStore {
    let spec: MetaStoreSpec =
        serde_json::from_value(serde_json::json!({"replicas": 3})).expect("a valid spec");
    let mut m = MetaStore::new("demo", spec);
    m.metadata.namespace = Some("prod".into());
    m.metadata.generation = Some(4);
    m
}
