//! The web app's CSS, JavaScript and icon, embedded in `ferryd` and served
//! under names that carry a hash of their content: a new build gives a
//! changed file a new name, so a browser may keep each one forever.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// One embedded file.
pub struct Asset {
    stem: &'static str,
    extension: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

pub static CSS: Asset = Asset {
    stem: "app",
    extension: "css",
    content_type: "text/css; charset=utf-8",
    bytes: include_bytes!("assets/app.css"),
};

pub static JS: Asset = Asset {
    stem: "app",
    extension: "js",
    content_type: "text/javascript; charset=utf-8",
    // One module made of the sources in order: they share one scope, the
    // way one file would, and a page loads a single script.
    bytes: concat!(
        include_str!("assets/js/common.js"),
        include_str!("assets/js/live.js"),
        include_str!("assets/js/transfers.js"),
        include_str!("assets/js/browse.js"),
        include_str!("assets/js/settings.js"),
    )
    .as_bytes(),
};

pub static ICON: Asset =
    Asset { stem: "icon", extension: "svg", content_type: "image/svg+xml", bytes: include_bytes!("assets/icon.svg") };

static ALL: [&Asset; 3] = [&CSS, &JS, &ICON];

/// An asset with its served name and its entity tag, both from its hash.
struct Served {
    asset: &'static Asset,
    file_name: String,
    url: String,
    etag: String,
}

static SERVED: LazyLock<Vec<Served>> = LazyLock::new(|| {
    ALL.iter()
        .map(|&asset| {
            let hash = blake3::hash(asset.bytes).to_hex();
            let file_name = format!("{}.{}.{}", asset.stem, &hash[..16], asset.extension);
            Served { asset, url: format!("/assets/{file_name}"), file_name, etag: format!("\"{}\"", &hash[..32]) }
        })
        .collect()
});

/// A year, the most caches honour: the name changes when the content does.
const FOREVER: &str = "public, max-age=31536000, immutable";

impl Asset {
    /// Where pages link to it: `/assets/<stem>.<hash>.<extension>`.
    pub fn url(&'static self) -> &'static str {
        SERVED.iter().find(|s| std::ptr::eq(s.asset, self)).map_or("/assets/missing", |s| s.url.as_str())
    }
}

/// `GET /assets/{file}`: the asset of that hashed name, or `None` (the
/// app's 404). A repeat carrying its `ETag` in `If-None-Match` gets a 304.
pub fn serve(req: &HttpRequest, file: &str) -> Option<HttpResponse> {
    let served = SERVED.iter().find(|s| s.file_name == file)?;
    let revalidating = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == served.etag || tag == "*");
    let mut res = if revalidating { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::CACHE_CONTROL, FOREVER)).insert_header((header::ETAG, served.etag.as_str()));
    if revalidating {
        return Some(res.finish());
    }
    Some(res.insert_header((header::CONTENT_TYPE, served.asset.content_type)).body(served.asset.bytes))
}
