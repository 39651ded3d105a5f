//! The integration tests: one binary (`cargo test --test it`), one module per area, against
//! the real brokers of the machine (RabbitMQ 127.0.0.1:5672, NATS with JetStream
//! 127.0.0.1:4222; Kafka: see `kafka`). One binary links the crate and its dependencies once
//! instead of once per area, and shares one set of helpers (`common`).
//!
//! Every test that needs the process to itself (a global tracing subscriber, signals) runs the
//! `callbridge` binary as a child process instead (`common::Bridge`).

mod common;

mod admin;
mod agent_events;
mod cli;
mod console;
mod deliveries;
mod delivery;
mod golden;
mod http;
mod kafka;
mod layout;
mod nats;
mod preflight;
mod rabbitmq;
mod reconcile;
mod security;
mod shared_ledger;
mod spool;
mod telemetry;
