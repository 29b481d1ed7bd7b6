//! Server-side apply through the real kubectl: field managers in managedFields, a
//! conflict with another manager (409 naming it and the field), `--force-conflicts`, and
//! fields the applier drops being removed.

mod common;

use common::{text, Cluster};

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  level: debug\n  color: red\n";

#[test]
fn apply_tracks_owners_and_conflicts() {
    let c = Cluster::start();
    let first = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], CM);
    assert_eq!(
        text(&first.stdout).trim(),
        "configmap/settings serverside-applied",
        "{}",
        text(&first.stderr)
    );
    let yaml = c.ok(&[
        "get",
        "cm",
        "settings",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        yaml.contains("manager: kubectl")
            && yaml.contains("operation: Apply")
            && yaml.contains("f:level: {}"),
        "{yaml}"
    );

    c.ok(&[
        "patch",
        "cm",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"level":"info"}}"#,
    ]);
    let yaml = c.ok(&[
        "get",
        "cm",
        "settings",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        yaml.contains("manager: kubectl-patch") && yaml.contains("operation: Update"),
        "{yaml}"
    );

    let again = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], CM);
    let err = text(&again.stderr);
    assert!(!again.status.success(), "{}", text(&again.stdout));
    assert!(
        err.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.level"
        ),
        "{err}"
    );
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.level}"]),
        "info"
    );

    let forced = c.kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        CM,
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.level}"]),
        "debug"
    );

    let without_color = CM.replace("  color: red\n", "");
    let dropped = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &without_color);
    assert!(dropped.status.success(), "{}", text(&dropped.stderr));
    let data = c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"level":"debug"}"#);
}
