//! The gateway as the migration's traffic tool: several hosts per upstream (balanced, taken
//! out when they fail, checked, re-resolved), traffic split between two upstreams, requests
//! mirrored, and the routes reloaded while requests flow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use common::testkit::Running;

use crate::auth::Issuer;
use crate::helpers::{
    closed_port, gateway_metrics, metric, routes_file, spawn_flaky_upstream, spawn_gateway,
    spawn_named_upstream, spawn_upstream, wait_for_metrics,
};

/// A free port on the loopback interface.
async fn free_port() -> u16 {
    closed_port().await.port()
}

/// A real upstream process (Python's HTTP server, keep-alive) answering every GET and POST
/// with `name`.
struct Process {
    child: tokio::process::Child,
}

const SERVER: &str = r#"
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = sys.argv[2].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = answer
    do_POST = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

impl Process {
    async fn start(port: u16, name: &str) -> Self {
        let child = tokio::process::Command::new("python3")
            .args(["-c", SERVER, &port.to_string(), name])
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        // Listening once a connection is accepted.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "{name} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child }
    }

    async fn kill(mut self) {
        self.child.kill().await.unwrap();
        let _ = self.child.wait().await;
    }
}

async fn body(client: &reqwest::Client, gateway: &Running, path: &str) -> (u16, String) {
    let response = client.get(gateway.url(path)).send().await.unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

fn count(answers: &[(u16, String)], name: &str) -> usize {
    answers.iter().filter(|(_, body)| body == name).count()
}

#[tokio::test]
async fn three_upstream_processes_are_balanced_and_one_killed_is_passed_over_until_it_returns() {
    let ports = [free_port().await, free_port().await, free_port().await];
    let mut processes = Vec::new();
    for (port, name) in ports.iter().zip(["a", "b", "c"]) {
        processes.push(Some(Process::start(*port, name).await));
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|port| format!("\"http://127.0.0.1:{port}\""))
        .collect();
    let (_file, mut env) = routes_file(&format!(
        "[[routes]]\nprefix = \"/lb\"\nupstream = [{}]\nmax_fails = 1\nfail_timeout_ms = 500\n",
        urls.join(", ")
    ));
    // One worker: round robin is then exact.
    env.push(("GATEWAY_WORKERS", "1".to_owned()));
    let unused = closed_port().await;
    let gateway = spawn_gateway(unused, unused, &env).await;
    let client = reqwest::Client::new();

    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(body(&client, &gateway, "/lb/x").await);
    }
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(count(&answers, name), 10, "round robin: {answers:?}");
    }

    // b is killed: no request fails (GETs and a POST go to another host: nothing was sent to
    // b), and once it is out nothing more is tried on it.
    processes[1].take().unwrap().kill().await;
    let mut answers = Vec::new();
    for i in 0..30 {
        if i % 10 == 0 {
            let response = client
                .post(gateway.url("/lb/orders"))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "a POST moves to another host");
        }
        answers.push(body(&client, &gateway, "/lb/x").await);
    }
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert_eq!(count(&answers, "b"), 0);
    // b's turns go to the host after it.
    assert!(
        count(&answers, "a") >= 5 && count(&answers, "c") >= 10,
        "{answers:?}"
    );
    let b = format!("127.0.0.1:{}", ports[1]);
    let metrics = gateway_metrics(&gateway).await;
    assert!(
        metric(
            &metrics,
            &format!(
                "gateway_upstream_host_requests_total{{host=\"{b}\",outcome=\"retried\",upstream=\"lb\"}}"
            )
        ) >= 1.0,
        "{metrics}"
    );

    // b comes back on its port: after its fail timeout a trial request finds it, and it is
    // in the rotation again.
    processes[1] = Some(Process::start(ports[1], "b").await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answers: Vec<_> =
            futures_util::future::join_all((0..6).map(|_| body(&client, &gateway, "/lb/x"))).await;
        assert!(
            answers.iter().all(|(status, _)| *status == 200),
            "{answers:?}"
        );
        if count(&answers, "b") > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for process in processes.into_iter().flatten() {
        process.kill().await;
    }
}

