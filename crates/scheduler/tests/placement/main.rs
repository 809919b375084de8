//! Placement decisions against cluster views built by the harness.

mod harness;

mod accounting;
mod concurrency;
mod constraints;
mod ports;
mod properties;
mod reasons;
mod sampling;
mod status;
mod strategies;
