//! The kubelet's `AtomicWriter`: how configMap, secret, downwardAPI and projected volumes
//! change under a running container without it ever seeing half an update.
//!
//! ```text
//! <volume dir>/
//!   ..2026_11_23_22_30_00.123456789/   the payload, one directory per version
//!   ..data -> ..2026_11_23_22_30_00.123456789
//!   key    -> ..data/key                one link per top-level entry, made once
//! ```
//!
//! An update writes a new timestamped directory, points a fresh `..data_tmp` link at it and
//! renames it over `..data` (one atomic `rename`), then removes the old version. A reader
//! following `key` sees the old file or the new one, never a mix.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A file of the payload: its bytes and its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    pub mode: u32,
}

pub type Payload = BTreeMap<String, File>;

const DATA: &str = "..data";

/// Make `dir` show `payload`; nothing happens if it already does. Returns whether it changed.
pub fn write(dir: &Path, payload: &Payload) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join(DATA);
    let current = std::fs::read_link(&data_link).ok();
    if let Some(current) = &current {
        if same(&dir.join(current), payload) {
            return Ok(false);
        }
    }
    let version = format!("..{}", timestamp());
    let version_dir = dir.join(&version);
    std::fs::create_dir_all(&version_dir)?;
    for (path, file) in payload {
        let target = version_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
    }
    // Make the directory readable like the real one (0755 under a 0777-umask-free kubelet).
    std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755))?;
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&version, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;
    // The top-level links: one per first path component, pointing through `..data`.
    let wanted: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(String::from))
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("{DATA}/{name}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != DATA && name != version {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        } else if !wanted.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(true)
}

/// Whether the version in `version_dir` holds exactly `payload`.
fn same(version_dir: &Path, payload: &Payload) -> bool {
    let mut files = Vec::new();
    collect(version_dir, "", &mut files);
    files.sort();
    files.len() == payload.len()
        && files.iter().all(|path| {
            let target = version_dir.join(path);
            payload.get(path).is_some_and(|file| {
                std::fs::read(&target).ok().as_deref() == Some(&file.data[..])
                    && std::fs::metadata(&target)
                        .map(|m| m.permissions().mode() & 0o7777 == file.mode)
                        .unwrap_or(false)
            })
        })
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect(&entry.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

/// `2026_11_23_22_30_00.123456789`, as the kubelet names versions.
fn timestamp() -> String {
    let now = crate::shim::now_rfc3339(); // 2026-11-23T22:30:00.123456789Z
    now.trim_end_matches('Z')
        .replace(['-', ':'], "_")
        .replace('T', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str)]) -> Payload {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    File {
                        data: v.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn updates_swap_the_data_link_and_keep_key_links() {
        let dir = std::env::temp_dir().join(format!("atomic-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(write(&dir, &payload(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert!(!write(&dir, &payload(&[("a", "1"), ("sub/b", "2")])).unwrap());
        let first = std::fs::read_link(dir.join(DATA)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(write(&dir, &payload(&[("a", "changed")])).unwrap());
        assert_ne!(std::fs::read_link(dir.join(DATA)).unwrap(), first);
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "changed");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "removed key link stays"
        );
        assert!(!dir.join(&first).exists(), "old version not removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
