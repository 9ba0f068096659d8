//! AIP-158 pagination: default and coerced page sizes, and tokens that survive churn.

use std::collections::{BTreeSet, HashMap};

use keyward_proto::v1;

use crate::helpers::{Backend, admin, assert_invalid, both, spawn_with};

async fn pages_survive_inserts_and_deletes(backend: Backend) {
    let app =
        spawn_with(backend, |config| config.environments = vec!["production:kw_live:1000".parse().unwrap()]).await;
    let mut client = app.client.clone();
    let mut originals = vec![];
    for _ in 0..250 {
        originals.push(app.create_key("pager", &[]).await.0.id);
    }
    let list = |page_size, page_token: String| v1::ListApiKeysRequest {
        page_size,
        page_token,
        owner: "pager".into(),
        ..Default::default()
    };

    let default_page = client.list_api_keys(admin(list(0, String::new()))).await.unwrap().into_inner();
    assert_eq!(default_page.api_keys.len(), 10, "0 means the default of 10");
    let coerced = client.list_api_keys(admin(list(1000, String::new()))).await.unwrap().into_inner();
    assert_eq!(coerced.api_keys.len(), 100, "1000 is coerced down to 100");
    let other_filter = v1::ListApiKeysRequest { owner: "someone-else".into(), ..list(7, coerced.next_page_token) };
    assert_invalid(&client.list_api_keys(admin(other_filter)).await.unwrap_err(), "page_token");

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut deleted = BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client.list_api_keys(admin(list(7, token))).await.unwrap().into_inner();
        assert!(page.api_keys.len() <= 7);
        for key in &page.api_keys {
            *seen.entry(key.id.clone()).or_default() += 1;
        }
        // Churn between pages: a new key, and a delete of one not yet listed.
        app.create_key("pager", &[]).await;
        if let Some(victim) = originals.iter().rev().find(|id| !seen.contains_key(*id) && !deleted.contains(*id)) {
            let request = v1::DeleteApiKeyRequest { id: victim.clone(), request_id: String::new() };
            client.delete_api_key(admin(request)).await.unwrap();
            deleted.insert(victim.clone());
        }
        pages += 1;
        assert!(pages < 200, "pagination does not end");
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(seen.values().all(|&count| count == 1), "no key is listed twice");
    for id in originals.iter().filter(|id| !deleted.contains(*id)) {
        assert_eq!(seen.get(id), Some(&1), "key {id} existed throughout and must be listed once");
    }
    assert!(!deleted.is_empty());
    app.stop().await;
}
both!(pages_survive_inserts_and_deletes);
