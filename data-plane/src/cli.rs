//! Envoy-compatible command-line flags.
//!
//! `legate-proxy` takes the same flags as Envoy 1.40 (`envoy --help`), spelled the same way, so
//! a launcher, container entrypoint or test harness written for Envoy starts `legate-proxy`
//! unchanged. Every Envoy flag is accepted; the ones that configure something `legate-proxy`
//! does not have (hot restart, spdlog formatting, file flushing, …) are parsed, type-checked as
//! Envoy does, and ignored.
//!
//! | flag | effect |
//! |---|---|
//! | `-c/--config-path`, `--config-yaml` | the bootstrap; `--config-yaml` is merged over the file as Envoy does (protobuf merge) |
//! | `--service-node`, `--service-cluster`, `--service-zone` | override `node.id`, `node.cluster`, `node.locality.zone` |
//! | `-l/--log-level` | `trace`, `debug`, `info`, `warning`/`warn`, `error`, `critical`, `off` |
//! | `--concurrency N` | worker threads |
//! | `--mode serve\|validate\|init_only` | `init_only` is treated as `validate`: load and check the configuration, exit 0 if valid |
//! | `--admin-address-path PATH` | write the bound admin address (`127.0.0.1:PORT`, no newline) there |
//! | `--version` | prints `<argv0>  version: legate-proxy-<ver>/1.40.0/Clean/<RELEASE\|DEBUG>/none`, exits 0 |
//! | `--hot-restart-version` | prints nothing and exits 0 (like an Envoy built without hot restart) |
//! | `--allow-unknown-static-fields`, `--allow-unknown-fields` | unknown bootstrap fields become warnings |
//! | everything else in `envoy --help` | accepted and ignored |
//!
//! Unknown flags, repeated single-value flags and positional arguments are errors (exit 1 with a
//! usage message), as in Envoy. Unlike Envoy, `--flag=value` and `-lwarning` are also accepted.

use clap::{Parser, ValueEnum};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The Envoy version whose bootstrap and flags `legate-proxy` accepts.
pub const ENVOY_COMPAT_VERSION: &str = "1.40.0";

/// Log levels Envoy accepts for `-l/--log-level`.
const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// A `uint32_t` flag held as `u64` seconds (ready for `Duration::from_secs`).
fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=u64::from(u32::MAX))
}

/// A path flag; unlike clap's default, an empty value is accepted (Envoy treats `-c ""` as
/// absent).
fn path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser as _;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// What the process does after loading the bootstrap (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Validate the configuration, then serve traffic (the default).
    #[default]
    Serve,
    /// Validate the configuration and exit: 0 if it is valid, 1 otherwise. Envoy's `init_only`
    /// (initialize, then exit) is accepted as a synonym: `legate-proxy` has nothing to
    /// initialize beyond validating the bootstrap.
    #[value(alias = "init_only")]
    Validate,
}

/// `legate-proxy`'s command line: Envoy's flags.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "legate-proxy",
    about = "legate-proxy: an Envoy-compatible outbound proxy driven by ADS.",
    long_about = None,
    disable_version_flag = true,
    max_term_width = 100
)]
pub struct Options {
    /// Path to configuration file
    #[arg(short = 'c', long, value_name = "string", value_parser = path())]
    pub config_path: Option<PathBuf>,

    /// Inline YAML configuration, merges with the contents of --config-path
    #[arg(long, value_name = "string")]
    pub config_yaml: Option<String>,

    /// Node name
    #[arg(long, value_name = "string")]
    pub service_node: Option<String>,

    /// Cluster name
    #[arg(long, value_name = "string")]
    pub service_cluster: Option<String>,

    /// Zone name
    #[arg(long, value_name = "string")]
    pub service_zone: Option<String>,

