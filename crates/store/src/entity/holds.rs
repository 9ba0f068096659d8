//! Credit holds: what VerifyApiKey's `hold` reserved, until captured, released or expired.

/// `credit_holds`: one hold; `state` leaves `live` once, under a compare-and-set.
pub mod credit_hold {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_holds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub key_id: Uuid,
        pub actor: String,
        pub request_id: Option<String>,
        pub state: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub settled_at: Option<DateTimeUtc>,
        pub settle_request_id: Option<String>,
        /// The owner's pool it reserves from, for a pooled key; else the key's own balances.
        pub pool_id: Option<Uuid>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `credit_hold_amounts`: what a hold reserved per unit, and what its capture charged.
pub mod credit_hold_amount {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credit_hold_amounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hold_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub unit: String,
        pub amount: i64,
        pub captured: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