#[tokio::test]
async fn least_request_balancing_passes_over_a_host_that_holds_requests() {
    let quick = spawn_upstream().await;
    let slow = spawn_upstream().await;
    let (q, s) = (quick.addr, slow.addr);
    // `/slow` takes 1.5 s on either; with least-request, requests sent while one is held go
    // to the other host.
    let (_file, env) = routes_file(&format!(
        "[[routes]]\nprefix = \"/lr\"\nupstream = [\"http://{s}\", \"http://{q}\"]\nbalance = \"least_request\"\n"
    ));
    let unused = closed_port().await;
    let gateway = Arc::new(spawn_gateway(unused, unused, &env).await);
    let held = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            reqwest::get(gateway.url("/lr/slow"))
                .await
                .unwrap()
                .status()
        })
    };
    // Let the first request get under way on one host (the first in turn: `s`).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let echo: Value = client
            .get(gateway.url("/lr/x"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(echo["path"], "/x");
    }
    assert_eq!(held.await.unwrap(), 200);
    let metrics = gateway_metrics(&gateway).await;
    let ok = |addr: SocketAddr| {
        metric(
            &metrics,
            &format!(
                "gateway_upstream_host_requests_total{{host=\"{addr}\",outcome=\"ok\",upstream=\"lr\"}}"
            ),
        )
    };
    assert_eq!((ok(s), ok(q)), (1.0, 5.0), "{metrics}");
}

#[tokio::test]
async fn active_health_checks_take_a_failing_host_out_and_bring_it_back() {
    let good = spawn_upstream().await;
    let flaky = spawn_flaky_upstream().await;
    flaky.failing.store(true, Ordering::SeqCst);
    let (g, f) = (good.addr, flaky.server.addr);
    let (_file, env) = routes_file(&format!(
        "[[routes]]\nprefix = \"/hc\"\nupstream = [\"http://{g}\", \"http://{f}\"]\nhealth_check = {{ path = \"/readyz\", interval_ms = 100 }}\n"
    ));
    let unused = closed_port().await;
    let gateway = spawn_gateway(unused, unused, &env).await;
    let series = format!("gateway_upstream_host_healthy{{host=\"{f}\",upstream=\"hc\"}} 0");
    wait_for_metrics(&gateway, "the failing host out", |m| m.contains(&series)).await;
    for _ in 0..20 {
        let response = reqwest::get(gateway.url("/hc/x")).await.unwrap();
        assert_eq!(response.status(), 200, "only the healthy host serves");
    }
    flaky.failing.store(false, Ordering::SeqCst);
    let back = format!("gateway_upstream_host_healthy{{host=\"{f}\",upstream=\"hc\"}} 1");
    wait_for_metrics(&gateway, "the host back", |m| m.contains(&back)).await;
    let before = flaky.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(
            reqwest::get(gateway.url("/hc/x")).await.unwrap().status(),
            200
        );
    }
    assert!(
        flaky.hits.load(Ordering::SeqCst) > before,
        "the host serves again"
    );
}

