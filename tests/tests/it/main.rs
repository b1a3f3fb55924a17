//! The privileged integration tests, one binary with a module per area (see
//! `tests/README.md`). Each area builds its addresses from its own block in
//! `cellwatch_tests::ranges`, so the areas' tests run side by side without counting each
//! other's connections. One area: `cargo test -p cellwatch-tests -- foundation::`.
#![expect(
    clippy::too_many_lines,
    reason = "a test is one story told start to end: it reads best whole, however long"
)]

mod alerting;
mod cells;
mod churn;
mod demo;
mod deploy;
mod drain;
mod drain_status;
mod enforce;
mod fleet;
mod foundation;
mod http;
mod ladder;
mod live;
mod prometheus;
mod report;
mod restart;
mod service_addr;
mod services;
mod startup;
mod telemetry;
mod top;
mod udp;
mod victoria;
