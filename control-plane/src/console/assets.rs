//! The web front's static files, embedded in the binary and served under a name that carries
//! their content hash (`/assets/axon.3f2a9c1e.css`), so they can be cached for a year: a new
//! build with a changed file gets a new name.

use std::sync::LazyLock;

/// One embedded file.
pub struct Asset {
    /// As written in the source tree, e.g. `axon.css`.
    pub name: &'static str,
    /// With the content hash, e.g. `axon.3f2a9c1e.css`.
    pub hashed: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "axon.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/axon.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console.js"),
    ),
    (
        "axon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/axon.svg"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, content_type, bytes)| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
            let hash = axon_shared::hex_encode(&digest.as_ref()[..6]);
            let hashed = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                None => format!("{name}.{hash}"),
            };
            Asset {
                name,
                hashed,
                content_type,
                bytes,
            }
        })
        .collect()
});

/// The URL of an embedded file by its source name; panics in tests if the name is unknown.
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/assets/{}", a.hashed),
        None => {
            debug_assert!(false, "no asset {name}");
            format!("/assets/{name}")
        }
    }
}

/// The file served under `hashed`.
pub fn by_hashed_name(hashed: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.hashed == hashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let css = url("axon.css");
        assert!(
            css.starts_with("/assets/axon.") && css.ends_with(".css"),
            "{css}"
        );
        let hashed = css.trim_start_matches("/assets/");
        let asset = by_hashed_name(hashed).expect("served");
        assert_eq!(asset.content_type, "text/css; charset=utf-8");
        // The hash is of the bytes: the same name without it, or another hash, is not served.
        assert!(by_hashed_name("axon.css").is_none());
        assert!(by_hashed_name("axon.000000000000.css").is_none());
    }
}