#[tokio::test]
async fn a_dns_name_is_resolved_again_and_each_address_is_a_host() {
    let upstream = spawn_upstream().await;
    let port = upstream.addr.port();
    let (_file, env) = routes_file(&format!(
        "[[routes]]\nprefix = \"/dns\"\nupstream = \"http://localhost:{port}\"\ndns_refresh_ms = 100\n"
    ));
    let unused = closed_port().await;
    let gateway = spawn_gateway(unused, unused, &env).await;
    // Resolved: the upstream's hosts are the addresses `localhost` has, and the routes moved
    // to a new generation with them.
    let host = format!("host=\"127.0.0.1:{port}\"");
    let metrics = wait_for_metrics(&gateway, "localhost resolved", |m| {
        m.contains(&format!(
            "gateway_upstream_host_healthy{{{host},upstream=\"dns\"}}"
        ))
    })
    .await;
    assert!(
        metric(&metrics, "gateway_routes_generation") >= 2.0,
        "{metrics}"
    );
    for _ in 0..10 {
        let echo: Value = reqwest::get(gateway.url("/dns/x"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(echo["headers"]["host"], format!("localhost:{port}"));
    }
}

#[tokio::test]
async fn a_split_sends_its_share_sticky_per_client_and_token_subject() {
    let (old, _) = spawn_named_upstream("old").await;
    let (new, _) = spawn_named_upstream("new").await;
    let issuer = Issuer::start().await;
    let (o, n) = (old.addr, new.addr);
    let (_file, mut env) = routes_file(&format!(
        "[[routes]]\nprefix = \"/orders\"\nupstream = \"http://{o}\"\nsplit = {{ upstream = \"http://{n}\", weight = 20, name = \"orders-new\" }}\n"
    ));
    env.extend(issuer.env());
    // Clients are told apart by the address a trusted proxy reports.
    env.push(("GATEWAY_TRUSTED_PROXIES", "127.0.0.1".to_owned()));
    env.push(("GATEWAY_RATE_LIMIT_RPS", "0".to_owned()));
    let unused = closed_port().await;
    let gateway = Arc::new(spawn_gateway(unused, unused, &env).await);
    let client = reqwest::Client::new();
    let ask = |client_ip: String, token: Option<String>| {
        let (client, gateway) = (client.clone(), gateway.clone());
        async move {
            let mut request = client
                .get(gateway.url("/orders/1"))
                .header("x-forwarded-for", client_ip);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let clients = 3000;
    let answers: Vec<String> = futures_util::stream::iter(0..clients)
        .map(|i| {
            ask(
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                None,
            )
        })
        .buffered(16)
        .collect()
        .await;
    let to_new = answers.iter().filter(|a| *a == "new").count();
    let share = to_new as f64 / f64::from(clients);
    // 20 % ± 3 points (the standard deviation of 3000 fair draws is 0.7 points).
    assert!((0.17..=0.23).contains(&share), "{to_new} of {clients}");
    let metrics = gateway_metrics(&gateway).await;
    assert_eq!(
        metric(
            &metrics,
            "gateway_split_requests_total{arm=\"orders-new\",route=\"/orders/{*rest}\"}"
        ),
        to_new as f64
    );
    // Sticky: each client stays on its arm.
    for (i, first) in answers.iter().enumerate().take(40) {
        let ip = format!("10.0.{}.{}", i / 256, i % 256);
        for _ in 0..5 {
            assert_eq!(&ask(ip.clone(), None).await, first, "client {ip}");
        }
    }
    // With a token, the subject decides, wherever it comes from.
    for user in 0..20 {
        let token = issuer.token(&format!("user-{user}"), "profile", 300);
        let first = ask("10.200.0.1".to_owned(), Some(token.clone())).await;
        for ip in ["10.200.0.2", "10.200.0.3", "192.0.2.9"] {
            assert_eq!(
                ask(ip.to_owned(), Some(token.clone())).await,
                first,
                "user-{user}"
            );
        }
    }
}

/// A mirror that holds each request until released, counting what it received.
struct HeldMirror {
    server: Running,
    received: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<usize>>>,
    release: Arc<tokio::sync::Semaphore>,
}

async fn spawn_held_mirror() -> HeldMirror {
    let received = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (r, b, gate) = (received.clone(), bodies.clone(), release.clone());
    let router =
        axum::Router::new().fallback(axum::routing::any(move |body: axum::body::Bytes| {
            let (r, b, gate) = (r.clone(), b.clone(), gate.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                b.lock().unwrap().push(body.len());
                gate.acquire().await.unwrap().forget();
                "mirror"
            }
        }));
    let server = crate::helpers::serve(router).await;
    HeldMirror {
        server,
        received,
        bodies,
        release,
    }
}

#[tokio::test]
async fn a_slow_mirror_never_holds_the_client_and_differences_are_counted() {
    let primary = spawn_upstream().await;
    let twin = spawn_upstream().await;
    let held = spawn_held_mirror().await;
    let failing = closed_port().await;
    let (p, t, h) = (primary.addr, twin.addr, held.server.addr);
    let (_file, env) = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/slow"
        upstream = "http://{p}"
        mirror = {{ upstream = "http://{h}", methods = ["GET", "POST"] }}

        [[routes]]
        prefix = "/twin"
        upstream = "http://{p}"
        mirror = {{ upstream = "http://{t}" }}

        [[routes]]
        prefix = "/down"
        upstream = "http://{p}"
        mirror = {{ upstream = "http://{failing}" }}
        "#
    ));
    let unused = closed_port().await;
    let gateway = spawn_gateway(unused, unused, &env).await;
    let client = reqwest::Client::new();

    // The mirror holds the copy; the client has its whole answer meanwhile.
    let response = client
        .get(gateway.url("/slow/teapot"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(response.text().await.unwrap(), "short and stout");
    wait_until(|| held.received.load(Ordering::SeqCst) == 1).await;
    // A POST's body reaches both.
    let response = client
        .post(gateway.url("/slow/created"))
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    wait_until(|| held.received.load(Ordering::SeqCst) == 2).await;
    assert_eq!(*held.bodies.lock().unwrap(), [0, 5000]);
    let metrics = gateway_metrics(&gateway).await;
    assert_eq!(
        metric(
            &metrics,
            "gateway_mirror_requests_total{outcome=\"status_differs\",route=\"/slow/{*rest}\"}"
        ),
        0.0,
        "nothing compared while the mirror holds"
    );
    held.release.add_permits(2);
    wait_for_metrics(&gateway, "the held copies compared", |m| {
        metric(
            m,
            "gateway_mirror_requests_total{outcome=\"status_differs\",route=\"/slow/{*rest}\"}",
        ) == 2.0
    })
    .await;

    // A twin that answers the same: counted the same; a different body: counted as such.
    for path in ["/twin/teapot", "/twin/teapot", "/twin/echo"] {
        let response = client.get(gateway.url(path)).send().await.unwrap();
        assert!(response.status() == 418 || response.status() == 200);
        let _ = response.bytes().await.unwrap();
    }
    wait_for_metrics(&gateway, "the twin compared", |m| {
        metric(
            m,
            "gateway_mirror_requests_total{outcome=\"same\",route=\"/twin/{*rest}\"}",
        ) == 2.0
            && metric(
                m,
                "gateway_mirror_requests_total{outcome=\"body_differs\",route=\"/twin/{*rest}\"}",
            ) == 1.0
    })
    .await;
    // POSTs are not mirrored by default.
    let response = client
        .post(gateway.url("/twin/created"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // A mirror that cannot be reached: the client is served, the failure counted.
    for _ in 0..3 {
        let response = client
            .get(gateway.url("/down/teapot"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 418);
        let _ = response.bytes().await;
    }
    let metrics = wait_for_metrics(&gateway, "the failing mirror counted", |m| {
        metric(
            m,
            "gateway_mirror_requests_total{outcome=\"mirror_failed\",route=\"/down/{*rest}\"}",
        ) == 3.0
    })
    .await;
    let total: f64 = [
        "same",
        "body_differs",
        "status_differs",
        "mirror_failed",
        "primary_failed",
        "dropped",
    ]
    .iter()
    .map(|outcome| {
        metric(
            &metrics,
            &format!(
                "gateway_mirror_requests_total{{outcome=\"{outcome}\",route=\"/twin/{{*rest}}\"}}"
            ),
        )
    })
    .sum();
    assert_eq!(total, 3.0, "the POST was not mirrored");
}

async fn wait_until(check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "waited in vain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn split_routes(old: SocketAddr, new: SocketAddr, weight: u32) -> String {
    format!(
        "[[routes]]\nprefix = \"/r\"\nupstream = \"http://{old}\"\nsplit = {{ upstream = \"http://{new}\", weight = {weight} }}\n"
    )
}

#[tokio::test]
async fn the_routes_reload_under_load_without_losing_a_request_and_a_bad_file_changes_nothing() {
    let (old, _) = spawn_named_upstream("old").await;
    let (new, _) = spawn_named_upstream("new").await;
    let (o, n) = (old.addr, new.addr);
    let (file, mut env) = routes_file(&split_routes(o, n, 0));
    env.push(("GATEWAY_RATE_LIMIT_RPS", "0".to_owned()));
    let unused = closed_port().await;
    let gateway = Arc::new(spawn_gateway(unused, unused, &env).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (gateway, stop) = (gateway.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let response = client.get(gateway.url("/r/x")).send().await.unwrap();
                answers.push((response.status().as_u16(), response.text().await.unwrap()));
            }
            answers
        }));
    }
    let write = |text: String| {
        // Written beside and renamed: the gateway never reads half a file.
        let partial = file.path().with_extension("partial");
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(&partial, file.path()).unwrap();
    };
    let mut generation = metric(
        &gateway_metrics(&gateway).await,
        "gateway_routes_generation",
    );
    for weight in [100, 0, 50, 100, 0, 100] {
        write(split_routes(o, n, weight));
        let next = generation + 1.0;
        wait_for_metrics(&gateway, "the reload", |m| {
            metric(m, "gateway_routes_generation") >= next
        })
        .await;
        generation = next;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everything to the new upstream now; a bad file is refused and changes nothing.
    write("[[routes]]\nprefix = \"/r\"\nupstream = \"ftp://x\"\n".to_owned());
    wait_for_metrics(&gateway, "the refusal", |m| {
        metric(m, "gateway_routes_reloads_total{outcome=\"refused\"}") >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for task in load {
        answers.extend(task.await.unwrap());
    }
    assert!(answers.len() > 100, "{} requests", answers.len());
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "no request lost: {:?}",
        answers
            .iter()
            .filter(|(s, _)| *s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(count(&answers, "old") > 0 && count(&answers, "new") > 0);
    let metrics = gateway_metrics(&gateway).await;
    assert_eq!(metric(&metrics, "gateway_routes_generation"), generation);
    for _ in 0..10 {
        assert_eq!(
            body(&reqwest::Client::new(), &gateway, "/r/x").await.1,
            "new"
        );
    }
    // A new route in the file is served after the reload.
    write(format!(
        "{}[[routes]]\nprefix = \"/added\"\nupstream = \"http://{o}\"\n",
        split_routes(o, n, 100)
    ));
    wait_for_metrics(&gateway, "the added route", |m| {
        metric(m, "gateway_routes_generation") > generation
    })
    .await;
    assert_eq!(
        body(&reqwest::Client::new(), &gateway, "/added/x").await,
        (200, "old".to_owned())
    );
}

#[tokio::test]
async fn sighup_reloads_the_routes_file_of_a_running_gateway_process() {
    let (old, _) = spawn_named_upstream("old").await;
    let (new, _) = spawn_named_upstream("new").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    let (o, n) = (old.addr, new.addr);
    std::fs::write(
        &routes,
        format!("[[routes]]\nprefix = \"/h\"\nupstream = \"http://{o}\"\n"),
    )
    .unwrap();
    let addr_file = dir.path().join("addr");
    let log = dir.path().join("log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--addr-file", addr_file.to_str().unwrap()])
        .env("GATEWAY_ADDR", "127.0.0.1:0")
        .env("GATEWAY_ROUTES_FILE", &routes)
        .env("GATEWAY_ROUTES_POLL_MS", "0")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            break addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = format!("http://{addr}/h/x");
    let fetch = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    assert_eq!(fetch().await, "old");
    // All of it to the new service now, and a copy to the old one.
    std::fs::write(
        &routes,
        format!(
            "[[routes]]\nprefix = \"/h\"\nupstream = \"http://{o}\"\n\
             split = {{ upstream = \"http://{n}\", weight = 100, name = \"h-new\" }}\n\
             mirror = {{ upstream = \"http://{o}\" }}\n"
        ),
    )
    .unwrap();
    // Not looked at without the signal (polling is off).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fetch().await, "old");
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fetch().await != "new" {
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop it"
    );
    // The access line says where the request went; the mirror's different answer is logged
    // with both request ids.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (access, difference) = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let access = lines
            .iter()
            .rfind(|l| l["message"] == "request completed" && l["split"] == "h-new")
            .cloned();
        let difference = lines
            .iter()
            .find(|l| l["message"] == "the mirror answered differently")
            .cloned();
        if let (Some(access), Some(difference)) = (access, difference) {
            break (access, difference);
        }
        assert!(std::time::Instant::now() < deadline, "no such log lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(access["upstream"], "h-new", "{access}");
    assert_eq!(access["upstream.address"], n.to_string(), "{access}");
    assert_eq!(access["mirror"], "sent", "{access}");
    assert_eq!(difference["outcome"], "body_differs", "{difference}");
    let request_id = difference["request_id"].as_str().unwrap();
    assert_eq!(
        difference["mirror_request_id"],
        format!("{request_id}-mirror"),
        "{difference}"
    );
    child.kill().await.unwrap();
}
