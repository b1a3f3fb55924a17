//! `cellwatch uninstall [--bpffs DIR]`: remove what `run` pinned, and say what was done.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::kernel::unpin::{self, Removed, UninstallError};

pub(crate) fn uninstall(bpffs: &Path) -> Result<(), UninstallError> {
    match unpin::uninstall(bpffs)? {
        Removed { objects: 0, .. } => println!("nothing to uninstall under {}", bpffs.display()),
        Removed { objects, still_loaded, kept_dir } => {
            println!("removed {objects} pinned objects under {}", bpffs.display());
            if kept_dir {
                println!(
                    "the directory itself stays, empty: its parent is not this user's to write"
                );
            }
            if still_loaded > 0 {
                println!(
                    "{still_loaded} programs are detached but still held open by a running \
                     process (a `cellwatch run` on this directory?); they go when it exits"
                );
            }
        }
    }
    Ok(())
}
