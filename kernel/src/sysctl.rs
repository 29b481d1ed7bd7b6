//! Per-namespace sysctls (`net.*` keys belong to the network namespace that opens the file).

use std::path::PathBuf;

use crate::{netns, Error, Result};

/// A sysctl to set: `key` in dotted form, and whether its absence is acceptable (some keys
/// only exist when a module such as `br_netfilter` is loaded).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub value: &'static str,
    pub required: bool,
}

fn proc_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// Write `settings` inside network namespace `name`. Returns the optional keys that were
/// absent, so the caller can mention them.
pub fn set_in(name: &str, settings: &'static [Setting]) -> Result<Vec<&'static str>> {
    netns::run_in(name, move || {
        let mut absent = Vec::new();
        for setting in settings {
            let path = proc_path(setting.key);
            match std::fs::write(&path, setting.value) {
                Ok(()) => {}
                Err(e) if !setting.required && e.kind() == std::io::ErrorKind::NotFound => {
                    absent.push(setting.key)
                }
                Err(source) => {
                    return Err(Error::Io {
                        action: "write sysctl",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(absent)
    })?
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_keys_map_to_proc_paths() {
        assert_eq!(
            super::proc_path("net.ipv4.ip_forward"),
            std::path::Path::new("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
