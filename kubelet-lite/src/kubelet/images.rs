//! There are no images: an image name selects an entry of a small built-in catalogue that says
//! what its entrypoint would be, and the program runs with the node's own tools. The command a
//! container runs is resolved as Kubernetes resolves it against an image:
//!
//! * `command` set: `command` + `args` (the image's entrypoint is ignored);
//! * only `args`: the entrypoint + `args`;
//! * neither: the entrypoint + the image's default arguments.
//!
//! An image outside the catalogue runs only with an explicit `command`.

/// An image's entrypoint and default arguments.
struct Image {
    entrypoint: &'static [&'static str],
    cmd: &'static [&'static str],
}

/// The repository name of `image`, without registry, tag or digest: `docker.io/library/busybox:1.36` → `busybox`.
fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

fn catalogue(image: &str) -> Option<Image> {
    match repository(image) {
        // Shell images: a shell with no input exits 0, as the image would.
        "busybox" | "debian" | "alpine" | "ubuntu" => Some(Image {
            entrypoint: &[],
            cmd: &["sh"],
        }),
        "python" => Some(Image {
            entrypoint: &[],
            cmd: &["python3"],
        }),
        _ => None,
    }
}

/// The argv a container runs, or why it cannot run (the Pod's waiting message).
pub fn resolve(image: &str, command: &[String], args: &[String]) -> Result<Vec<String>, String> {
    if !command.is_empty() {
        return Ok(command.iter().chain(args).cloned().collect());
    }
    let Some(entry) = catalogue(image) else {
        return Err(format!(
            "image {image:?} is not in knetsim's catalogue and the container has no command; set `command`, or use busybox, debian, alpine, ubuntu or python"
        ));
    };
    let mut argv: Vec<String> = entry.entrypoint.iter().map(|s| s.to_string()).collect();
    if args.is_empty() {
        argv.extend(entry.cmd.iter().map(|s| s.to_string()));
    } else {
        argv.extend(args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(format!(
            "image {image:?} has no default command; set `command`"
        ));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_and_args_resolve_as_in_kubernetes() {
        assert_eq!(
            resolve("busybox", &s(&["sleep"]), &s(&["10"])).unwrap(),
            s(&["sleep", "10"])
        );
        assert_eq!(
            resolve("docker.io/library/busybox:1.36", &[], &[]).unwrap(),
            s(&["sh"])
        );
        assert_eq!(
            resolve("python:3.12@sha256:abc", &[], &s(&["-c", "print(1)"])).unwrap(),
            s(&["-c", "print(1)"])
        );
        assert_eq!(
            resolve("example.com/anything:v1", &s(&["true"]), &[]).unwrap(),
            s(&["true"])
        );
        let err = resolve("example.com/anything:v1", &[], &[]).unwrap_err();
        assert!(err.contains("not in knetsim's catalogue"), "{err}");
    }
}
