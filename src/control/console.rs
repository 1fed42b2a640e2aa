//! The web console at `/`: one page, its script and its stylesheet, embedded in the binary (no
//! CDN, no external font). The page talks only to the `/v1` API with the token the user typed,
//! kept in the browser session; the assets themselves are open (they hold no data).
//!
//! Every answer carries a Content-Security-Policy that allows only the console's own script and
//! styles: even a name that slipped into the page as markup could not run. (The script never
//! builds markup from data: names, ids and labels are set as text.)

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, kind: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/`, `/console.js` and `/console.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_are_small_and_load_nothing_from_elsewhere() {
        // The page's own script and stylesheet together at most 200 KB.
        assert!(SCRIPT.len() + STYLE.len() <= 200 * 1024);
        for (name, text) in [("index", INDEX), ("script", SCRIPT), ("style", STYLE)] {
            for far in ["http://", "https://", "//fonts.", "@import"] {
                assert!(!text.contains(far), "{name} refers to {far}");
            }
        }
        // The script never turns data into markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "console.js uses {sink}");
        }
        assert!(INDEX.contains("src=\"/console.js\"") && INDEX.contains("href=\"/console.css\""));
    }
}
