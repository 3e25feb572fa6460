//! The try-it page at `/` over real HTTP against the real daemon: served from the binary (no
//! file on disk is read), its assets, its config, `--demo-page false` / CHOIR_DEMO_PAGE.

mod common;

use std::time::Duration;

use common::Daemon;

/// A reply: status, content type, body, and the headers the page sets.
struct Reply {
    status: u16,
    kind: String,
    body: String,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `method path` at the root (not under /api/voice).
fn fetch(d: &Daemon, method: &str, path: &str) -> Reply {
    let r = ureq::request(method, &format!("{}{path}", d.base))
        .timeout(Duration::from_secs(10))
        .call();
    let res = match r {
        Ok(res) => res,
        Err(ureq::Error::Status(_, res)) => res,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let headers = [
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
    ]
    .iter()
    .filter_map(|h| res.header(h).map(|v| (h.to_string(), v.to_string())))
    .collect();
    Reply {
        status: res.status(),
        kind: res.header("content-type").unwrap_or("").to_string(),
        headers,
        body: res.into_string().unwrap(),
    }
}

#[test]
fn page_and_assets_are_served_from_the_binary() {
    let d = Daemon::start(&[]);
    let page = fetch(&d, "GET", "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.kind, "text/html; charset=utf-8");
    let html = &page.body;
    let csp = page
        .header("content-security-policy")
        .expect("CSP on the page");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    // Accessible plain HTML: labelled fields, a live status, an alert for errors, phone width.
    for needle in [
        r#"<html lang="en">"#,
        r#"name="viewport""#,
        r#"<label for="channel">"#,
        r#"<label for="name">"#,
        r#"role="status""#,
        r#"role="alert""#,
    ] {
        assert!(html.contains(needle), "index.html lacks {needle}");
    }
    // Nothing from another origin: no CDN, no network beyond choir.
    assert!(
        !html.contains("//cdn") && !html.contains("https://"),
        "{html}"
    );
    for (path, kind, needle) in [
        (
            "/demo/app.js",
            "text/javascript; charset=utf-8",
            "ChoirClient",
        ),
        (
            "/demo/choir-client.js",
            "text/javascript; charset=utf-8",
            "RTCPeerConnection",
        ),
        (
            "/demo/sdp.js",
            "text/javascript; charset=utf-8",
            "a=ice-lite",
        ),
        ("/demo/app.css", "text/css; charset=utf-8", "#participants"),
    ] {
        let r = fetch(&d, "GET", path);
        assert_eq!((r.status, r.kind.as_str()), (200, kind), "{path}");
        assert!(r.body.contains(needle), "{path} lacks {needle}");
        assert!(html.contains(path) || path == "/demo/choir-client.js" || path == "/demo/sdp.js");
    }
    let r = fetch(&d, "GET", "/demo/config.json");
    assert_eq!(r.status, 200);
    let config: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(config["auth"], false);
    // HEAD has the headers and no body; other methods are 405; unknown paths stay 404.
    let r = fetch(&d, "HEAD", "/demo/app.js");
    assert_eq!(
        (r.status, r.kind.as_str(), r.body.as_str()),
        (200, "text/javascript; charset=utf-8", "")
    );
    let r = fetch(&d, "POST", "/");
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.body.contains("takes GET"), "{}", r.body);
    let r = fetch(&d, "GET", "/demo/nope.js");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("no route"), "{}", r.body);
    // Counted under their own route label.
    let metrics = fetch(&d, "GET", "/metrics").body;
    assert!(
        metrics.contains(r#"choir_http_requests_total{route="page",status="200"}"#),
        "{metrics}"
    );
}

#[test]
fn config_says_when_the_page_must_ask_for_a_token() {
    let secret = "0123456789abcdef0123456789abcdef-page";
    let d = Daemon::start_with(&[], &[("CHOIR_AUTH_SECRET", secret)]);
    // The page itself needs no token; the API does.
    assert_eq!(fetch(&d, "GET", "/").status, 200);
    let body = fetch(&d, "GET", "/demo/config.json").body;
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["auth"], true);
    let (status, _) = d.get("rtp-capabilities/lobby");
    assert_eq!(status, 401);
}

#[test]
fn demo_page_false_turns_it_off() {
    let d = Daemon::start(&["--demo-page", "false"]);
    for path in ["/", "/demo/app.js", "/demo/config.json"] {
        let r = fetch(&d, "GET", path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    assert_eq!(d.health()["status"], "ok");
    let d = Daemon::start_with(&[], &[("CHOIR_DEMO_PAGE", "false")]);
    assert_eq!(fetch(&d, "GET", "/").status, 404);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["--demo-page", "maybe", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--demo-page") && err.contains("maybe"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["--print-config"])
        .output()
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["demoPage"], true);
}