    /// Log level: `trace`, `debug`, `info` (default), `warning`/`warn`, `error`, `critical`,
    /// `off`, as given (see [`Options::tracing_level`]).
    #[arg(
        help = "Log levels: [trace][debug][info][warning|warn][error][critical][off]",
        short = 'l',
        long,
        value_name = "string",
        default_value = "info",
        value_parser = clap::builder::PossibleValuesParser::new(LOG_LEVELS)
    )]
    pub log_level: String,

    /// # of worker threads to run
    #[arg(long, value_name = "uint32_t")]
    pub concurrency: Option<usize>,

    /// One of 'serve' (default; validate configs and then serve traffic normally) or 'validate'
    /// (validate configs and exit). 'init_only' is accepted as 'validate'.
    #[arg(long, value_enum, value_name = "string", default_value_t = Mode::Serve, hide_possible_values = true)]
    pub mode: Mode,

    /// Admin address path
    #[arg(long, value_name = "string", value_parser = path())]
    pub admin_address_path: Option<PathBuf>,

    /// Base ID so that multiple envoys can run on the same host if needed (ignored)
    #[arg(long, value_name = "uint32_t")]
    pub base_id: Option<u32>,

    /// The server chooses a base ID dynamically (ignored)
    #[arg(long)]
    pub use_dynamic_base_id: bool,

    /// Path to which the base ID is written (ignored)
    #[arg(long, value_name = "string", value_parser = path())]
    pub base_id_path: Option<PathBuf>,

    /// Disable hot restart functionality (legate-proxy has none)
    #[arg(long)]
    pub disable_hot_restart: bool,

    /// Hot restart epoch # (ignored)
    #[arg(long, value_name = "uint32_t")]
    pub restart_epoch: Option<u32>,

    /// Hot restart compatibility version: prints nothing and exits (no hot restart)
    #[arg(long)]
    pub hot_restart_version: bool,

    /// Hot restart and LDS removal drain time in seconds
    #[arg(long, value_name = "uint32_t", value_parser = seconds())]
    pub drain_time_s: Option<u64>,

    /// Hot restart parent shutdown time in seconds (ignored)
    #[arg(long, value_name = "uint32_t", value_parser = seconds())]
    pub parent_shutdown_time_s: Option<u64>,

    /// Hot restart drain sequence behaviour, one of 'gradual' (default) or 'immediate'
    #[arg(long, value_name = "string", value_parser = ["gradual", "immediate"])]
    pub drain_strategy: Option<String>,

    /// Path to logfile (ignored: logs go to stderr)
    #[arg(long, value_name = "string", value_parser = path())]
    pub log_path: Option<PathBuf>,

    /// Log message format in spdlog syntax (ignored)
    #[arg(long, value_name = "string")]
    pub log_format: Option<String>,

    /// Escape c-style escape sequences in the application logs (ignored)
    #[arg(long)]
    pub log_format_escaped: bool,

    /// Comma-separated list of component log levels, e.g. upstream:debug,config:trace (ignored)
    #[arg(long, value_name = "string")]
    pub component_log_level: Option<String>,

    /// Logger mode: enable file level log control (ignored)
    #[arg(long)]
    pub enable_fine_grain_logging: bool,

    /// Emit the entire stack trace in a single log entry (ignored)
    #[arg(long)]
    pub log_stacktrace_single_entry: bool,

    /// Skips the logging of deprecated field warnings (ignored)
    #[arg(long)]
    pub skip_deprecated_logs: bool,

    /// Interval for log flushing in msec (ignored)
    #[arg(long, value_name = "uint32_t")]
    pub file_flush_interval_msec: Option<u32>,

    /// Minimum size in KB for log flushing (ignored)
    #[arg(long, value_name = "uint32_t")]
    pub file_flush_min_size_kb: Option<u32>,

    /// The local IP address version (v4 or v6) (ignored)
    #[arg(long, value_name = "string", value_parser = ["v4", "v6"])]
    pub local_address_ip_version: Option<String>,

    /// Ignore unknown fields in dynamic configuration
    #[arg(long)]
    pub ignore_unknown_dynamic_fields: bool,

    /// Reject unknown fields in dynamic configuration
    #[arg(long)]
    pub reject_unknown_dynamic_fields: bool,

    /// Allow unknown fields in static configuration (they become warnings)
    #[arg(long)]
    pub allow_unknown_static_fields: bool,

    /// Allow unknown fields in static configuration (DEPRECATED)
    #[arg(long)]
    pub allow_unknown_fields: bool,

    /// A universal tag for all stats, `tag:value` (accepted multiple times; ignored)
    #[arg(long, value_name = "string")]
    pub stats_tag: Vec<String>,

    /// Enable core dumps (ignored)
    #[arg(long)]
    pub enable_core_dump: bool,

    /// Hot restart socket file permission (ignored)
    #[arg(long, value_name = "string")]
    pub socket_mode: Option<String>,

    /// Path to hot restart socket file (ignored)
    #[arg(long, value_name = "string")]
    pub socket_path: Option<String>,

    /// Comma-separated list of extensions to disable (ignored)
    #[arg(long, value_name = "string")]
    pub disable_extensions: Option<String>,

    /// Get the default # of worker threads from cpuset size (ignored)
    #[arg(long)]
    pub cpuset_threads: bool,

    /// Enable mutex contention tracing functionality (ignored)
    #[arg(long)]
    pub enable_mutex_tracing: bool,

    /// Reset stats instead of copying them from a hot-restart parent (ignored)
    #[arg(long)]
    pub skip_hot_restart_parent_stats: bool,

    /// Continue when a hot-restart parent is missing (ignored)
    #[arg(long)]
    pub skip_hot_restart_on_no_parent: bool,

    /// Displays version information and exits
    #[arg(long)]
    pub version: bool,

    /// Arguments after `--`, which Envoy ignores.
    #[arg(last = true, hide = true, value_name = "ignored")]
    pub ignored_rest: Vec<OsString>,
}

