//! Ad-hoc tracing (`kernsight trace`): the filter language, record decoding, aggregations and
//! output formats.

pub mod aggregate;
pub mod enrich;
pub mod filter;
pub mod output;
pub mod presets;
pub mod record;
pub mod session;
pub mod syscall_args;
