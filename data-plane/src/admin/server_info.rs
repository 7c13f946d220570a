//! `GET /server_info`: Envoy's `envoy.admin.v3.ServerInfo`, with `command_line_options` built
//! from legate-proxy's command line the way Envoy's `OptionsImpl::toCommandLineOptions` builds
//! it from the same flags (measured on Envoy 1.40).

use super::AdminCtx;
use crate::cli::{Mode, Options};
use serde_json::{Value, json};

/// spdlog's default pattern, which Envoy reports when `--log-format` is not given.
const DEFAULT_LOG_FORMAT: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v";

/// Envoy's default `--socket-path`.
const DEFAULT_SOCKET_PATH: &str = "@envoy_domain_socket";

/// The whole `/server_info` object.
pub fn server_info(ctx: &AdminCtx) -> Value {
    let uptime = format!("{}s", ctx.started.elapsed().as_secs());
    json!({
        "version": format!("legate-proxy/{}", env!("CARGO_PKG_VERSION")),
        "state": if ctx.manager.is_live() { "LIVE" } else { "INITIALIZING" },
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        // legate-proxy has no hot restart: what an Envoy built without it reports.
        "hot_restart_version": "disabled",
        "command_line_options": ctx.options,
        "node": ctx.node,
        "hot_restart_initializing": false,
    })
}

/// `command_line_options`: every field Envoy 1.40 prints, in its order and formats
/// (`google.protobuf.Duration` as `"600s"`/`"1.500s"`, 64-bit integers as strings, enums by
/// name), from the flags as given; `concurrency` is the number of workers in use.
///
/// As in Envoy, `enable_core_dump` and `file_flush_min_size` are always `false` and `0`
/// (Envoy does not copy them), and `socket_mode` is 0 unless `--socket-path` names a file.
pub fn command_line_options(opts: &Options, concurrency: usize) -> Value {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let socket_path = opts
        .socket_path
        .clone()
        .unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_string());
    let socket_mode = if socket_path.starts_with('@') {
        0
    } else {
        u32::from_str_radix(opts.socket_mode.as_deref().unwrap_or("600"), 8).unwrap_or(0)
    };
    let disabled_extensions: Vec<&str> = opts
        .disable_extensions
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    json!({
        "base_id": opts.base_id.unwrap_or(0).to_string(),
        "concurrency": concurrency,
        "config_path": path(&opts.config_path),
        "config_yaml": opts.config_yaml.clone().unwrap_or_default(),
        "allow_unknown_static_fields": opts.allow_unknown_static_fields(),
        "admin_address_path": path(&opts.admin_address_path),
        "local_address_ip_version": opts.local_address_ip_version.as_deref().unwrap_or("v4"),
        "log_level": spdlog_level(&opts.log_level),
        "component_log_level": opts.component_log_level.clone().unwrap_or_default(),
        "log_format": opts.log_format.as_deref().unwrap_or(DEFAULT_LOG_FORMAT),
        "log_path": path(&opts.log_path),
        "service_cluster": opts.service_cluster.clone().unwrap_or_default(),
        "service_node": opts.service_node.clone().unwrap_or_default(),
        "service_zone": opts.service_zone.clone().unwrap_or_default(),
        "file_flush_interval": duration_ms(u64::from(opts.file_flush_interval_msec.unwrap_or(10_000))),
        "drain_time": duration_ms(opts.drain_time_s.unwrap_or(600).saturating_mul(1000)),
        "parent_shutdown_time": duration_ms(opts.parent_shutdown_time_s.unwrap_or(900).saturating_mul(1000)),
        "mode": match opts.mode {
            Mode::Serve => "Serve",
            Mode::Validate => "Validate",
        },
        "disable_hot_restart": opts.disable_hot_restart,
        "enable_mutex_tracing": opts.enable_mutex_tracing,
        "restart_epoch": opts.restart_epoch.unwrap_or(0),
        "cpuset_threads": opts.cpuset_threads,
        "reject_unknown_dynamic_fields": opts.reject_unknown_dynamic_fields,
        "log_format_escaped": opts.log_format_escaped,
        "disabled_extensions": disabled_extensions,
        "ignore_unknown_dynamic_fields": opts.ignore_unknown_dynamic_fields,
        "use_dynamic_base_id": opts.use_dynamic_base_id,
        "base_id_path": path(&opts.base_id_path),
        "drain_strategy": if opts.drain_strategy.as_deref() == Some("immediate") { "Immediate" } else { "Gradual" },
        "enable_fine_grain_logging": opts.enable_fine_grain_logging,
        "socket_path": socket_path,
        "socket_mode": socket_mode,
        "enable_core_dump": false,
        "stats_tag": opts.stats_tag,
        "skip_hot_restart_on_no_parent": opts.skip_hot_restart_on_no_parent,
        "skip_hot_restart_parent_stats": opts.skip_hot_restart_parent_stats,
        "skip_deprecated_logs": opts.skip_deprecated_logs,
        "file_flush_min_size": 0,
        "log_stacktrace_single_entry": opts.log_stacktrace_single_entry,
    })
}

