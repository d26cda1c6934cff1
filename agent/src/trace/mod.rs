//! Ad-hoc tracing (`kernsight trace`): the filter language, aggregations and output formats.

pub mod filter;
pub mod value;
