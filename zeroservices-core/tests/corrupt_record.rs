//! One record the decoder cannot read (written by hand, or deeper than serde_json's recursion
//! limit) never makes the rest of its collection unreadable: lists skip it, a `get` of it
//! answers the storage error.

use redb::{Database, TableDefinition};
use serde_json::json;
use zeroservices_core::query::ListQuery;
use zeroservices_core::{resources::Collection, store::EmbeddedStore};

#[tokio::test]
async fn a_list_skips_a_record_that_cannot_be_decoded() {
    let dir = std::env::temp_dir().join(format!("zs-corrupt-{}", std::process::id()));
    {
        let store = EmbeddedStore::open(&dir).expect("open");
        let power = store.collection("power");
        power
            .create(Some("good".into()), json!({"v": 1}))
            .await
            .expect("create");
        power
            .create(Some("bad".into()), json!({"v": 2}))
            .await
            .expect("create");
    }
    {
        let db = Database::create(dir.join("zeroservices.redb")).expect("db");
        let tx = db.begin_write().expect("tx");
        {
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new("collection:power");
            let mut t = tx.open_table(def).expect("table");
            let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
            t.insert("bad", format!(r#"{{"v": {deep}}}"#).as_bytes())
                .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let store = EmbeddedStore::open(&dir).expect("reopen");
    let power = store.collection("power");
    let page = power.list(&ListQuery::default()).await.expect("list");
    let ids: Vec<&str> = page.items.iter().map(|r| r.resource_id.as_str()).collect();
    assert_eq!(ids, vec!["good"]);
    assert!(
        power.get("bad").await.is_err(),
        "the bad record itself reads as an error"
    );
    drop((power, store));
    let _ = std::fs::remove_dir_all(&dir);
}
