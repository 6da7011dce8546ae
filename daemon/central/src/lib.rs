//! The central side of a Commeow Edge fleet: it receives every box's outbox events over
//! MQTT and stores each exactly once ([`store`]), acknowledging only what is committed
//! ([`service`]); the fleet admin reads them with the CLI (`commeow-central`).

pub mod reconcile;
pub mod service;
pub mod store;
