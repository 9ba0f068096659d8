//! Role changes are webhook events (`role.created`, `role.updated`, `role.deleted`),
//! written in the change's transaction: a refused change makes none.

use keyward_proto::v1::{self, webhook_service_client::WebhookServiceClient};

use crate::{
    events::fast,
    helpers::{Backend, admin, both, spawn_with},
    receiver::{Receiver, types},
    roles::{create, key_with_roles, role, roles, set_scopes},
    webhooks::{self, endpoint},
};

async fn role_changes_are_events(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let receiver = Receiver::start().await;
    let kinds = ["role.created", "role.updated", "role.deleted"];
    let created = WebhookServiceClient::new(app.channel.clone())
        .create_webhook_endpoint(admin(webhooks::create(endpoint(&receiver.url(), &kinds))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&created.secret);
    let mut client = roles(&app.channel);
    client.create_role(admin(create(role("ops", "acme", &["ops.read"])))).await.unwrap();
    key_with_roles(&app.client, "acme", &[], &["ops"]).await;
    client.update_role(admin(set_scopes("ops", "acme", &["ops.write"]))).await.unwrap();
    let in_use = v1::DeleteRoleRequest { name: "ops".into(), owner: "acme".into(), force: false };
    assert!(client.delete_role(admin(in_use)).await.is_err(), "refused: a key holds it");
    client
        .delete_role(admin(v1::DeleteRoleRequest { name: "ops".into(), owner: "acme".into(), force: true }))
        .await
        .unwrap();

    let mut deliveries = receiver.wait_for(3).await;
    deliveries.sort_by_key(|delivery| delivery["payload"]["sequence"].as_i64());
    assert_eq!(types(&deliveries), kinds);
    assert!(receiver.invalid().is_empty());
    let data = |index: usize| deliveries[index]["payload"]["data"].clone();
    assert_eq!(data(0)["role"]["scopes"], serde_json::json!(["ops.read"]));
    assert_eq!(data(1)["previousRole"]["scopes"], serde_json::json!(["ops.read"]));
    assert_eq!(data(1)["role"]["scopes"], serde_json::json!(["ops.write"]));
    assert_eq!(data(1)["keysChanged"], 1);
    assert_eq!(data(2)["keysChanged"], 1, "the forced delete took it from its one key");
    assert_eq!(data(2)["actor"], data(0)["actor"]);
    app.stop().await;
}
both!(role_changes_are_events);
