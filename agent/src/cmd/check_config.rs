//! `cellwatch check-config FILE`: a summary and exit 0, or every problem located.
#![forbid(unsafe_code)]

use std::path::Path;

use agent_core::{
    config::{Config, ConfigError, Problem},
    ids::CellIds,
    policy::compile,
};

pub(crate) fn check_config(file: &Path) -> Result<(), ConfigError> {
    let cfg = Config::load(file)?;
    // What the kernel's maps would hold: a config they cannot hold is refused here too.
    let shown = file.display().to_string();
    let compiled = compile(&cfg, &mut CellIds::default()).map_err(|e| ConfigError::Invalid {
        path: shown.clone(),
        problems: vec![Problem { line: 1, column: 1, message: e.to_string() }],
    })?;
    compiled.fits().map_err(|e| e.located(&shown))?;
    for w in cfg.warnings(std::time::SystemTime::now()) {
        eprintln!("{shown}:{}:{}: warning: {}", w.line, w.column, w.message);
    }
    println!("{}: ok: {}", file.display(), summary(&cfg));
    Ok(())
}

fn summary(cfg: &Config) -> String {
    let globals: Vec<_> = cfg.cells.iter().filter(|c| c.global).map(|c| c.name.as_str()).collect();
    let v6 = cfg
        .cells
        .iter()
        .flat_map(|c| &c.cidrs)
        .filter(|n| matches!(n, agent_core::config::IpNet::V6(_)))
        .count();
    let enforced = match &cfg.enforce_cells {
        None => "all cells".to_owned(),
        Some(c) if c.is_empty() => "no cells".to_owned(),
        Some(c) => c.join(", "),
    };
    let drained: Vec<_> =
        cfg.cells.iter().filter(|c| c.drain.is_some()).map(|c| c.name.as_str()).collect();
    let temporary = cfg.allow.iter().filter(|r| r.until.is_some()).count();
    format!(
        "{} cells (global: {}), {} prefixes ({} IPv4, {} IPv6), {} allow rules, mode {} (enforce \
         applies to {}), external peers: {}, {} ignored ranges; drained: {}; temporary allow \
         rules: {}",
        cfg.cells.len(),
        if globals.is_empty() { "none".to_owned() } else { globals.join(", ") },
        cfg.prefix_count(),
        cfg.prefix_count() - v6,
        v6,
        cfg.allow.len(),
        cfg.mode,
        enforced,
        cfg.external,
        cfg.ignore_cidrs.len(),
        if drained.is_empty() { "none".to_owned() } else { drained.join(", ") },
        temporary,
    )
}
