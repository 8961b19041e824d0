//! `writeback state export` / `state import`: an existing single-host installation (SQLite)
//! moves to PostgreSQL, or back, keeping its links, watermarks and history: the next cycle is
//! a delta cycle, not a full resync.
//!
//! Import writes the new state only while no instance leads it (it takes the lead for the
//! import), and only into a state without links or runs.

use std::io::{Read, Write};
use std::path::Path;

use writeback_store::{Export, Store};

use crate::config::Config;
use crate::error::CycleError;
use crate::exit;

pub async fn export(cfg: &Config, file: &Path) -> Result<u8, CycleError> {
    let target = cfg.state()?;
    let Some(store) = Store::open_read_only(&target).await? else {
        return Err(CycleError::Config(format!(
            "there is no state at {target} to export (or an older one: run a sync first)"
        )));
    };
    let data = store.export().await?;
    store.close().await;
    let text = serde_json::to_string(&data).map_err(|e| CycleError::Other(format!("export: {e}")))?;
    if file == Path::new("-") {
        println!("{text}");
    } else {
        writeback_store::private_file(file)
            .and_then(|()| std::fs::File::create(file))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| CycleError::Other(format!("cannot write {}: {e}", file.display())))?;
        eprintln!("exported from {target} to {}: {}", file.display(), data.describe());
    }
    Ok(exit::OK)
}

pub async fn import(cfg: &Config, file: &Path) -> Result<u8, CycleError> {
    let mut text = String::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| CycleError::Other(format!("cannot read {}: {e}", file.display())))?;
    let data: Export = serde_json::from_str(&text)
        .map_err(|e| CycleError::Other(format!("{} is not a `writeback state export`: {e}", file.display())))?;
    let lead = crate::lead::for_command(cfg, "Stop every writeback daemon on this state for the import").await?;
    let target = cfg.state()?;
    let mut store = Store::open(&target).await?;
    store.fenced(lead.fence(), &crate::lead::host());
    let done = store.import(&data).await;
    store.close().await;
    lead.release().await;
    done?;
    eprintln!("imported into {target}: {}", data.describe());
    Ok(exit::OK)
}
