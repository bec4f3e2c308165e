//! The `ember` command's library: its arguments, the API client and client verbs,
//! `serve`, `ember bench`, and the workloads the benchmarks and tests deploy.

pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod gpu_commands;
pub mod inspect;
pub mod serve;
pub mod shell;
mod table;
pub mod token_commands;
pub mod workloads;
