//! The web app: its files are built into the binary (no install step, nothing from the
//! internet), served with a content security policy that allows scripts from the box only
//! (no inline script, so text that slipped into the page as HTML still could not run).
//! Every page path (`/`, `/c/<slug>`, `/login`, …) answers the same `index.html`; the
//! script routes, so each page has a shareable URL.

use super::hls::accepts_gzip;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::OnceLock;

/// What the page may load and talk to: only the box. `blob:` for hls.js's worker and media
/// source and the QR image; `data:` for inline SVG icons.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../web/src/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/src/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/src/app.css"),
    },
    Asset {
        // Named by the page, so browsers never ask for `/favicon.ico`.
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../web/src/icon.svg"),
    },
    Asset {
        name: "hls.light.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/node_modules/hls.js/dist/hls.light.min.js"),
    },
];

/// An asset compressed once, on first request, with its validator.
struct Prepared {
    gzip: Vec<u8>,
    etag: HeaderValue,
}

fn prepared(index: usize) -> &'static Prepared {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    let all = PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                // Writing to memory cannot fail.
                let _ = encoder.write_all(asset.bytes);
                let gzip = encoder.finish().unwrap_or_default();
                let digest = <sha2::Sha256 as sha2::Digest>::digest(asset.bytes);
                let etag = format!("\"{}\"", hex::encode(&digest[..8]));
                Prepared {
                    gzip,
                    etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
                }
            })
            .collect()
    });
    &all[index]
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let prepared = prepared(index);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag == prepared.etag)
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) && !prepared.gzip.is_empty() {
        let mut response = Body::from(prepared.gzip.as_slice()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        Body::from(asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, prepared.etag.clone());
    // Revalidated on every load (an ETag check is one small round trip on the venue's
    // Wi-Fi), so a box updated in place never serves a stale page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /assets/<name>`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS
        .iter()
        .position(|a| a.name == name && name != "index.html")
    {
        Some(index) => serve(index, &headers),
        None => super::ApiError::not_found("no such asset").into_response(),
    }
}

/// A page of the app: `index.html`, whatever the path.
pub fn page(headers: &HeaderMap) -> Response {
    serve(0, headers)
}
