//! `cellwatch uninstall`: remove everything the agent pinned under its bpffs directory.
//! Unpinning a link detaches its program once no process holds it.
#![forbid(unsafe_code)]

use std::{fs, io, path::Path};

#[derive(Debug, thiserror::Error)]
#[error("cannot remove {path}: {source}")]
pub struct UninstallError {
    path: String,
    #[source]
    source: io::Error,
}

/// Removes the pin directory; returns how many pinned objects were removed (0 when
/// there was nothing).
pub fn uninstall(dir: &Path) -> Result<usize, UninstallError> {
    let err = |p: &Path| {
        let path = p.display().to_string();
        move |source| UninstallError { path, source }
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(dir)(e)),
        Ok(_) => {}
    }
    let mut removed = 0;
    remove_tree(dir, &mut removed, &err)?;
    Ok(removed)
}

fn remove_tree<F, G>(dir: &Path, removed: &mut usize, err: &F) -> Result<(), UninstallError>
where
    F: Fn(&Path) -> G,
    G: FnOnce(io::Error) -> UninstallError,
{
    for entry in fs::read_dir(dir).map_err(err(dir))? {
        let path = entry.map_err(err(dir))?.path();
        if path.is_dir() {
            remove_tree(&path, removed, err)?;
        } else {
            fs::remove_file(&path).map_err(err(&path))?;
            *removed += 1;
        }
    }
    fs::remove_dir(dir).map_err(err(dir))
}
