//! keyward's schema history. Migrations are frozen: they name tables and columns as
//! strings, never through entities, and each runs in a transaction on SQLite and
//! PostgreSQL alike. Change the schema only by adding a migration.

#![forbid(unsafe_code)]

use sea_orm_migration::prelude::*;

mod m20261124_000001_create_api_keys;
mod m20261124_000002_create_usage_counters;
mod m20261124_000003_create_rpc_provider_keys;
mod m20261124_000004_create_credits;
mod m20261201_000005_repair_usage_overflow;
mod m20261201_000006_index_live_keys;
mod m20261201_000007_fingerprint_charge_records;
mod m20261202_000008_create_rate_limits;
mod m20261210_000009_create_events;
mod m20261211_000010_create_credit_alerts;
mod m20261212_000011_create_charge_function;
mod m20261220_000012_create_event_sequences;
mod m20261221_000013_create_roles;
mod m20261222_000014_create_credit_holds;
mod m20261223_000016_index_owner_reads;
mod m20261224_000015_create_owner_credit_pools;
mod m20261225_000017_create_hold_function;

/// Runs every migration in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_api_keys::Migration),
            Box::new(m20261124_000002_create_usage_counters::Migration),
            Box::new(m20261124_000003_create_rpc_provider_keys::Migration),
            Box::new(m20261124_000004_create_credits::Migration),
            Box::new(m20261201_000005_repair_usage_overflow::Migration),
            Box::new(m20261201_000006_index_live_keys::Migration),
            Box::new(m20261201_000007_fingerprint_charge_records::Migration),
            Box::new(m20261202_000008_create_rate_limits::Migration),
            Box::new(m20261210_000009_create_events::Migration),
            Box::new(m20261211_000010_create_credit_alerts::Migration),
            Box::new(m20261212_000011_create_charge_function::Migration),
            Box::new(m20261220_000012_create_event_sequences::Migration),
            Box::new(m20261221_000013_create_roles::Migration),
            Box::new(m20261222_000014_create_credit_holds::Migration),
            Box::new(m20261224_000015_create_owner_credit_pools::Migration),
            Box::new(m20261223_000016_index_owner_reads::Migration),
            Box::new(m20261225_000017_create_hold_function::Migration),
        ]
    }
}
pub use sea_orm_migration::MigratorTrait;
