//! Bootstrap loading tests. The fixtures in `testdata/` pass `envoy --mode validate -c`.

use super::*;
use crate::cli::{self, Options};
use serde_json::{Value, json};
use std::path::Path;

/// `legate-cp bootstrap envoy --node checkout`, verbatim.
const LEGATE_CP_SOTW: &str = include_str!("testdata/legate_cp_sotw.yaml");
/// `legate-cp bootstrap envoy --node checkout --delta --admin 127.0.0.1:0 --xds localhost:18000`.
const LEGATE_CP_DELTA: &str = include_str!("testdata/legate_cp_delta.yaml");
/// Static listener + cluster, no ADS; anchors under `!ignore`; some ignored fields.
const STATIC: &str = include_str!("testdata/static.yaml");
/// JSON, camelCase-free, `http2_protocol_options` on the cluster, IPv6 admin, CDS only.
const ADS_JSON: &str = include_str!("testdata/ads.json");

fn opts(args: &[&str]) -> Options {
    let mut argv = vec!["legate-proxy"];
    argv.extend_from_slice(args);
    cli::parse_from(argv).expect("flags parse")
}

fn yaml(text: &str) -> Value {
    source::parse_yaml(text, "test").expect("test YAML parses")
}

fn ok(value: Value) -> (BootstrapConfig, Vec<Warning>) {
    from_value(value, &Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(value: Value) -> String {
    from_value(value, &Options::default())
        .expect_err("should be rejected")
        .to_string()
}

/// A valid ADS bootstrap (the SotW fixture), to break one field at a time.
fn ads_value() -> Value {
    yaml(LEGATE_CP_SOTW)
}

fn port(config: &BootstrapConfig) -> u16 {
    config.admin.expect("admin").port()
}

#[test]
fn legate_cp_output_loads_unchanged() {
    let (config, warnings) = ok(yaml(LEGATE_CP_SOTW));
    assert_eq!(warnings, vec![]);
    assert_eq!(config.node.cluster, "checkout");
    assert!(
        config.node.id.starts_with("checkout-"),
        "{}",
        config.node.id
    );
    assert_eq!(config.admin, Some("127.0.0.1:9901".parse().expect("addr")));
    assert_eq!(
        config.ads,
        Some(AdsConfig {
            cluster_name: "legate_xds".into(),
            delta: false,
            set_node_on_first_message_only: true,
        })
    );
    assert!(config.cds_via_ads && config.lds_via_ads);
    assert_eq!(config.static_clusters.len(), 1);
    assert_eq!(config.static_clusters[0].name, "legate_xds");
    assert!(config.static_listeners.is_empty());

    let (config, warnings) = ok(yaml(LEGATE_CP_DELTA));
    assert_eq!(warnings, vec![]);
    assert_eq!(config.admin, Some("127.0.0.1:0".parse().expect("addr")));
    let ads = config.ads.expect("ads");
    assert!(ads.delta);
    assert_eq!(ads.cluster_name, "legate_xds");
}

#[test]
fn legate_cp_generator_output_loads() {
    use legate_control_plane::bootstrap::EnvoyBootstrap;
    for (xds_host, delta) in [("127.0.0.1", false), ("localhost", true)] {
        let generator = EnvoyBootstrap {
            node: "checkout".into(),
            id_suffix: "abc123".into(),
            xds_host: xds_host.into(),
            xds_port: 18000,
            admin_host: "127.0.0.1".into(),
            admin_port: 0,
            delta,
            xds_tls: None,
        };
        let text = generator.to_yaml().expect("generates");
        let (config, warnings) = ok(yaml(&text));
        assert_eq!(warnings, vec![]);
        assert_eq!(config.node.id, "checkout-abc123");
        assert_eq!(config.node.cluster, "checkout");
        assert_eq!(config.ads.as_ref().map(|a| a.delta), Some(delta));
        assert!(config.cds_via_ads && config.lds_via_ads);
        // The typed path agrees with the YAML path.
        let (typed, _) = from_proto(generator.build(), &Options::default()).expect("typed");
        assert_eq!(typed, config);
    }
}

#[test]
fn static_fixture_with_anchors_and_ignored_fields() {
    let (config, warnings) = ok(yaml(STATIC));
    assert_eq!(config.admin, Some("127.0.0.1:0".parse().expect("addr")));
    assert_eq!(config.ads, None);
    assert!(!config.cds_via_ads && !config.lds_via_ads);
    assert_eq!(config.static_listeners.len(), 1);
    assert_eq!(config.static_listeners[0].name, "egress");
    assert_eq!(config.static_clusters[0].name, "payments");
    // camelCase input is Envoy's mapping too.
    assert_eq!(
        config.static_clusters[0]
            .connect_timeout
            .as_ref()
            .map(|d| d.nanos),
        Some(250_000_000)
    );
    // layered_runtime: silent. The rest: warnings.
    let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["stats_flush_interval", "admin.access_log_path"]);
    assert_eq!(
        warnings[1].to_string(),
        "admin.access_log_path: ignored: admin requests are not logged"
    );
}

#[test]
fn files_by_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json_path = dir.path().join("bootstrap.json");
    std::fs::write(&json_path, ADS_JSON).expect("write");
    let (config, _) = load(&opts(&["-c", json_path.to_str().expect("utf-8")])).expect("json");
    assert_eq!(config.admin, Some("[::1]:9901".parse().expect("addr")));
    let ads = config.ads.expect("ads");
    assert_eq!(ads.cluster_name, "xds");
    assert!(ads.delta && !ads.set_node_on_first_message_only);
    assert!(config.cds_via_ads && !config.lds_via_ads);

    // No extension: YAML (which JSON also is).
    let plain = dir.path().join("bootstrap");
    std::fs::write(&plain, ADS_JSON).expect("write");
    load(&opts(&["-c", plain.to_str().expect("utf-8")])).expect("plain");

    // Binary proto.
    let pb = dir.path().join("bootstrap.pb");
    let proto: Bootstrap = legate_proto::json::from_json(&yaml(LEGATE_CP_SOTW)).expect("decode");
    std::fs::write(&pb, proto.encode_to_vec()).expect("write");
    let (config, _) = load(&opts(&["-c", pb.to_str().expect("utf-8")])).expect("pb");
    assert_eq!(config.node.cluster, "checkout");
}

