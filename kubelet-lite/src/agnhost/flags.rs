//! Command-line flags the way agnhost's cobra/pflag parse them, so Kubernetes manifests'
//! `args:` work unchanged: `--name=value`, `--name value`, a bare `--flag` for booleans
//! (`--http=false` to turn one off), `--` to end the flags, and `-h`/`--help`.
//!
//! agnhost also registers klog's flags on its root command because some tests pass them
//! (`--v=2`, `--logtostderr`); they are accepted here and ignored. Every subcommand takes
//! no positional argument (`cobra.MaximumNArgs(0)`).

use std::collections::BTreeMap;

/// What a flag's value must parse as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Bool,
    Str,
}

/// One flag of a subcommand: name without dashes, kind, default, help text.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub usage: &'static str,
}

/// klog flags agnhost accepts on every subcommand: (name, takes a value).
const KLOG_FLAGS: &[(&str, bool)] = &[
    ("v", true),
    ("vmodule", true),
    ("log_dir", true),
    ("log_file", true),
    ("log_file_max_size", true),
    ("log_backtrace_at", true),
    ("stderrthreshold", true),
    ("logtostderr", false),
    ("alsologtostderr", false),
    ("add_dir_header", false),
    ("one_output", false),
    ("skip_headers", false),
    ("skip_log_headers", false),
];

/// Why the command line was refused; printed as `Error: <this>` as cobra does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("unknown flag: --{0}")]
    Unknown(String),
    #[error("flag needs an argument: --{0}")]
    MissingValue(String),
    #[error("invalid argument {value:?} for \"--{name}\" flag: {why}")]
    Invalid {
        name: String,
        value: String,
        why: String,
    },
    #[error("accepts at most 0 arg(s), received {0}")]
    Positional(usize),
}

/// The outcome of parsing: the flags' values, or a request for help.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Values(Values),
    Help,
}

/// Every declared flag's value (its default when not given), already validated.
#[derive(Debug, PartialEq, Eq)]
pub struct Values(BTreeMap<&'static str, String>);

impl Values {
    /// The value of an `Int` flag (0 if the name was not declared).
    pub fn int(&self, name: &str) -> i64 {
        self.0.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// The value of a `Bool` flag (false if the name was not declared).
    pub fn bool(&self, name: &str) -> bool {
        self.0
            .get(name)
            .and_then(|v| parse_bool(v))
            .unwrap_or(false)
    }

    /// The value of a `Str` flag (empty if the name was not declared).
    pub fn str(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn check(spec: &Spec, value: &str) -> Result<String, FlagError> {
    let why = match spec.kind {
        Kind::Str => None,
        Kind::Int => value
            .parse::<i64>()
            .err()
            .map(|_| format!("strconv.ParseInt: parsing {value:?}: invalid syntax")),
        Kind::Bool => parse_bool(value)
            .is_none()
            .then(|| format!("strconv.ParseBool: parsing {value:?}: invalid syntax")),
    };
    match why {
        None => Ok(value.to_string()),
        Some(why) => Err(FlagError::Invalid {
            name: spec.name.to_string(),
            value: value.to_string(),
            why,
        }),
    }
}

/// Parse a subcommand's arguments (those after its name) against its flags.
pub fn parse(specs: &[Spec], args: &[String]) -> Result<Parsed, FlagError> {
    let mut values: BTreeMap<&'static str, String> = specs
        .iter()
        .map(|s| (s.name, s.default.to_string()))
        .collect();
    let mut positional = 0;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            positional += it.len();
            break;
        }
        let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            positional += 1;
            continue;
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if name == "h" || name == "help" {
            return Ok(Parsed::Help);
        }
        if let Some(spec) = specs.iter().find(|s| s.name == name) {
            let value = match (inline, spec.kind) {
                (Some(v), _) => v.to_string(),
                (None, Kind::Bool) => "true".to_string(),
                (None, _) => it
                    .next()
                    .cloned()
                    .ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
            };
            values.insert(spec.name, check(spec, &value)?);
        } else if let Some((_, takes_value)) = KLOG_FLAGS.iter().find(|(n, _)| *n == name) {
            if *takes_value && inline.is_none() && it.next().is_none() {
                return Err(FlagError::MissingValue(name.to_string()));
            }
        } else {
            return Err(FlagError::Unknown(name.to_string()));
        }
    }
    if positional > 0 {
        return Err(FlagError::Positional(positional));
    }
    Ok(Parsed::Values(Values(values)))
}

/// The `Flags:` block of a subcommand's usage text.
pub fn usage(specs: &[Spec]) -> String {
    let mut out = String::from("Flags:\n  -h, --help   help for this command\n");
    for s in specs {
        let kind = match s.kind {
            Kind::Int => " int",
            Kind::Bool => "",
            Kind::Str => " string",
        };
        let default = match (s.kind, s.default) {
            (Kind::Bool, "false") | (Kind::Str, "") => String::new(),
            (Kind::Str, d) => format!(" (default {d:?})"),
            (_, d) => format!(" (default {d})"),
        };
        out.push_str(&format!(
            "      --{}{kind}   {}{default}\n",
            s.name, s.usage
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec {
            name: "port",
            kind: Kind::Int,
            default: "9376",
            usage: "Port number.",
        },
        Spec {
            name: "http",
            kind: Kind::Bool,
            default: "true",
            usage: "Serve HTTP.",
        },
        Spec {
            name: "tcp",
            kind: Kind::Bool,
            default: "false",
            usage: "Serve raw over TCP.",
        },
    ];

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn values(a: &[&str]) -> Values {
        match parse(SPECS, &args(a)) {
            Ok(Parsed::Values(v)) => v,
            other => panic!("{a:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_forms() {
        let v = values(&[]);
        assert_eq!(
            (v.int("port"), v.bool("http"), v.bool("tcp")),
            (9376, true, false)
        );
        let v = values(&["--port=80", "--http=false", "--tcp"]);
        assert_eq!(
            (v.int("port"), v.bool("http"), v.bool("tcp")),
            (80, false, true)
        );
        let v = values(&["--port", "81", "-tcp=T", "--v=4", "--logtostderr"]);
        assert_eq!((v.int("port"), v.bool("tcp")), (81, true));
    }

    #[test]
    fn refusals() {
        let p = |a: &[&str]| parse(SPECS, &args(a));
        assert_eq!(p(&["--nope"]), Err(FlagError::Unknown("nope".into())));
        assert_eq!(p(&["--port"]), Err(FlagError::MissingValue("port".into())));
        assert!(matches!(p(&["--port=x"]), Err(FlagError::Invalid { .. })));
        assert!(matches!(
            p(&["--http=maybe"]),
            Err(FlagError::Invalid { .. })
        ));
        assert_eq!(p(&["extra"]), Err(FlagError::Positional(1)));
        assert_eq!(p(&["--", "a", "b"]), Err(FlagError::Positional(2)));
        assert_eq!(p(&["--port=1", "--help"]), Ok(Parsed::Help));
        let msg = p(&["--port=x"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("invalid argument \"x\" for \"--port\" flag"),
            "{msg}"
        );
    }

    #[test]
    fn usage_lists_flags() {
        let u = usage(SPECS);
        assert!(
            u.contains("--port int   Port number. (default 9376)"),
            "{u}"
        );
        assert!(u.contains("--tcp   Serve raw over TCP.\n"), "{u}");
    }
}
