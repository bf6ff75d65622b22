//! The web dashboard at `/`: a hash-routed single page written as plain ES
//! modules (no build step, no third-party code) and compiled into the binary,
//! so it works offline and always matches the API of the server serving it.
//!
//! The pages hold no data of their own — everything they show comes from
//! `/api/v1` with the visitor's key — so they are served without a key; the
//! login form is part of the page.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gleitzeit_core::ErrorCode;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../dashboard/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../dashboard/app.js"),
    },
    Asset {
        name: "dag.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../dashboard/dag.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../dashboard/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../dashboard/favicon.svg"),
    },
];

/// The pages load only from this server: no CDN, no inline script, no
/// framing by other sites. Inline styles stay allowed because SVG labels and
/// progress bars set them from script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A strong validator from the bytes (FNV-1a): the file names carry no
/// version, so browsers revalidate on each load and get a 304 when the
/// binary — and so the file — is unchanged.
fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset.body);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Stream URLs carry one-time tickets; no Referer repeats any URL.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Every file under the page's origin gets the page's policy: a script or
    // SVG opened on its own must not run with looser rules than `/`.
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    if let Ok(value) = HeaderValue::from_str(&tag) {
        h.insert(ETAG, value);
    }
    response
}

pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

pub(crate) async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => {
            let mut response = ApiError::new(
                ErrorCode::RouteNotFound,
                format!("the dashboard has no file `{name}`"),
            )
            .with_hint("The dashboard starts at `/`.")
            .into_response();
            response
                .headers_mut()
                .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_referenced_and_present() {
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..] {
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
            if asset.name != "dag.js" {
                assert!(
                    index.contains(&format!("/dashboard/{}", asset.name)),
                    "index.html does not load {}",
                    asset.name
                );
            }
        }
        let app = std::str::from_utf8(ASSETS[1].body).unwrap();
        assert!(app.contains("./dag.js"));
    }

    #[test]
    fn etags_differ_by_content() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b"a"), etag(b"a"));
    }
}
