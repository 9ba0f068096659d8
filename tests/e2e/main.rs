//! End-to-end tests: each starts the real server on an ephemeral port, against SQLite
//! and against PostgreSQL (a fresh database per test), and calls it with the generated
//! tonic client.

mod helpers;

mod audit_log;
mod backfill;
mod cache;
mod connections;
mod contract;
mod credit_alerts;
mod credits;
mod edge;
mod edge_listener;
mod escalation;
mod event_replicas;
mod events;
mod expired;
mod exposure;
mod gateway;
mod hardening;
mod hold_batches;
mod hold_races;
mod holds;
mod idempotency;
mod jwt;
mod lifecycle;
mod masumi;
mod masumi_clients;
mod miss_batches;
mod openapi_rules;
mod operations;
mod outage_window;
mod owner_scale;
mod pagination;
mod pool_races;
mod pools;
mod providers;
mod rate_buckets;
mod rate_limits;
mod receiver;
mod resilience;
mod rights;
mod role_events;
mod role_replicas;
mod roles;
mod rpc_keys;
mod scope_queries;
mod tls;
mod traces;
mod transport;
mod usage;
mod validation;
mod verification;
mod webhook_wildcard;
mod webhooks;
