//! Files in the agent's state directory, written so that a crash or a power
//! cut leaves either the old file or the new one, never half of one: a
//! temporary file beside it, synced, then renamed over it. Readable by root
//! only (0600): the directory holds the appliance's credential.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, dir.join(name))
}

/// Removes `name` from `dir`; one that is not there is removed already.
pub fn remove(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_written_file_replaces_the_old_one_whole_and_only_root_reads_it() {
        let dir = std::env::temp_dir().join(format!("vpcmesh-state-file-{}", std::process::id()));
        write_atomically(&dir, "x.json", b"old").unwrap();
        write_atomically(&dir, "x.json", b"new").unwrap();
        assert_eq!(std::fs::read(dir.join("x.json")).unwrap(), b"new");
        assert!(!dir.join("x.json.tmp").exists());
        let mode = std::fs::metadata(dir.join("x.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        remove(&dir, "x.json").unwrap();
        remove(&dir, "x.json").unwrap();
        assert!(!dir.join("x.json").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
