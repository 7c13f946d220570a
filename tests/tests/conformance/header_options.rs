//! The connection manager's header options: `generate_request_id`,
//! `always_set_request_id_in_response`, `via`, `server_header_transformation`, and the host's
//! normalization before routing (`strip_trailing_host_dot`, `strip_any_host_port`,
//! `strip_matching_host_port`), `add_user_agent`.

use bytes::Bytes;
use legate_e2e::{Flavor, HttpResponse, h2c_send};
use serde_json::{Value, json};

use crate::common::{
    Fixture, STATIC_NODE_CLUSTER, STATIC_NODE_ID, Step, flavors, manager, raw_exchange,
    raw_upstream,
};

/// A connection manager routing requests for `domains` to `payments`, with `settings` merged
/// in.
fn hcm(domains: &[&str], settings: Value) -> Value {
    let route = json!({"match": {"prefix": "/"}, "route": {"cluster": "payments"}});
    manager(domains, &[route], &settings)
}

async fn fixture(
    flavor: Flavor,
    domains: &[&str],
    settings: Value,
) -> (legate_e2e::upstream::Upstream, Fixture) {
    let up = legate_e2e::upstream::Upstream::start("p1")
        .await
        .expect("upstream");
    let fx = Fixture::start_static(flavor, &[up.addr], hcm(domains, settings)).await;
    (up, fx)
}

/// What the upstream saw (its echo of the request).
fn seen(flavor: Flavor, r: &HttpResponse) -> Value {
    assert_eq!(r.status, 200, "{}: {}", flavor.name(), r.body);
    serde_json::from_str(&r.body).expect("the upstream's echo")
}

/// The request header `name` as the upstream saw it.
fn seen_header(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name].as_str().map(str::to_string)
}