/// The spdlog name Envoy reports for a `--log-level` (`warn` is `warning`).
fn spdlog_level(level: &str) -> &str {
    match level {
        "warn" => "warning",
        other => other,
    }
}

/// A `google.protobuf.Duration` in proto3 JSON: seconds with 0, 3, 6 or 9 fraction digits.
fn duration_ms(ms: u64) -> String {
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        format!("{secs}s")
    } else {
        format!("{secs}.{frac:03}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Value {
        let mut argv = vec!["legate-proxy"];
        argv.extend_from_slice(args);
        let opts = crate::cli::parse_from(argv).expect("valid flags");
        command_line_options(&opts, 2)
    }

    /// Envoy 1.40's `/server_info` with no flag but `-c min.yaml --concurrency 2`.
    #[test]
    fn defaults_match_envoy() {
        let got = options(&["-c", "min.yaml", "--concurrency", "2"]);
        let want = json!({
            "base_id": "0", "concurrency": 2, "config_path": "min.yaml", "config_yaml": "",
            "allow_unknown_static_fields": false, "admin_address_path": "",
            "local_address_ip_version": "v4", "log_level": "info", "component_log_level": "",
            "log_format": "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v", "log_path": "",
            "service_cluster": "", "service_node": "", "service_zone": "",
            "file_flush_interval": "10s", "drain_time": "600s", "parent_shutdown_time": "900s",
            "mode": "Serve", "disable_hot_restart": false, "enable_mutex_tracing": false,
            "restart_epoch": 0, "cpuset_threads": false, "reject_unknown_dynamic_fields": false,
            "log_format_escaped": false, "disabled_extensions": [],
            "ignore_unknown_dynamic_fields": false, "use_dynamic_base_id": false,
            "base_id_path": "", "drain_strategy": "Gradual", "enable_fine_grain_logging": false,
            "socket_path": "@envoy_domain_socket", "socket_mode": 0, "enable_core_dump": false,
            "stats_tag": [], "skip_hot_restart_on_no_parent": false,
            "skip_hot_restart_parent_stats": false, "skip_deprecated_logs": false,
            "file_flush_min_size": 0, "log_stacktrace_single_entry": false
        });
        assert_eq!(got, want);
        // Envoy's order, too.
        let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
        let want_keys: Vec<&String> = want.as_object().unwrap().keys().collect();
        assert_eq!(keys, want_keys);
    }

    /// Values measured on Envoy 1.40 with the same flags.
    #[test]
    fn flags_match_envoy() {
        let got = options(&[
            "--drain-time-s",
            "5",
            "--parent-shutdown-time-s",
            "7",
            "--file-flush-interval-msec",
            "1500",
            "--log-path",
            "/tmp/x.log",
            "--log-format",
            "%v",
            "--component-log-level",
            "upstream:debug",
            "--base-id",
            "3",
            "--socket-mode",
            "644",
            "--socket-path",
            "/tmp/s",
            "--stats-tag",
            "a:b",
            "--stats-tag",
            "c:d",
            "--disable-extensions",
            "envoy.foo,envoy.bar",
            "--local-address-ip-version",
            "v6",
            "--drain-strategy",
            "immediate",
            "--file-flush-min-size-kb",
            "64",
            "--enable-core-dump",
            "-l",
            "warn",
            "--allow-unknown-fields",
        ]);
        assert_eq!(got["file_flush_interval"], "1.500s");
        assert_eq!(got["drain_time"], "5s");
        assert_eq!(got["parent_shutdown_time"], "7s");
        assert_eq!(got["base_id"], "3");
        assert_eq!(got["socket_mode"], 420);
        assert_eq!(got["socket_path"], "/tmp/s");
        assert_eq!(got["stats_tag"], json!(["a:b", "c:d"]));
        assert_eq!(
            got["disabled_extensions"],
            json!(["envoy.foo", "envoy.bar"])
        );
        assert_eq!(got["local_address_ip_version"], "v6");
        assert_eq!(got["drain_strategy"], "Immediate");
        assert_eq!(got["file_flush_min_size"], 0);
        assert_eq!(got["enable_core_dump"], false);
        assert_eq!(got["log_level"], "warning");
        assert_eq!(got["allow_unknown_static_fields"], true);
        assert_eq!(got["log_format"], "%v");
        assert_eq!(got["component_log_level"], "upstream:debug");
        // A socket mode is reported only for a file socket.
        assert_eq!(options(&["--socket-mode", "600"])["socket_mode"], 0);
        assert_eq!(
            options(&["--file-flush-interval-msec", "100"])["file_flush_interval"],
            "0.100s"
        );
        assert_eq!(
            options(&["--file-flush-interval-msec", "0"])["file_flush_interval"],
            "0s"
        );
    }
}