#[test]
fn unknown_field_is_named() {
    let mut value = ads_value();
    let statics = value
        .as_object_mut()
        .and_then(|m| m.shift_remove("static_resources"))
        .expect("static_resources");
    value["statc_resources"] = statics;
    assert_eq!(
        err(value),
        "bootstrap: unknown field `statc_resources` (did you mean `static_resources`?)"
    );

    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]["set_node_on_first_message"] = json!(true);
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config: unknown field `set_node_on_first_message` \
         (did you mean `set_node_on_first_message_only`?)"
    );
}

#[test]
fn unknown_field_in_a_file_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &path,
        LEGATE_CP_SOTW.replace("connect_timeout:", "conect_timeout:"),
    )
    .expect("write");
    let e = load(&opts(&["-c", path.to_str().expect("utf-8")])).expect_err("unknown field");
    assert_eq!(e.source, path.display().to_string());
    assert_eq!(e.field, "static_resources.clusters[0]");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: static_resources.clusters[0]: unknown field `conect_timeout` \
             (did you mean `connect_timeout`?)",
            path.display()
        )
    );
}

#[test]
fn allow_unknown_static_fields_turns_them_into_warnings() {
    let mut value = ads_value();
    value["static_resources"]["clusters"][0]["conect_timeout"] = json!("1s");
    value["bogus"] = json!({"x": 1});
    let (config, warnings) = from_value(value, &opts(&["--allow-unknown-static-fields"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.static_clusters.len(), 1);
    let rendered: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "static_resources.clusters[0]: unknown field `conect_timeout` ignored \
             (--allow-unknown-static-fields)",
            ": unknown field `bogus` ignored (--allow-unknown-static-fields)",
        ]
    );
}

#[test]
fn api_type_rest_is_rejected() {
    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]["api_type"] = json!("REST");
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config.api_type: REST is not supported \
         (use GRPC or DELTA_GRPC)"
    );
    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]
        .as_object_mut()
        .expect("ads_config")
        .shift_remove("api_type");
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config.api_type: required: GRPC or DELTA_GRPC"
    );
}

#[test]
fn transport_api_version() {
    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]
        .as_object_mut()
        .expect("ads_config")
        .shift_remove("transport_api_version");
    ok(value); // AUTO, which Envoy reads as V3.
    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]["transport_api_version"] = json!("V2");
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config.transport_api_version: V2 is not supported; \
         use V3"
    );
}

