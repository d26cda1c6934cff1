//! `kernsight cleanup`: removes the maps kernsight pinned, for good (uninstalling, or starting
//! the counters again from zero). Programs need no cleanup: they detach when the agent exits.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{bpf::pins, config::Config};

#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// The pin directory; default: `bpf.pin_dir` of `--config`, or of the embedded config.
    #[arg(long, env = "KERNSIGHT_PIN_DIR", value_parser = crate::cli::path_or_empty())]
    pin_dir: Option<PathBuf>,
    /// The configuration file whose `bpf.pin_dir` to clean.
    #[arg(long, env = "KERNSIGHT_CONFIG")]
    config: Option<PathBuf>,
}

pub fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let dir = match (args.pin_dir, args.config) {
        (Some(dir), _) => dir,
        (None, Some(path)) => Config::from_file(&path)?.bpf.pin_dir,
        (None, None) => Config::embedded().bpf.pin_dir,
    };
    if dir.as_os_str().is_empty() {
        println!("pinning is off in this configuration (bpf.pin_dir is empty): nothing to remove");
        return Ok(());
    }
    let removed = pins::remove_all(&dir)
        .with_context(|| format!("cleaning {}: stop the agent first if it runs", dir.display()))?;
    println!("removed {removed} pinned maps from {}", dir.display());
    Ok(())
}
