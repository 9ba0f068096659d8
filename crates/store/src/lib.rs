//! keyward's persistence on SQLite and PostgreSQL. Every mutation runs in one short
//! transaction with its audit event and idempotency record (its envelope); every query
//! inside it goes through the transaction handle.
//!
//! By concern: `db` the connection, transactions and error kinds; `lookup` the cache
//! misses' reads and their own connections; `keys` the keys and their secrets;
//! `envelope` what every mutation records besides its effect; `ledger` balances and
//! their ledger entries; `credits` what callers see of them; `charge` the batched
//! debits of verifications; `holds` credit holds, their settlement and expiry sweep;
//! `refill` refill schedules; `usage` usage counters; `rate`
//! shared rate-limit buckets; `rpc_keys` RPC provider keys; `roles` roles and the keys holding them; `changes` cross-replica
//! change notifications; `audit` reading the audit log; `outbox` events and their
//! deliveries; `webhooks` webhook endpoints; `expiry` the sweep for expiry events;
//! `alerts` the balance alerts (`credits.low`, `credits.exhausted`); `pools` owners'
//! credit pools, accounts their pooled keys share.

#![forbid(unsafe_code)]

mod alerts;
mod audit;
mod changes;
mod charge;
mod convert;
mod credits;
mod db;
pub mod entity;
mod envelope;
mod expiry;
mod holds;
mod keys;
mod ledger;
mod lookup;
mod outbox;
mod pools;
mod rate;
mod refill;
mod roles;
mod rpc_keys;
mod sql;
mod usage;
mod webhooks;

pub use crate::{
    audit::{AuditQuery, AuditTargets},
    changes::{Change, ChangeListener},
    charge::Charged,
    credits::{CreditView, LedgerQuery},
    db::{PoolSettings, Store, is_unavailable},
    envelope::Mutation,
    holds::{HoldQuery, HoldRequest, HoldScope},
    keys::{KeyRecord, KeyUpdate, ListQuery, NewSecret, StoredSecret},
    outbox::{AttemptResult, Backlog, Claimed, Room},
    rate::{Granted, Lease, Slice},
    rpc_keys::RpcKeyQuery,
    usage::{HourlyUsage, UsageBatch, UsageScope},
    webhooks::{Attempt, AttemptQuery},
};
