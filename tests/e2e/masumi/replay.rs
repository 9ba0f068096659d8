//! Seed 001's own request examples, sent as written.

use super::*;

/// Every request example of seed 001 as written: its headers (`token: YOUR_API_KEY` filled
/// in; `Host` is the example's placeholder and left to the client) and its bodies
/// (placeholders filled with real ids).
async fn masumi_seed_examples_replay(backend: Backend) {
    let app = spawn(backend).await;
    let masumi = Masumi::new(&app);
    let get = |path: &'static str| {
        let rest = masumi.rest.clone();
        async move { rest.send("GET", path, &[("token", ADMIN_KEY), ("Accept", "*/*")], None).await }
    };
    let send = |method: &'static str, body: String| {
        let rest = masumi.rest.clone();
        async move {
            let headers = [("token", ADMIN_KEY), ("Content-Type", "application/json"), ("Accept", "*/*")];
            rest.send(method, KEY, &headers, Some(&body)).await
        }
    };

    // GET /api-key-status
    let status = get(STATUS).await;
    assert_eq!(keys(success(&status)), sorted(&STATUS_FIELDS));
    assert_key_types(&status.body["data"]);

    // POST /api-key, its body as written.
    let created = send(
        "POST",
        "{\n  \"usageLimited\": \"true\",\n  \"UsageCredits\": [\n    {\n      \"unit\": \"\",\n      \"amount\": \"10000000\"\n    }\n  ],\n  \"permission\": \"Admin\"\n}".to_owned(),
    )
    .await;
    assert_eq!(keys(success(&created)), sorted(&CHANGED_FIELDS));
    assert_key_types(&created.body["data"]);

    // GET /api-key
    let list = get(KEY).await;
    let listed = success(&list)["ApiKeys"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    listed.iter().for_each(|k| {
        assert_eq!(keys(k), sorted(&LISTED_FIELDS));
        assert_key_types(k);
    });

    // PATCH /api-key: its body takes 10000000 of `usdm_policy_and_asset_id` away, so the
    // key it names holds that much.
    let (id, _) = masumi
        .create(json!({"UsageCredits": [{"unit": "usdm_policy_and_asset_id", "amount": "10000000"}], "permission": "Admin"}))
        .await;
    let body = "{\n  \"id\": \"unique_cuid_v2_of_entry_to_update\",\n  \"token\": \"api_key_to_change_to\",\n  \"UsageCreditsToAddOrRemove\": [\n    {\n      \"unit\": \"\",\n      \"amount\": \"10000000\"\n    },\n    {\n      \"unit\": \"usdm_policy_and_asset_id\",\n      \"amount\": \"-10000000\"\n    }\n  ],\n  \"status\": \"Active\"\n}";
    let patched = send("PATCH", body.replace("unique_cuid_v2_of_entry_to_update", &id)).await;
    assert_eq!(keys(success(&patched)), sorted(&CHANGED_FIELDS));
    assert_key_types(&patched.body["data"]);
    assert_eq!(masumi.balances("api_key_to_change_to").await, json!({"": "10000000"}), "a unit at zero is gone");

    // DELETE /api-key
    let body = "{\n  \"id\": \"id_or_apiKey_unique_cuid_v2_of_entry_to_delete\"\n}";
    let deleted = send("DELETE", body.replace("id_or_apiKey_unique_cuid_v2_of_entry_to_delete", &id)).await;
    let mut fields = CHANGED_FIELDS.to_vec();
    fields.push("deletedAt");
    assert_eq!(keys(success(&deleted)), sorted(&fields));
    assert_eq!(deleted.body["data"]["status"], "Revoked");

    // GET /rpc-api-keys
    let rpc = get(RPC).await;
    assert_eq!(rpc_success(&rpc)["RpcProviderKeys"], json!([]));
    app.stop().await;
}
both!(masumi_seed_examples_replay);