#[test]
fn cds_config_must_be_ads() {
    let mut value = ads_value();
    value["dynamic_resources"]["cds_config"] = json!({"path_config_source": {"path": "/c.yaml"}});
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.cds_config: only `ads: {}` is supported \
         (found `path_config_source`)"
    );
    let mut value = ads_value();
    value["dynamic_resources"]["lds_config"] = json!({"api_config_source": {
        "api_type": "GRPC",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "legate_xds"}}],
    }});
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.lds_config: only `ads: {}` is supported \
         (found `api_config_source`)"
    );
    let mut value = ads_value();
    value["dynamic_resources"]
        .as_object_mut()
        .expect("dynamic_resources")
        .shift_remove("ads_config");
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.cds_config: `ads` needs dynamic_resources.ads_config"
    );
}

#[test]
fn google_grpc_is_rejected() {
    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]["grpc_services"] = json!([
        {"google_grpc": {"target_uri": "127.0.0.1:18000", "stat_prefix": "xds"}}
    ]);
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config.grpc_services[0].google_grpc: not supported; \
         use envoy_grpc: {cluster_name: <a static cluster>}"
    );
    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]["grpc_services"] = json!([]);
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config.grpc_services: exactly one gRPC service is \
         required (found 0)"
    );
}

#[test]
fn ads_cluster_must_exist_and_speak_http2() {
    let mut value = ads_value();
    value["static_resources"]["clusters"][0]
        .as_object_mut()
        .expect("cluster")
        .shift_remove("typed_extension_protocol_options");
    assert_eq!(
        err(value),
        "bootstrap: static_resources.clusters[0]: the ADS cluster `legate_xds` must use HTTP/2 \
         (gRPC): set typed_extension_protocol_options\
         [\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]\
         .explicit_http_config.http2_protocol_options"
    );

    let mut value = ads_value();
    value["static_resources"]["clusters"][0]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["explicit_http_config"] = json!({"http_protocol_options": {}});
    let e = err(value);
    assert!(
        e.starts_with(
            "bootstrap: static_resources.clusters[0].typed_extension_protocol_options\
             [\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]\
             .explicit_http_config.http_protocol_options: the ADS cluster `legate_xds` must use \
             HTTP/2"
        ),
        "{e}"
    );

    let mut value = ads_value();
    value["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] =
        json!("xds");
    assert_eq!(
        err(value),
        "bootstrap: dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: \
         `xds` is not a cluster in static_resources.clusters"
    );
}

#[test]
fn missing_config_is_an_error() {
    let e = load(&Options::default()).expect_err("no config");
    assert_eq!(
        e.to_string(),
        "bootstrap: at least one of --config-path (-c) or --config-yaml is required"
    );
    // Envoy treats empty flags as absent.
    let e = load(&opts(&["-c", "", "--config-yaml", ""])).expect_err("no config");
    assert_eq!(e.field, "");
}

#[test]
fn unreadable_file_and_syntax_errors_name_the_file() {
    let e = load(&opts(&["-c", "/nonexistent/bootstrap.yaml"])).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/bootstrap.yaml: cannot read: "),
        "{e}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "admin:\n  address: {socket_address: {port_value: 1}\nnode: {}\n",
    )
    .expect("write");
    let e = load(&opts(&["-c", path.to_str().expect("utf-8")])).expect_err("syntax");
    assert_eq!(e.source, format!("{}:3:1", path.display()));
    assert_eq!(
        e.message,
        "did not find expected ',' or '}', while parsing a flow mapping at line 2 column 12"
    );

    let json_path = dir.path().join("bad.json");
    std::fs::write(&json_path, "{\n  \"admin\": {,}\n}\n").expect("write");
    let e = load(&opts(&["-c", json_path.to_str().expect("utf-8")])).expect_err("syntax");
    assert_eq!(
        e.to_string(),
        format!("{}:2:13: key must be a string", json_path.display())
    );

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n").expect("write");
    let e = load(&opts(&["-c", empty.to_str().expect("utf-8")])).expect_err("empty");
    assert_eq!(
        e.to_string(),
        format!("{}: the document is empty", empty.display())
    );

    let e = load(&opts(&["--config-yaml", "[1, 2]"])).expect_err("not a mapping");
    assert_eq!(
        e.to_string(),
        "--config-yaml: a bootstrap must be a mapping, not a list"
    );
}

#[test]
fn config_yaml_is_merged_over_the_file_like_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, LEGATE_CP_SOTW).expect("write");
    let c = path.to_str().expect("utf-8");

    let (config, _) = load(&opts(&["-c", c])).expect("file alone");
    assert_eq!(port(&config), 9901);

    // A oneof set to 0 still overrides (the port is "set"), as in Envoy.
    let (config, _) = load(&opts(&[
        "-c",
        c,
        "--config-yaml",
        "admin: {address: {socket_address: {port_value: 0}}}",
    ]))
    .expect("merged");
    assert_eq!(config.admin, Some("127.0.0.1:0".parse().expect("addr")));

    // Lists are appended; the rest of the file is kept.
    let (config, _) = load(&opts(&[
        "-c",
        c,
        "--config-yaml",
        "{admin: {address: {socket_address: {port_value: 19902}}}, \
         static_resources: {clusters: [{name: extra, connect_timeout: 2s}]}}",
    ]))
    .expect("merged");
    assert_eq!(port(&config), 19902);
    let names: Vec<&str> = config
        .static_clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["legate_xds", "extra"]);
    assert_eq!(config.node.cluster, "checkout");
    assert!(config.ads.is_some());

    // --config-yaml alone is a whole bootstrap.
    let (config, _) = load(&opts(&[
        "--config-yaml",
        "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}",
    ]))
    .expect("yaml alone");
    assert_eq!(port(&config), 0);

    // Errors in the overlay name it; errors after merging name both.
    let e = load(&opts(&["-c", c, "--config-yaml", "admin: {adress: {}}"])).expect_err("typo");
    assert_eq!(
        e.to_string(),
        "--config-yaml: admin: unknown field `adress` (did you mean `address`?)"
    );
    let e = load(&opts(&[
        "-c",
        c,
        "--config-yaml",
        "dynamic_resources: {ads_config: {api_type: REST}}",
    ]))
    .expect_err("REST");
    assert_eq!(e.source, format!("{c} + --config-yaml"));
    assert_eq!(e.field, "dynamic_resources.ads_config.api_type");
}

