//! There are no images: an image name selects an entry of a small built-in catalogue that says
//! what its entrypoint would be, and the program runs with the node's own tools. The command a
//! container runs is resolved as Kubernetes resolves it against an image:
//!
//! * `command` set: `command` + `args` (the image's entrypoint is ignored);
//! * only `args`: the entrypoint + `args`;
//! * neither: the entrypoint + the image's default arguments.
//!
//! An image outside the catalogue runs only with an explicit `command`.
//!
//! `registry.k8s.io/e2e-test-images/agnhost` is knetsim's own agnhost (`knetsim-agnhost …`,
//! see `crate::agnhost`), so the manifests of Kubernetes' own network tests run unchanged: its
//! entrypoint `/agnhost` is that program.

use crate::runtime::Programs;

/// An image's entrypoint and default arguments.
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

/// The repository name of `image`, without registry, tag or digest: `docker.io/library/busybox:1.36` → `busybox`.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

fn catalogue(image: &str, programs: &Programs) -> Option<Image> {
    let path = |program: &std::path::Path| program.display().to_string();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match repository(image) {
        // Shell images: a shell with no input exits 0, as the image would.
        "busybox" | "debian" | "alpine" | "ubuntu" => Some(Image {
            entrypoint: Vec::new(),
            cmd: strings(&["sh"]),
        }),
        "python" => Some(Image {
            entrypoint: Vec::new(),
            cmd: strings(&["python3"]),
        }),
        // The cluster DNS add-on's image: knetsim's cluster-dns, with its flags as arguments.
        "coredns" => Some(Image {
            entrypoint: vec![path(&programs.knetsim), "cluster-dns".to_string()],
            cmd: Vec::new(),
        }),
        // Debian's nginx, run as the official image runs it (its files: `image_files`).
        "nginx" => Some(Image {
            entrypoint: Vec::new(),
            cmd: strings(&["nginx", "-g", "daemon off;"]),
        }),
        // agnhost's image has ENTRYPOINT ["/agnhost"] and no CMD (it prints its usage).
        "agnhost" => Some(Image {
            entrypoint: vec![path(&programs.agnhost)],
            cmd: Vec::new(),
        }),
        _ => None,
    }
}

/// The argv a container runs, or why it cannot run (the Pod's waiting message). `programs`
/// are knetsim's, which the agnhost and coredns images run.
pub fn resolve(
    image: &str,
    command: &[String],
    args: &[String],
    programs: &Programs,
) -> Result<Vec<String>, String> {
    let entry = catalogue(image, programs);
    if !command.is_empty() {
        let mut argv: Vec<String> = command.iter().chain(args).cloned().collect();
        // `command: ["/agnhost", "netexec", …]` names the image's own program.
        if repository(image) == "agnhost" && matches!(argv[0].as_str(), "/agnhost" | "agnhost") {
            argv[0] = programs.agnhost.display().to_string();
        }
        return Ok(argv);
    }
    let Some(entry) = entry else {
        return Err(format!(
            "image {image:?} is not in knetsim's catalogue and the container has no command; set `command`, or use agnhost, busybox, debian, alpine, ubuntu or python"
        ));
    };
    if argv_needs_nginx(&entry) && !std::path::Path::new("/usr/sbin/nginx").exists() {
        return Err(format!(
            "image {image:?} runs the node's nginx, which is not installed: apt install nginx"
        ));
    }
    let mut argv = entry.entrypoint;
    argv.extend(if args.is_empty() {
        entry.cmd
    } else {
        args.to_vec()
    });
    if argv.is_empty() {
        return Err(format!(
            "image {image:?} has no default command; set `command`"
        ));
    }
    Ok(argv)
}

fn argv_needs_nginx(entry: &Image) -> bool {
    entry.cmd.first().is_some_and(|c| c == "nginx")
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGNHOST: &str = "/usr/bin/knetsim-agnhost";

    fn programs() -> Programs {
        Programs {
            knetsim: "/usr/bin/knetsim".into(),
            pause: "/usr/bin/knetsim-pause".into(),
            shim: "/usr/bin/knetsim-shim".into(),
            agnhost: AGNHOST.into(),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_and_args_resolve_as_in_kubernetes() {
        let run = |image, command: &[&str], args: &[&str]| {
            resolve(image, &s(command), &s(args), &programs())
        };
        assert_eq!(
            run("busybox", &["sleep"], &["10"]).unwrap(),
            s(&["sleep", "10"])
        );
        assert_eq!(
            run("docker.io/library/busybox:1.36", &[], &[]).unwrap(),
            s(&["sh"])
        );
        // Without an ENTRYPOINT, args replace the image's CMD, as Docker runs it.
        assert_eq!(
            run("python:3.12@sha256:abc", &[], &["-c", "print(1)"]).unwrap(),
            s(&["-c", "print(1)"])
        );
        assert_eq!(
            run("example.com/anything:v1", &["true"], &[]).unwrap(),
            s(&["true"])
        );
        let err = run("example.com/anything:v1", &[], &[]).unwrap_err();
        assert!(err.contains("not in knetsim's catalogue"), "{err}");
    }

    #[test]
    fn agnhost_is_knetsims_agnhost() {
        let image = "registry.k8s.io/e2e-test-images/agnhost:2.53";
        let programs = programs();
        assert_eq!(
            resolve(image, &[], &s(&["netexec", "--http-port=8080"]), &programs).unwrap(),
            s(&[AGNHOST, "netexec", "--http-port=8080"])
        );
        assert_eq!(
            resolve(image, &s(&["/agnhost", "serve-hostname"]), &[], &programs).unwrap(),
            s(&[AGNHOST, "serve-hostname"])
        );
        assert_eq!(resolve(image, &[], &[], &programs).unwrap(), s(&[AGNHOST]));
        // Another image's `agnhost` is whatever that image has on its PATH.
        assert_eq!(
            resolve("busybox", &s(&["agnhost"]), &[], &programs).unwrap(),
            s(&["agnhost"])
        );
        assert_eq!(
            resolve("coredns/coredns:1.11", &[], &s(&["--zone=x"]), &programs).unwrap(),
            s(&["/usr/bin/knetsim", "cluster-dns", "--zone=x"])
        );
    }
}
