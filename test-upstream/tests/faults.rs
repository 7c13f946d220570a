//! Each fault over HTTP/1.1 and h2c, against a real `Upstream` over TCP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Failed, VERSIONS, WAIT, get, id, timed};
use http::Version;
use legate_test_upstream::{AttemptLog, FaultConfig, Outcome, ResetKind, Upstream, dead_addr};

#[tokio::test]
async fn status_sequence_per_test_id() {
    let up = Upstream::start("seq").await.expect("start");
    for v in VERSIONS {
        let a = id("seq-a", v);
        let b = id("seq-b", v);
        let mut statuses = Vec::new();
        let mut attempts = Vec::new();
        for _ in 0..4 {
            let r = get(
                up.addr,
                v,
                &[("x-test-id", &a), ("x-fault-sequence", "503,502,200")],
            )
            .await
            .expect("reply");
            statuses.push(r.status);
            attempts.push(r.json()["attempt"].as_u64().expect("attempt"));
        }
        assert_eq!(statuses, [503, 502, 200, 200], "{v:?}");
        assert_eq!(attempts, [1, 2, 3, 4], "{v:?}");
        // Another id starts from the beginning of its own sequence.
        let r = get(
            up.addr,
            v,
            &[("x-test-id", &b), ("x-fault-sequence", "503,200")],
        )
        .await
        .expect("reply");
        assert_eq!(r.status, 503);
        assert_eq!(
            up.log().outcomes(&a),
            [
                Outcome::Status(503),
                Outcome::Status(502),
                Outcome::Status(200),
                Outcome::Status(200)
            ]
        );
        assert_eq!(up.log().count(&b), 1);
        assert_eq!(up.log().hosts(&a), ["seq"; 4]);
    }
}

#[tokio::test]
async fn request_id_counts_unless_test_id_is_present() {
    let up = Upstream::start("rid").await.expect("start");
    for v in VERSIONS {
        let rid = id("rid", v);
        let tid = id("tid", v);
        let seq = ("x-fault-sequence", "503,200");
        let r1 = get(up.addr, v, &[("x-request-id", &rid), seq])
            .await
            .expect("1");
        let r2 = get(up.addr, v, &[("x-request-id", &rid), seq])
            .await
            .expect("2");
        // x-test-id wins: a fresh id even though x-request-id repeats.
        let r3 = get(
            up.addr,
            v,
            &[("x-request-id", &rid), ("x-test-id", &tid), seq],
        )
        .await
        .expect("3");
        assert_eq!([r1.status, r2.status, r3.status], [503, 200, 503], "{v:?}");
        assert_eq!(up.log().count(&rid), 2);
        assert_eq!(up.log().count(&tid), 1);
    }
    // Requests without an id are attempt 1 and not logged.
    let r = get(
        up.addr,
        Version::HTTP_11,
        &[("x-fault-sequence", "503,200")],
    )
    .await
    .expect("reply");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["attempt"], 1);
    assert_eq!(up.log().ids().len(), 4);
}

#[tokio::test]
async fn delays() {
    let up = Upstream::start("delay").await.expect("start");
    for v in VERSIONS {
        let r = get(up.addr, v, &[("x-fault-delay-ms", "300")])
            .await
            .expect("reply");
        assert_eq!(r.status, 200);
        assert!(r.to_headers >= Duration::from_millis(300), "{v:?} {r:?}");

        let t = id("delay-seq", v);
        let h = [
            ("x-test-id", t.as_str()),
            ("x-fault-delay-sequence", "1000,0"),
        ];
        let first = get(up.addr, v, &h).await.expect("first");
        let second = get(up.addr, v, &h).await.expect("second");
        assert!(
            first.to_headers >= Duration::from_millis(1000),
            "{v:?} {first:?}"
        );
        assert!(
            second.to_headers < Duration::from_millis(1000),
            "{v:?} {second:?}"
        );
    }
}

