//! sea-orm entities, one module per table. They follow the migrations; they are not the domain.

mod events;
mod holds;
mod roles;

pub use self::{
    events::{expiry_notice, webhook_attempt, webhook_delivery, webhook_endpoint, webhook_event},
    holds::{credit_hold, credit_hold_amount},
    roles::{api_key_role, role},
};

/// `api_keys`: one row per key; `number` is the stable integer id and the keyset order.
pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub number: i64,
        #[sea_orm(unique)]
        pub id: Uuid,
        pub name: String,
        pub mask: String,
        pub owner: String,
        pub creator: String,
        pub organization_id: String,
        pub organization_name: String,
        pub environment: String,
        pub scopes: String,
        pub networks: String,
        pub status: String,
        pub usage_limited: bool,
        pub metadata: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub deleted_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
        pub rate_limits: String,
        /// `key` or `owner`: whose balances its verifications spend.
        pub credit_source: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `api_key_secrets`: keyed hashes of a key's secrets; more than one only during a rotation grace period.
pub mod api_key_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_key_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub secret_hash: String,
        pub hash_version: i64,
        pub key_id: Uuid,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(belongs_to = "super::api_key::Entity", from = "Column::KeyId", to = "super::api_key::Column::Id")]
        ApiKey,
    }

    impl Related<super::api_key::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::ApiKey.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// `audit_events`: append-only record of every mutation.
pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub actor: String,
        pub action: String,
        pub target: String,
        pub request_id: Option<String>,
        pub outcome: String,
        pub occurred_at: DateTimeUtc,
        /// Owner of the key the event targets, if it targets a key.
        pub key_owner: Option<String>,
        /// Organisation of the key the event targets, if it targets a key.
        pub key_organization: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `idempotency_records`: the first outcome of each (actor, request_id).
pub mod idempotency_record {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_records")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub actor: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub operation: String,
        pub key_id: Uuid,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `quota_locks`: a row per (owner, environment) whose update serialises quota checks.
pub mod quota_lock {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "quota_locks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub environment: String,
        pub generation: i64,
        /// Keys of the owner in the environment that are not revoked.
        pub held: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `usage_counters`: verifications per key, hour and outcome.
pub mod usage_counter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "usage_counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub bucket_start: DateTimeUtc,
        #[sea_orm(primary_key, auto_increment = false)]
        pub outcome: String,
        pub count: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rpc_provider_keys`: upstream credentials, their secrets sealed under the master key.
pub mod rpc_provider_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rpc_provider_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub network: String,
        pub provider: String,
        pub description: String,
        pub enabled: bool,
        pub sealed_secret: String,
        pub master_key_id: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `master_key_canary`: one value sealed under the master key, checked at start.
pub mod master_key_canary {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "master_key_canary")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub master_key_id: String,
        pub sealed: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credit_balances`: a usage-limited key's balance per unit.
pub mod credit_balance {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_balances")]
    pub struct Model {
        /// The account: a key, or an owner's pool (`owner_credit_pools`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub unit: String,
        pub balance: i64,
        /// What live holds reserve of the balance; never above it.
        pub held: i64,
        /// Whether `credits.exhausted` fires when the balance reaches 0 (it is above 0).
        pub exhausted_armed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credit_thresholds`: a key's `credits.low` threshold per unit, armed while the balance
/// is at or above it.
pub mod credit_threshold {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_thresholds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub unit: String,
        pub threshold: i64,
        pub armed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credit_transactions`: the append-only ledger of balance changes.
pub mod credit_transaction {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_transactions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The account whose balance changed: a key, or an owner's pool.
        pub key_id: Uuid,
        pub unit: String,
        pub delta: i64,
        pub balance_after: i64,
        pub reason: String,
        pub request_id: Option<String>,
        pub actor: String,
        pub created_at: DateTimeUtc,
        /// The hold this entry settles, if any.
        pub hold_id: Option<Uuid>,
        /// On a pool's entry, the key whose verification spent.
        pub spent_by: Option<Uuid>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `charge_records`: whether the first charge of each request id went through, and what
/// that charge was (its fingerprint).
pub mod charge_record {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "charge_records")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub charged: bool,
        pub created_at: DateTimeUtc,
        /// [`keyward_core::credit::Charge::fingerprint`]; `None` on rows written before it.
        pub fingerprint: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credit_refills`: refill schedules and when each next applies.
pub mod credit_refill {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_refills")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub unit: String,
        pub amount: i64,
        pub period: String,
        pub next_refill_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credit_spend_counters`: credits presented as cost per key, hour and unit.
pub mod credit_spend_counter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_spend_counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub bucket_start: DateTimeUtc,
        #[sea_orm(primary_key, auto_increment = false)]
        pub unit: String,
        pub amount: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `owner_rate_limits`: rate limits shared by every key of an owner (JSON, as on keys).
pub mod owner_rate_limit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "owner_rate_limits")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner: String,
        pub rate_limits: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `owner_credit_pools`: the owners' pools there are; their balances are `credit_balances`
/// rows keyed by the pool's id.
pub mod owner_credit_pool {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "owner_credit_pools")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub owner: String,
        pub environment: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