#[test]
fn service_flags_override_the_node() {
    let config_yaml = yaml(LEGATE_CP_SOTW);
    let (config, _) = from_value(
        config_yaml.clone(),
        &opts(&["--service-cluster", "payments"]),
    )
    .expect("override");
    assert_eq!(config.node.cluster, "payments");
    assert!(config.node.id.starts_with("checkout-"));
    // The dumped bootstrap shows the node the proxy uses.
    assert_eq!(config.to_json()["node"]["cluster"], "payments");
    assert_eq!(
        config.to_json()["static_resources"]["clusters"][0]["name"],
        "legate_xds"
    );

    let (config, _) = from_value(
        config_yaml,
        &opts(&[
            "--service-node",
            "pod-7",
            "--service-cluster",
            "payments",
            "--service-zone",
            "eu-west-1a",
        ]),
    )
    .expect("override");
    assert_eq!(config.node.id, "pod-7");
    assert_eq!(config.node.cluster, "payments");
    assert_eq!(
        config.node.locality.as_ref().map(|l| l.zone.as_str()),
        Some("eu-west-1a")
    );

    // The flags can supply what ADS requires.
    let mut value = ads_value();
    value
        .as_object_mut()
        .expect("bootstrap")
        .shift_remove("node");
    assert_eq!(
        err(value.clone()),
        "bootstrap: node.id: required with ADS: set it in `node` or with --service-node"
    );
    let (config, _) = from_value(
        value,
        &opts(&["--service-node", "n", "--service-cluster", "checkout"]),
    )
    .expect("flags fill the node");
    assert_eq!(
        (config.node.id.as_str(), config.node.cluster.as_str()),
        ("n", "checkout")
    );
}

#[test]
fn admin_address() {
    let with_admin =
        |socket_address: Value| json!({"admin": {"address": {"socket_address": socket_address}}});
    assert_eq!(
        err(with_admin(json!({"address": "localhost", "port_value": 0}))),
        "bootstrap: admin.address.socket_address.address: `localhost` is not an IP address"
    );
    assert_eq!(
        err(with_admin(
            json!({"address": "127.0.0.1", "port_value": 70000})
        )),
        "bootstrap: admin.address.socket_address.port_value: 70000 is not a port (0..=65535)"
    );
    assert_eq!(
        err(with_admin(
            json!({"address": "127.0.0.1", "named_port": "http"})
        )),
        "bootstrap: admin.address.socket_address.named_port: not supported; use port_value"
    );
    assert_eq!(
        err(json!({"admin": {"address": {"pipe": {"path": "/tmp/admin"}}}})),
        "bootstrap: admin.address.pipe: unix domain sockets are not supported; use socket_address"
    );
    let (config, _) = ok(json!({"admin": {"profile_path": "/tmp/prof"}}));
    assert_eq!(config.admin, None);
    let (config, _) = ok(json!({}));
    assert_eq!(config.admin, None);
}