#[tokio::test]
async fn instance_delay_and_header_override() {
    let up = Upstream::builder("slow")
        .faults(FaultConfig {
            delay: Duration::from_millis(250),
            ..FaultConfig::default()
        })
        .start()
        .await
        .expect("start");
    for v in VERSIONS {
        let r = get(up.addr, v, &[]).await.expect("reply");
        assert!(r.to_headers >= Duration::from_millis(250), "{v:?} {r:?}");
        let t = id("slow-override", v);
        let r = get(up.addr, v, &[("x-test-id", &t), ("x-fault-delay-ms", "0")])
            .await
            .expect("reply");
        assert_eq!(r.status, 200);
        // The override took effect: the logged attempt was answered.
        assert_eq!(up.log().outcomes(&t), [Outcome::Status(200)]);
    }
}

#[tokio::test]
async fn reset_before_headers() {
    let up = Upstream::start("rst").await.expect("start");
    for v in VERSIONS {
        let t = id("rst-before", v);
        let mut client = Client::connect(up.addr, v).await;
        let err = client
            .get(&[("x-test-id", &t), ("x-fault-reset", "before-headers")])
            .await
            .expect_err("reset");
        assert!(matches!(err, Failed::BeforeHeaders(_)), "{v:?} {err:?}");
        assert_eq!(
            up.log().outcomes(&t),
            [Outcome::Reset(ResetKind::BeforeHeaders)]
        );
        if v == Version::HTTP_2 {
            // Only the stream was reset; the connection still works.
            let r = client.get(&[]).await.expect("same h2 connection");
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(up.stats().http2_connections, 1);
}

#[tokio::test]
async fn reset_after_headers() {
    let up = Upstream::start("rst-after").await.expect("start");
    for v in VERSIONS {
        let t = id("rst-after", v);
        let err = get(
            up.addr,
            v,
            &[
                ("x-test-id", &t),
                ("x-fault-reset", "after-headers"),
                ("x-fault-status", "201"),
            ],
        )
        .await
        .expect_err("body aborted");
        assert!(matches!(err, Failed::InBody(201, _)), "{v:?} {err:?}");
        assert_eq!(
            up.log().outcomes(&t),
            [Outcome::Reset(ResetKind::AfterHeaders)]
        );
    }
}

#[tokio::test]
async fn reset_after_part_of_a_slow_body() {
    let up = Upstream::start("rst-mid").await.expect("start");
    for v in VERSIONS {
        let err = get(
            up.addr,
            v,
            &[
                ("x-fault-reset", "after-headers"),
                ("x-fault-body-chunks", "3"),
                ("x-fault-body-delay-ms", "50"),
            ],
        )
        .await
        .expect_err("body aborted");
        assert!(matches!(err, Failed::InBody(200, _)), "{v:?} {err:?}");
    }
}

#[tokio::test]
async fn reset_sequence() {
    let up = Upstream::start("rst-seq").await.expect("start");
    for v in VERSIONS {
        let t = id("rst-seq", v);
        let h = [
            ("x-test-id", t.as_str()),
            (
                "x-fault-reset-sequence",
                "before-headers,after-headers,none",
            ),
        ];
        let e1 = get(up.addr, v, &h).await.expect_err("1st resets");
        let e2 = get(up.addr, v, &h).await.expect_err("2nd aborts");
        let r3 = get(up.addr, v, &h).await.expect("3rd answers");
        assert!(matches!(e1, Failed::BeforeHeaders(_)), "{v:?} {e1:?}");
        assert!(matches!(e2, Failed::InBody(200, _)), "{v:?} {e2:?}");
        assert_eq!(r3.status, 200);
        assert_eq!(r3.json()["attempt"], 3);
        assert_eq!(
            up.log().outcomes(&t),
            [
                Outcome::Reset(ResetKind::BeforeHeaders),
                Outcome::Reset(ResetKind::AfterHeaders),
                Outcome::Status(200)
            ]
        );
    }
}

#[tokio::test]
async fn slow_body() {
    let up = Upstream::start("slow-body").await.expect("start");
    for v in VERSIONS {
        let r = get(
            up.addr,
            v,
            &[
                ("x-fault-body-chunks", "4"),
                ("x-fault-body-delay-ms", "100"),
            ],
        )
        .await
        .expect("reply");
        assert_eq!(r.status, 200);
        assert!(r.body_time >= Duration::from_millis(300), "{v:?} {r:?}");
        assert!(r.data_frames >= 2, "{v:?} {r:?}");
        // The chunks add up to the complete echo body.
        assert_eq!(r.json()["instance"], "slow-body");
    }
}

#[tokio::test]
async fn grpc_status_in_trailers() {
    let up = Upstream::start("grpc").await.expect("start");
    for v in VERSIONS {
        let t = id("grpc", v);
        // HTTP/1.1 only carries trailers to clients that ask for them.
        let h = [
            ("te", "trailers"),
            ("x-test-id", t.as_str()),
            ("x-fault-grpc-status-sequence", "14,0"),
        ];
        let r = get(up.addr, v, &h).await.expect("reply");
        assert_eq!(r.status, 200, "{v:?}");
        assert_eq!(r.header("content-type"), Some("application/grpc"));
        assert_eq!(r.header("grpc-status"), None);
        assert_eq!(r.trailer("grpc-status"), Some("14"), "{v:?} {r:?}");
        assert!(r.trailer("grpc-message").is_some());
        assert!(r.body.is_empty());

        let r = get(up.addr, v, &h).await.expect("reply");
        assert_eq!(r.trailer("grpc-status"), Some("0"), "{v:?} {r:?}");
        // One uncompressed, length-prefixed message holding the echo JSON.
        assert_eq!(r.body[0], 0);
        let len = u32::from_be_bytes([r.body[1], r.body[2], r.body[3], r.body[4]]);
        assert_eq!(len as usize, r.body.len() - 5);
        let json: serde_json::Value = serde_json::from_slice(&r.body[5..]).expect("json");
        assert_eq!(json["attempt"], 2);
        assert_eq!(up.log().outcomes(&t), [Outcome::Grpc(14), Outcome::Grpc(0)]);
    }
}

#[tokio::test]
async fn grpc_trailers_only() {
    let up = Upstream::start("grpc-to").await.expect("start");
    for v in VERSIONS {
        let r = get(
            up.addr,
            v,
            &[
                ("te", "trailers"),
                ("x-fault-grpc-status", "14"),
                ("x-fault-grpc-status-in-headers", "1"),
            ],
        )
        .await
        .expect("reply");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/grpc"));
        assert_eq!(r.header("grpc-status"), Some("14"), "{v:?} {r:?}");
        assert!(r.trailers.is_none(), "{v:?} {r:?}");
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn fail_rate_is_deterministic_given_a_seed() {
    let config = |seed| FaultConfig {
        fail_rate: 0.5,
        fail_status: http::StatusCode::BAD_GATEWAY,
        seed,
        ..FaultConfig::default()
    };
    let pattern = |up: &Upstream, v: Version| {
        let addr = up.addr;
        async move {
            let mut client = Client::connect(addr, v).await;
            let mut statuses = Vec::new();
            for _ in 0..24 {
                statuses.push(client.get(&[]).await.expect("reply").status);
            }
            statuses
        }
    };
    let a = Upstream::builder("a")
        .faults(config(7))
        .start()
        .await
        .expect("a");
    let b = Upstream::builder("b")
        .faults(config(7))
        .start()
        .await
        .expect("b");
    let c = Upstream::builder("c")
        .faults(config(8))
        .start()
        .await
        .expect("c");
    let pa = pattern(&a, Version::HTTP_11).await;
    let pb = pattern(&b, Version::HTTP_2).await;
    let pc = pattern(&c, Version::HTTP_11).await;
    assert_eq!(pa, pb);
    assert_ne!(pa, pc);
    let expected: Vec<u16> = (1..=24)
        .map(|n| if config(7).fails(n) { 502 } else { 200 })
        .collect();
    assert_eq!(pa, expected);
    assert!(pa.contains(&502) && pa.contains(&200), "{pa:?}");
    // A status header still wins over the instance default.
    let r = get(a.addr, Version::HTTP_11, &[("x-fault-status", "200")])
        .await
        .expect("reply");
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn shared_log_across_a_group() {
    let group = Upstream::start_group(&["g1", "g2"], Arc::new(legate_test_upstream::Echo))
        .await
        .expect("group");
    let (g1, g2) = (&group[0], &group[1]);
    assert!(Arc::ptr_eq(g1.log(), g2.log()));
    for v in VERSIONS {
        let t = id("group", v);
        let h = [
            ("x-test-id", t.as_str()),
            ("x-fault-sequence", "503,503,200"),
        ];
        // Attempts alternate hosts, as retries through a proxy would; the
        // sequence follows the attempt count across both.
        let mut statuses = Vec::new();
        for host in [g1, g2, g1] {
            statuses.push(get(host.addr, v, &h).await.expect("reply").status);
        }
        assert_eq!(statuses, [503, 503, 200], "{v:?}");
        let log = g1.log();
        assert_eq!(log.count(&t), 3);
        assert_eq!(log.hosts(&t), ["g1", "g2", "g1"]);
        let attempts = log.attempts(&t);
        assert_eq!(
            attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(attempts.windows(2).all(|w| w[0].at <= w[1].at));
    }

    // The same with an explicitly shared log, and per-instance logs differ.
    let log = AttemptLog::shared();
    let x = Upstream::builder("x")
        .log(log.clone())
        .start()
        .await
        .expect("x");
    let y = Upstream::builder("y")
        .log(log.clone())
        .start()
        .await
        .expect("y");
    let z = Upstream::start("z").await.expect("z");
    for host in [&x, &y, &z] {
        get(host.addr, Version::HTTP_2, &[("x-test-id", "shared")])
            .await
            .expect("reply");
    }
    assert_eq!(log.hosts("shared"), ["x", "y"]);
    assert_eq!(z.log().hosts("shared"), ["z"]);
}

#[tokio::test]
async fn cancelled_attempt_is_logged() {
    let up = Upstream::start("cancel").await.expect("start");
    for v in VERSIONS {
        let t = id("cancel", v);
        let mut client = Client::connect(up.addr, v).await;
        let headers = [("x-test-id", t.as_str()), ("x-fault-delay-ms", "5000")];
        let req = client.get_unbounded(&headers);
        let gave_up = tokio::time::timeout(Duration::from_millis(200), req).await;
        assert!(
            gave_up.is_err(),
            "{v:?}: the delay should outlast the client"
        );
        drop(client);
        let attempts = up.log().wait_settled(&t, 1, WAIT).await;
        assert_eq!(
            attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            [Outcome::Cancelled],
            "{v:?}"
        );
    }
}

#[tokio::test]
async fn static_body_mode() {
    let up = Upstream::builder("bench")
        .faults(FaultConfig {
            static_body: Some("hello".into()),
            ..FaultConfig::default()
        })
        .start()
        .await
        .expect("start");
    for v in VERSIONS {
        // Fault headers are ignored in fast mode.
        let r = get(
            up.addr,
            v,
            &[
                ("x-test-id", "s"),
                ("x-fault-status", "503"),
                ("x-fault-reset", "before-headers"),
            ],
        )
        .await
        .expect("reply");
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"hello");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.header("x-upstream-instance"), Some("bench"));
    }
    assert_eq!(up.requests(), 2);
    assert!(up.log().ids().is_empty());
}

#[tokio::test]
async fn connection_and_protocol_counters() {
    let up = Upstream::start("count").await.expect("start");
    let mut h1 = Client::connect(up.addr, Version::HTTP_11).await;
    for _ in 0..3 {
        h1.get(&[]).await.expect("h1");
    }
    let mut h2 = Client::connect(up.addr, Version::HTTP_2).await;
    for _ in 0..2 {
        h2.get(&[]).await.expect("h2");
    }
    get(up.addr, Version::HTTP_11, &[])
        .await
        .expect("another h1");
    let s = up.stats();
    assert_eq!(s.connections, 3, "{s:?}");
    assert_eq!(up.connections(), 3);
    assert_eq!((s.http1_connections, s.http2_connections), (2, 1), "{s:?}");
    assert_eq!((s.http1_requests, s.http2_requests), (4, 2), "{s:?}");
    assert_eq!(s.requests, 6);
}

#[tokio::test]
async fn dead_addr_refuses_connections() {
    let addr = dead_addr();
    let err = timed(tokio::net::TcpStream::connect(addr))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}
