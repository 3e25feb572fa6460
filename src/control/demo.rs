//! The try-it page at `/`: a voice channel page served by choir itself (`web/`: HTML, CSS and
//! choir's own dependency-free JavaScript client), embedded in the binary at build time so that
//! it needs no Node, no CDN and no network. `--demo-page false` turns it off (404, as before).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use super::Body;
use crate::sfu::api::ApiError;

/// (path, content type, body) of every asset.
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "/demo/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/demo/choir-client.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/choir-client.js"),
    ),
    (
        "/demo/sdp.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/sdp.js"),
    ),
    (
        "/demo/app.css",
        "text/css; charset=utf-8",
        include_str!("../../web/app.css"),
    ),
];

/// Only this origin's scripts, styles and API; no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Whether `path` is one of the page's (for the metrics' route label).
pub fn is_page_path(path: &str) -> bool {
    path == "/demo/config.json" || ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// Serves the page's `path`, or `None` when it is not one of the page's paths.
/// `auth` says whether the API needs tokens (the page then asks for one).
pub fn serve(method: &Method, path: &str, auth: bool) -> Option<Result<Response<Body>, ApiError>> {
    if !is_page_path(path) {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(Err(ApiError::new(
            405,
            format!("{path} takes GET, not {method}"),
        )));
    }
    let (kind, body) = match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some(&(_, kind, body)) => (kind, Bytes::from_static(body.as_bytes())),
        None => (
            "application/json",
            Bytes::from(json!({ "auth": auth, "api": "/api/voice" }).to_string()),
        ),
    };
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, kind)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // A `?token=` in the page's URL must not reach other sites.
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(BodyExt::boxed_unsync(Full::new(body)))
        .expect("static response");
    if path == "/" {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    Some(Ok(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_linked() {
        let index = ASSETS[0].2;
        for (path, _, body) in &ASSETS[1..] {
            assert!(!body.is_empty(), "{path} is empty");
            // The client's modules are imported by the scripts, not linked by the page.
            if !matches!(*path, "/demo/choir-client.js" | "/demo/sdp.js") {
                assert!(index.contains(path), "index.html does not link {path}");
            }
        }
        assert!(ASSETS[1].2.contains("./choir-client.js"));
        assert!(ASSETS[2].2.contains("./sdp.js"));
        assert!(!index.contains("http://") && !index.contains("https://"));
    }

    #[test]
    fn page_paths_and_methods() {
        assert!(serve(&Method::GET, "/api/voice/health", false).is_none());
        assert!(serve(&Method::GET, "/demo/", false).is_none());
        let r = serve(&Method::GET, "/", false).unwrap().unwrap();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let e = serve(&Method::POST, "/demo/app.js", false)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.status, 405);
    }
}