impl Default for Options {
    /// The options of a command line with no flags (Envoy's defaults).
    fn default() -> Self {
        Options::parse_from(["legate-proxy"])
    }
}

impl Options {
    /// Whether unknown fields in the bootstrap are warnings rather than errors
    /// (`--allow-unknown-static-fields` or its deprecated spelling `--allow-unknown-fields`).
    pub fn allow_unknown_static_fields(&self) -> bool {
        self.allow_unknown_static_fields || self.allow_unknown_fields
    }

    /// The `tracing` level for `--log-level`: Envoy's `warning` is `warn`, `critical` is
    /// `error` (tracing has no higher level), `off` is `off`.
    pub fn tracing_level(&self) -> &'static str {
        match self.log_level.as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "warning" | "warn" => "warn",
            "error" | "critical" => "error",
            "off" => "off",
            _ => "info",
        }
    }

    /// Writes the bound admin address to `--admin-address-path`, as Envoy does: the address
    /// (`127.0.0.1:PORT`, `[::1]:PORT`) and no newline. Does nothing without the flag.
    pub fn write_admin_address(&self, addr: SocketAddr) -> std::io::Result<()> {
        match &self.admin_address_path {
            Some(path) => std::fs::write(path, addr.to_string()),
            None => Ok(()),
        }
    }
}

