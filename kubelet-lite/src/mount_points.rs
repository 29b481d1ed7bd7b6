//! Mount points for a container's volumes, made without touching the machine's files.
//!
//! There are no images: a container sees the node's own filesystem, and a bind mount needs
//! its target to exist. A real runtime makes missing mount points in the image's root
//! filesystem; here, for a target whose parent directory `/etc` exists but which does not
//! (`/etc/config`), the container's mount namespace gets an **overlay** over that nearest
//! existing directory, whose upper layer (in the container's state directory) holds the
//! missing directories or files. The machine's `/etc` is not changed, and the layer goes away
//! with the container.
//!
//! A target right under `/` (`/data`) would need an overlay over the root itself, which hides
//! every mount below it (`/proc`, `/sys`, `/run/netns`); for those the empty directory (or
//! file) is made on the machine instead, as the one visible trace a pod can leave.

use std::path::{Path, PathBuf};

use crate::runtime::Mount;

/// An overlay over `target` whose upper layer holds mount points missing below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub target: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Make every mount target of `mounts` exist in the container's view: in an overlay layer
/// under `scratch`, or on the machine for top-level ones. Returns the layers in the order
/// they must be mounted in.
pub fn prepare(
    mounts: &[Mount],
    workdir: Option<&Path>,
    scratch: &Path,
) -> std::io::Result<Vec<Layer>> {
    let mut layers: Vec<Layer> = Vec::new();
    // A target inside a directory bound earlier (the nginx image's own `/run` holding
    // `/var/run/secrets/…`) gets its mount point in that directory: an overlay under it would
    // be hidden by the bind.
    let mut sorted: Vec<&Mount> = Vec::new();
    for (index, mount) in mounts.iter().enumerate() {
        match inside_earlier_bind(mounts, index) {
            Some(point) => create(&point, mount.host_path.is_dir())?,
            None => sorted.push(mount),
        }
    }
    sorted.sort_by_key(|m| m.container_path.components().count());
    for mount in sorted {
        make(
            &mount.container_path,
            mount.host_path.is_dir(),
            scratch,
            &mut layers,
        )?;
    }
    // A `workingDir` the machine lacks is made too, as a runtime makes it in the image.
    if let Some(dir) = workdir {
        make(dir, true, scratch, &mut layers)?;
    }
    // Shallowest first, so a layer inside another is mounted on top of it; but a layer over
    // a directory holding the upper layers (`/var` over `/var/lib/kubelet`) last, or the
    // later layers' directories would be hidden before they are mounted.
    let scratch = scratch
        .canonicalize()
        .unwrap_or_else(|_| scratch.to_path_buf());
    layers.sort_by_key(|l| {
        (
            scratch.starts_with(&l.target),
            l.target.components().count(),
        )
    });
    Ok(layers)
}

/// `path` with the symlinks of its existing part resolved (`/var/run/x` → `/run/x`), as the
/// kernel resolves a mount target.
fn resolved(path: &Path) -> PathBuf {
    for ancestor in path.ancestors() {
        if let Ok(real) = ancestor.canonicalize() {
            let rest = path.strip_prefix(ancestor).unwrap_or(Path::new(""));
            return real.join(rest);
        }
    }
    path.to_path_buf()
}

/// Where the mount point of `mounts[index]` goes when it falls inside a directory bound
/// before it (in bind order): that directory's source, at the same place.
fn inside_earlier_bind(mounts: &[Mount], index: usize) -> Option<PathBuf> {
    let target = resolved(&mounts[index].container_path);
    mounts[..index]
        .iter()
        .rev()
        .filter(|m| m.host_path.is_dir())
        .find_map(|m| {
            let rest = target.strip_prefix(resolved(&m.container_path)).ok()?;
            (!rest.as_os_str().is_empty()).then(|| m.host_path.join(rest))
        })
}

/// Make `target` exist in the container's view, in a layer (new or existing) or on the
/// machine.
fn make(
    target: &Path,
    is_dir: bool,
    scratch: &Path,
    layers: &mut Vec<Layer>,
) -> std::io::Result<()> {
    if target.exists() || !target.is_absolute() {
        return Ok(());
    }
    let layer = match layers.iter().find(|l| target.starts_with(&l.target)) {
        Some(layer) => Some(layer.clone()),
        None => {
            let Some(existing) = target.ancestors().skip(1).find(|a| a.is_dir()) else {
                return Ok(());
            };
            if existing == Path::new("/") {
                None
            } else {
                let base = scratch.join(layers.len().to_string());
                let layer = Layer {
                    target: existing.to_path_buf(),
                    upper: base.join("upper"),
                    work: base.join("work"),
                };
                std::fs::create_dir_all(&layer.upper)?;
                std::fs::create_dir_all(&layer.work)?;
                layers.push(layer.clone());
                Some(layer)
            }
        }
    };
    let path = match &layer {
        Some(layer) => match target.strip_prefix(&layer.target) {
            Ok(rest) => layer.upper.join(rest),
            Err(_) => return Ok(()),
        },
        None => target.to_path_buf(),
    };
    create(&path, is_dir)
}

fn create(path: &Path, is_dir: bool) -> std::io::Result<()> {
    if is_dir {
        return std::fs::create_dir_all(path);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(host: &Path, container: &str) -> Mount {
        Mount {
            host_path: host.to_path_buf(),
            container_path: PathBuf::from(container),
            readonly: false,
        }
    }

    #[test]
    fn a_mount_inside_an_earlier_directory_bind_gets_its_point_in_that_directory() {
        let dir = std::env::temp_dir().join(format!("mount-points-bind-{}", std::process::id()));
        let own_run = dir.join("run");
        let token = dir.join("token");
        std::fs::create_dir_all(&own_run).expect("mkdir");
        std::fs::create_dir_all(&token).expect("mkdir");
        let mounts = [
            mount(&own_run, "/run"),
            mount(&token, "/var/run/secrets/kubernetes.io/serviceaccount"),
        ];
        let layers = prepare(&mounts, None, &dir.join("scratch")).expect("prepare");
        let made = own_run
            .join("secrets/kubernetes.io/serviceaccount")
            .is_dir();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(layers.is_empty(), "{layers:?}");
        assert!(made, "the mount point is not in the bound directory");
    }

    #[test]
    fn missing_mount_points_go_in_a_layer_over_the_nearest_existing_directory() {
        let scratch = std::env::temp_dir().join(format!("mount-points-{}", std::process::id()));
        let volume = scratch.join("volume");
        std::fs::create_dir_all(&volume).unwrap();
        let file = scratch.join("file");
        std::fs::write(&file, "x").unwrap();
        let layers = prepare(
            &[
                mount(&volume, "/etc/knetsim-test-config/a"),
                mount(&file, "/etc/knetsim-test-config/b/c.conf"),
                mount(&volume, "/etc/hosts"),
            ],
            Some(Path::new("/etc/knetsim-test-workdir")),
            &scratch.join("layers"),
        )
        .unwrap();
        assert_eq!(layers.len(), 1, "{layers:?}");
        assert_eq!(layers[0].target, Path::new("/etc"));
        assert!(layers[0].upper.join("knetsim-test-config/a").is_dir());
        assert!(layers[0]
            .upper
            .join("knetsim-test-config/b/c.conf")
            .is_file());
        assert!(!Path::new("/etc/knetsim-test-config").exists());
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
