//! `netbeast lb`: load-balanced services in the data plane (DESIGN §10).

pub mod maglev;