/// The line `--version` prints, in Envoy's shape
/// (`<argv0>  version: <revision>/<version>/<status>/<build mode>/<TLS library>`), with
/// `legate-proxy-<crate version>` as the revision and the Envoy version it is compatible with.
pub fn version_line(argv0: &str) -> String {
    let mode = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    format!(
        "{argv0}  version: legate-proxy-{}/{ENVOY_COMPAT_VERSION}/Clean/{mode}/none",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses `std::env::args`. On an unknown flag or a bad value it prints the error and a usage
/// hint to stderr and exits 1 (as Envoy does); `-h/--help` prints help and exits 0;
/// `--version` prints [`version_line`] (after a blank line, like Envoy) and exits 0;
/// `--hot-restart-version` exits 0.
pub fn parse() -> Options {
    let args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "legate-proxy".to_string());
    match parse_from(args) {
        Ok(options) if options.version => {
            println!("\n{}\n", version_line(&argv0));
            std::process::exit(0);
        }
        Ok(options) if options.hot_restart_version => std::process::exit(0),
        Ok(options) => options,
        Err(error) => {
            // clap exits 2 on usage errors; Envoy exits 1.
            let code = if error.use_stderr() { 1 } else { 0 };
            let _ = error.print();
            std::process::exit(code);
        }
    }
}

/// Parses a command line (the first item is the program name). `--version` and
/// `--hot-restart-version` are returned as flags for the caller to act on; `-h/--help` is an
/// error of kind `DisplayHelp`.
pub fn parse_from<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Options::try_parse_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn ok(args: &[&str]) -> Options {
        let mut argv = vec!["legate-proxy"];
        argv.extend_from_slice(args);
        parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn err(args: &[&str]) -> clap::Error {
        let mut argv = vec!["legate-proxy"];
        argv.extend_from_slice(args);
        parse_from(argv).expect_err("should be rejected")
    }

    #[test]
    fn defaults() {
        let o = ok(&[]);
        assert_eq!(o.config_path, None);
        assert_eq!(o.config_yaml, None);
        assert_eq!(o.log_level, "info");
        assert_eq!(o.mode, Mode::Serve);
        assert_eq!(o.concurrency, None);
        assert!(!o.disable_hot_restart);
        assert_eq!(o, Options::default());
    }

    #[test]
    fn config_flags() {
        let o = ok(&["-c", "/etc/envoy.yaml"]);
        assert_eq!(o.config_path, Some(PathBuf::from("/etc/envoy.yaml")));
        let o = ok(&["--config-path", "b.json", "--config-yaml", "admin: {}"]);
        assert_eq!(o.config_path, Some(PathBuf::from("b.json")));
        assert_eq!(o.config_yaml.as_deref(), Some("admin: {}"));
    }

    #[test]
    fn node_flags() {
        let o = ok(&[
            "--service-node",
            "n1",
            "--service-cluster",
            "checkout",
            "--service-zone",
            "z1",
        ]);
        assert_eq!(o.service_node.as_deref(), Some("n1"));
        assert_eq!(o.service_cluster.as_deref(), Some("checkout"));
        assert_eq!(o.service_zone.as_deref(), Some("z1"));
    }

    #[test]
    fn log_levels() {
        for level in LOG_LEVELS {
            assert_eq!(ok(&["-l", level]).log_level, level);
            assert_eq!(ok(&["--log-level", level]).log_level, level);
        }
        let o = ok(&["-l", "warning"]);
        assert_eq!(o.log_level, "warning");
        assert_eq!(o.tracing_level(), "warn");
        assert_eq!(ok(&["-l", "critical"]).tracing_level(), "error");
        assert_eq!(ok(&[]).tracing_level(), "info");
        assert_eq!(err(&["-l", "verbose"]).kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn concurrency_and_mode() {
        assert_eq!(ok(&["--concurrency", "1"]).concurrency, Some(1));
        assert_eq!(
            err(&["--concurrency", "abc"]).kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(ok(&["--mode", "serve"]).mode, Mode::Serve);
        assert_eq!(ok(&["--mode", "validate"]).mode, Mode::Validate);
        assert_eq!(ok(&["--mode", "init_only"]).mode, Mode::Validate);
        assert_eq!(err(&["--mode", "foo"]).kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn admin_address_path_is_written_like_envoy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.txt");
        let o = ok(&["--admin-address-path", path.to_str().expect("utf-8")]);
        assert_eq!(o.admin_address_path.as_deref(), Some(path.as_path()));
        o.write_admin_address("127.0.0.1:9901".parse().expect("addr"))
            .expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "127.0.0.1:9901"
        );
        ok(&[])
            .write_admin_address("127.0.0.1:1".parse().expect("addr"))
            .expect("no flag, no file");
    }

    #[test]
    fn ignored_envoy_flags_parse() {
        let o = ok(&[
            "--base-id",
            "7",
            "--use-dynamic-base-id",
            "--base-id-path",
            "/tmp/base-id",
            "--disable-hot-restart",
            "--restart-epoch",
            "0",
            "--drain-time-s",
            "30",
            "--parent-shutdown-time-s",
            "45",
            "--drain-strategy",
            "immediate",
            "--log-path",
            "/tmp/envoy.log",
            "--log-format",
            "[%Y-%m-%d %T.%e][%l] %v",
            "--log-format-escaped",
            "--component-log-level",
            "upstream:debug,config:trace",
            "--enable-fine-grain-logging",
            "--log-stacktrace-single-entry",
            "--skip-deprecated-logs",
            "--file-flush-interval-msec",
            "1000",
            "--file-flush-min-size-kb",
            "64",
            "--local-address-ip-version",
            "v4",
            "--ignore-unknown-dynamic-fields",
            "--reject-unknown-dynamic-fields",
            "--allow-unknown-static-fields",
            "--stats-tag",
            "a:1",
            "--stats-tag",
            "b:2",
            "--enable-core-dump",
            "--socket-mode",
            "600",
            "--socket-path",
            "@envoy_domain_socket",
            "--disable-extensions",
            "envoy.foo,envoy.bar",
            "--cpuset-threads",
            "--enable-mutex-tracing",
            "--skip-hot-restart-parent-stats",
            "--skip-hot-restart-on-no-parent",
        ]);
        assert_eq!(o.base_id, Some(7));
        assert!(o.use_dynamic_base_id);
        assert_eq!(o.base_id_path, Some(PathBuf::from("/tmp/base-id")));
        assert!(o.disable_hot_restart);
        assert_eq!(o.restart_epoch, Some(0));
        assert_eq!(o.drain_time_s, Some(30));
        assert_eq!(o.parent_shutdown_time_s, Some(45));
        assert_eq!(o.drain_strategy.as_deref(), Some("immediate"));
        assert_eq!(o.log_path, Some(PathBuf::from("/tmp/envoy.log")));
        assert_eq!(o.log_format.as_deref(), Some("[%Y-%m-%d %T.%e][%l] %v"));
        assert_eq!(
            o.component_log_level.as_deref(),
            Some("upstream:debug,config:trace")
        );
        assert_eq!(o.file_flush_interval_msec, Some(1000));
        assert_eq!(o.stats_tag, vec!["a:1", "b:2"]);
        assert!(o.allow_unknown_static_fields());
        assert!(ok(&["--allow-unknown-fields"]).allow_unknown_static_fields());
        assert!(!ok(&[]).allow_unknown_static_fields());
        assert_eq!(
            err(&["--drain-strategy", "sudden"]).kind(),
            ErrorKind::InvalidValue
        );
        assert_eq!(err(&["--base-id", "-1"]).kind(), ErrorKind::UnknownArgument);
    }

    #[test]
    fn version_flags() {
        assert!(ok(&["--version"]).version);
        assert!(ok(&["--hot-restart-version"]).hot_restart_version);
        let line = version_line("legate-proxy");
        assert!(
            line.starts_with("legate-proxy  version: legate-proxy-"),
            "{line}"
        );
        assert!(line.contains("/1.40.0/Clean/"), "{line}");
    }

    #[test]
    fn unknown_flag_is_an_error() {
        let e = err(&["--bogus"]);
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert!(e.use_stderr());
        assert!(e.to_string().contains("--bogus"), "{e}");
        assert_eq!(err(&["extra"]).kind(), ErrorKind::UnknownArgument);
        assert_eq!(
            err(&["-l", "info", "-l", "debug"]).kind(),
            ErrorKind::ArgumentConflict
        );
        // Not an Envoy flag: Envoy spells it --file-flush-interval-msec.
        assert_eq!(
            err(&["--file-flush-interval-msecs", "5"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn help_is_not_a_failure() {
        let e = err(&["--help"]);
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        assert!(!e.use_stderr());
    }

    #[test]
    fn rest_after_double_dash_is_ignored() {
        let o = ok(&["-c", "x.yaml", "--", "whatever", "--bogus"]);
        assert_eq!(o.config_path, Some(PathBuf::from("x.yaml")));
        assert_eq!(o.ignored_rest.len(), 2);
    }
}
