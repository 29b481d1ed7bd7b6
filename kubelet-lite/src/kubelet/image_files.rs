//! Files an image would bring that the node's own do not give: there are no images, so the
//! kubelet makes them per container, under `/var/lib/kubelet/pods/<uid>/images/<container>/`,
//! and bind-mounts them where the image has them.
//!
//! `nginx:<tag>` runs Debian's nginx as the official image does (`nginx -g "daemon off;"`),
//! with the official image's layout made per container:
//!
//! * `/etc/nginx`: the node's files (`mime.types`, `fastcgi_params`, …) with the image's
//!   `nginx.conf` (which includes `conf.d/*.conf`) and `conf.d/default.conf` (port 80,
//!   `/usr/share/nginx/html`, Debian's "Welcome to nginx!" page). A ConfigMap mounted at
//!   `/etc/nginx/conf.d` or at `/etc/nginx/nginx.conf` (`subPath`) goes on top, as in
//!   Kubernetes;
//! * `/var/log/nginx`: `access.log` → `/dev/stdout`, `error.log` → `/dev/stderr`, as in the
//!   image, so `kubectl logs` shows them;
//! * `/run` (the pid file) and `/var/lib/nginx` (Debian's temporary paths): the container's
//!   own, so pods do not share them.

use std::path::{Path, PathBuf};

use crate::runtime::Mount;

const NGINX_CONF: &str = r#"
user  www-data;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /run/nginx.pid;


events {
    worker_connections  1024;
}


http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    #tcp_nopush     on;

    keepalive_timeout  65;

    #gzip  on;

    include /etc/nginx/conf.d/*.conf;
}
"#;

const DEFAULT_CONF: &str = r#"server {
    listen       80;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
"#;

/// Whether `repository` (from [`super::images`]) brings files of its own.
pub fn has_files(repository: &str) -> bool {
    repository == "nginx"
}

/// Make the image's files for one container in `dir`; their mounts.
pub fn prepare(repository: &str, dir: &Path) -> std::io::Result<Vec<Mount>> {
    if repository != "nginx" {
        return Ok(Vec::new());
    }
    let etc = dir.join("etc-nginx");
    std::fs::create_dir_all(etc.join("conf.d"))?;
    if let Ok(entries) = std::fs::read_dir("/etc/nginx") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if entry.file_type().is_ok_and(|t| t.is_file()) && name != "nginx.conf" {
                std::fs::copy(entry.path(), etc.join(&name))?;
            }
        }
    }
    std::fs::write(etc.join("nginx.conf"), NGINX_CONF.trim_start())?;
    std::fs::write(etc.join("conf.d/default.conf"), DEFAULT_CONF)?;
    let log = dir.join("log");
    std::fs::create_dir_all(&log)?;
    for (file, target) in [("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")] {
        let link = log.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(target, &link)?;
        }
    }
    let run = dir.join("run");
    let lib = dir.join("lib");
    std::fs::create_dir_all(&run)?;
    std::fs::create_dir_all(&lib)?;
    let mount = |host: PathBuf, container: &str| Mount {
        host_path: host,
        container_path: container.into(),
        readonly: false,
    };
    Ok(vec![
        mount(etc, "/etc/nginx"),
        mount(log, "/var/log/nginx"),
        mount(run, "/run"),
        mount(lib, "/var/lib/nginx"),
    ])
}