#[test]
fn classification() {
    let value = |extra: Value| {
        let mut v = ads_value();
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    assert_eq!(
        err(value(
            json!({"static_resources": {"secrets": [{"name": "tls"}]}})
        )),
        "bootstrap: static_resources.secrets: not supported yet"
    );
    assert_eq!(
        err(value(json!({"header_prefix": "x-acme"}))),
        "bootstrap: header_prefix: not supported: headers keep the `x-envoy-` prefix"
    );
    assert_eq!(
        err(value(json!({"cluster_manager": {"upstream_bind_config": {
            "source_address": {"address": "10.0.0.1", "port_value": 0}
        }}}))),
        "bootstrap: cluster_manager.upstream_bind_config: not supported: upstream connections \
         use the system's source address"
    );
    let (_, warnings) = ok(value(json!({
        "cluster_manager": {"local_cluster_name": "checkout"},
        "overload_manager": {},
        "watchdogs": {},
        "stats_sinks": [{"name": "envoy.stat_sinks.statsd"}],
        "tracing": {},
        "layered_runtime": {"layers": [{"name": "rt", "rtds_layer": {"name": "rt"}}]},
        "default_socket_interface":
            "envoy.extensions.network.socket_interface.default_socket_interface",
    })));
    let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "cluster_manager.local_cluster_name",
            "stats_sinks",
            "watchdogs",
            "tracing",
            "overload_manager",
        ]
    );
}

#[test]
fn duplicate_static_clusters() {
    let mut value = ads_value();
    let cluster = value["static_resources"]["clusters"][0].clone();
    value["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(cluster);
    assert_eq!(
        err(value),
        "bootstrap: static_resources.clusters[1].name: duplicate cluster `legate_xds` \
         (also static_resources.clusters[0])"
    );
}

#[test]
fn fixtures_exist_for_envoy_validate() {
    // Kept as files so `envoy --mode validate -c <fixture>` can check them.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bootstrap/testdata");
    for name in [
        "legate_cp_sotw.yaml",
        "legate_cp_delta.yaml",
        "static.yaml",
        "ads.json",
    ] {
        let path = dir.join(name);
        load(&opts(&["-c", path.to_str().expect("utf-8")]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Start-up converts the bootstrap with the core descriptor set only (`legate_proto::json::Codec`):
/// decoding the whole set would cost ~47 MiB of heap while it lives (it used to stay for the
/// life of the process). Covers what `server::main` does: `load` of a `-c` file, and
/// `to_json` for the admin API, for every bootstrap legate-cp generates (SotW, delta, TLS to
/// the control plane) and the static fixture.
#[test]
fn startup_never_decodes_the_whole_descriptor_set() {
    use legate_control_plane::bootstrap::{EnvoyBootstrap, XdsClientTls};
    use legate_proto::descriptors::full_set_uses_on_this_thread;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, (delta, tls)) in [(false, false), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let generator = EnvoyBootstrap {
            node: "checkout".into(),
            id_suffix: "abc123".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: 18000,
            admin_host: "127.0.0.1".into(),
            admin_port: 0,
            delta,
            xds_tls: tls.then(|| XdsClientTls {
                ca: dir.path().join("ca.pem"),
                client: Some((dir.path().join("c.pem"), dir.path().join("c.key"))),
                sni: Some("legate-cp".into()),
            }),
        };
        let path = dir.path().join(format!("bootstrap-{i}.yaml"));
        std::fs::write(&path, generator.to_yaml().expect("generates")).expect("write");
        files.push(path);
    }
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bootstrap/testdata");
    files.push(testdata.join("static.yaml"));
    files.push(testdata.join("ads.json"));
    let before = full_set_uses_on_this_thread();
    for path in &files {
        let path = path.to_str().expect("UTF-8 path");
        let (config, _) = load(&opts(&["-c", path])).unwrap_or_else(|e| panic!("{e}"));
        let json = config.to_json();
        assert!(
            json["static_resources"]["clusters"][0]["name"].is_string(),
            "{json}"
        );
        assert_eq!(
            full_set_uses_on_this_thread(),
            before,
            "loading {path} decoded the whole descriptor set"
        );
    }
    // The counter does count: a type outside the core set needs the whole set.
    let mut other = yaml(STATIC);
    other["admin"]["access_log"] = json!([{"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}}]);
    ok(other);
    assert_eq!(full_set_uses_on_this_thread(), before + 1);
}