fn response_header(r: &HttpResponse, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `always_set_request_id_in_response` copies the request's `x-request-id` (made by the proxy
/// or the client's) into the response; with `generate_request_id: false` a request without
/// one keeps none.
async fn request_ids_as_configured(flavor: Flavor) {
    let name = flavor.name();
    let (_up, fx) = fixture(
        flavor,
        &["*"],
        json!({"always_set_request_id_in_response": true}),
    )
    .await;
    let r = fx.get("/payments/x", &[]).await;
    let made = seen_header(&seen(flavor, &r), "x-request-id").expect("an x-request-id");
    assert_eq!(made.len(), 36, "{name}: a UUID: {made}");
    assert_eq!(response_header(&r, "x-request-id"), Some(made), "{name}");
    let r = fx.get("/payments/x", &[("x-request-id", "mine")]).await;
    assert_eq!(
        seen_header(&seen(flavor, &r), "x-request-id").as_deref(),
        Some("mine"),
        "{name}"
    );
    assert_eq!(response_header(&r, "x-request-id").as_deref(), Some("mine"));
    drop(fx);
    let settings = json!({"generate_request_id": false, "always_set_request_id_in_response": true});
    let (_up, fx) = fixture(flavor, &["*"], settings).await;
    let r = fx.get("/payments/x", &[]).await;
    assert_eq!(
        seen_header(&seen(flavor, &r), "x-request-id"),
        None,
        "{name}"
    );
    assert_eq!(response_header(&r, "x-request-id"), None, "{name}");
}

flavors!(
    request_ids_as_configured,
    request_ids_as_configured_envoy,
    request_ids_as_configured_legate
);

/// `via` is appended to the request's `via` (or becomes it) and to the response's.
async fn via_is_appended_both_ways(flavor: Flavor) {
    let name = flavor.name();
    let (_up, fx) = fixture(flavor, &["*"], json!({"via": "legate-test"})).await;
    let r = fx.get("/payments/x", &[]).await;
    assert_eq!(
        seen_header(&seen(flavor, &r), "via").as_deref(),
        Some("legate-test"),
        "{name}"
    );
    assert_eq!(response_header(&r, "via").as_deref(), Some("legate-test"));
    let r = fx.get("/payments/x", &[("via", "1.1 other")]).await;
    assert_eq!(
        seen_header(&seen(flavor, &r), "via").as_deref(),
        Some("1.1 other, legate-test"),
        "{name}"
    );
}

flavors!(
    via_is_appended_both_ways,
    via_is_appended_both_ways_envoy,
    via_is_appended_both_ways_legate
);

/// An upstream that answers `/has-server` with a `server` header of its own, anything else
/// without.
fn server_or_not(path: &str) -> Vec<u8> {
    if path == "/has-server" {
        b"HTTP/1.1 200 OK\r\nserver: upstream-srv\r\ncontent-length: 2\r\n\r\nok".to_vec()
    } else {
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
    }
}

/// `server_header_transformation`: OVERWRITE (the default) always says `server: envoy`,
/// APPEND_IF_ABSENT only when the upstream's response has no `server`, PASS_THROUGH never.
async fn server_header_transformations(flavor: Flavor) {
    let name = flavor.name();
    let (addr, _task) = raw_upstream(server_or_not).await;
    let cases = [
        ("OVERWRITE", Some("envoy"), Some("envoy")),
        ("APPEND_IF_ABSENT", Some("upstream-srv"), Some("envoy")),
        ("PASS_THROUGH", Some("upstream-srv"), None),
    ];
    for (transformation, with, without) in cases {
        let settings = json!({"server_header_transformation": transformation});
        let fx = Fixture::start_static(flavor, &[addr], hcm(&["*"], settings)).await;
        let r = fx.get("/has-server", &[]).await;
        assert_eq!(r.status, 200, "{name}: {transformation}");
        assert_eq!(
            response_header(&r, "server").as_deref(),
            with,
            "{name}: {transformation}: the upstream's server header"
        );
        let r = fx.get("/no-server", &[]).await;
        assert_eq!(
            response_header(&r, "server").as_deref(),
            without,
            "{name}: {transformation}: no server header upstream"
        );
    }
}

flavors!(
    server_header_transformations,
    server_header_transformations_envoy,
    server_header_transformations_legate
);

/// `strip_trailing_host_dot` and `strip_any_host_port` normalize the host before routing:
/// `a.example.:8080` routes to the virtual host of `a.example`, and the upstream gets that
/// host; the same over h2c (`:authority`). With `strip_matching_host_port` only the listener's
/// own port goes: `a.example:1` matches no virtual host (404).
async fn the_host_is_normalized_before_routing(flavor: Flavor) {
    let name = flavor.name();
    let settings = json!({"strip_trailing_host_dot": true, "strip_any_host_port": true});
    let (_up, fx) = fixture(flavor, &["a.example"], settings).await;
    let raw = raw_exchange(
        &fx,
        &[Step::Send(
            b"GET /payments/x HTTP/1.1\r\nhost: a.example.:8080\r\nconnection: close\r\n\r\n",
        )],
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {raw:?}");
    assert!(raw.contains("\"host\":\"a.example\""), "{name}: {raw:?}");
    let req = http::Request::get("http://a.example.:8080/payments/x")
        .body(Bytes::new())
        .expect("request");
    let r = h2c_send(fx.listener, req).await.expect("h2c");
    assert_eq!(r.status, 200, "{name}: h2c");
    let echo: Value = serde_json::from_slice(&r.body).expect("echo");
    assert_eq!(echo["host"], "a.example", "{name}: h2c");
    drop(fx);
    let settings = json!({"strip_matching_host_port": true});
    let (_up, fx) = fixture(flavor, &["a.example"], settings).await;
    let own = format!("a.example:{}", fx.listener.port());
    let r = fx.get_with_host("/payments/x", &own).await;
    assert_eq!(r.status, 200, "{name}: the listener's port");
    let r = fx.get_with_host("/payments/x", "a.example:1").await;
    assert_eq!(r.status, 404, "{name}: another port");
}

flavors!(
    the_host_is_normalized_before_routing,
    the_host_is_normalized_before_routing_envoy,
    the_host_is_normalized_before_routing_legate
);

/// `add_user_agent`: the local node's cluster becomes `x-envoy-downstream-service-cluster`
/// (whatever the client sent) and `user-agent` when the request has none, its id
/// `x-envoy-downstream-service-node`.
async fn add_user_agent_names_the_local_node(flavor: Flavor) {
    let name = flavor.name();
    let (_up, fx) = fixture(flavor, &["*"], json!({"add_user_agent": true})).await;
    let r = fx
        .get(
            "/payments/x",
            &[("x-envoy-downstream-service-cluster", "spoof")],
        )
        .await;
    let echo = seen(flavor, &r);
    assert_eq!(
        seen_header(&echo, "x-envoy-downstream-service-cluster").as_deref(),
        Some(STATIC_NODE_CLUSTER),
        "{name}"
    );
    assert_eq!(
        seen_header(&echo, "user-agent").as_deref(),
        Some(STATIC_NODE_CLUSTER),
        "{name}"
    );
    assert_eq!(
        seen_header(&echo, "x-envoy-downstream-service-node").as_deref(),
        Some(STATIC_NODE_ID),
        "{name}"
    );
    let r = fx.get("/payments/x", &[("user-agent", "curl/8")]).await;
    assert_eq!(
        seen_header(&seen(flavor, &r), "user-agent").as_deref(),
        Some("curl/8"),
        "{name}: the client's own"
    );
}

flavors!(
    add_user_agent_names_the_local_node,
    add_user_agent_names_the_local_node_envoy,
    add_user_agent_names_the_local_node_legate
);
