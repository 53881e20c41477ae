//! Files: paths and hashes that validate on parse, the change batch of
//! `files/update`, and the paginated listing.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate::ValidationError;

/// A file's path within its project: POSIX-style and absolute
/// (`/documents/report.pdf`), no `.`/`..` or empty segments, no NUL or
/// backslash, at most 4096 bytes, each segment at most 255 bytes. It also
/// carries no terminal tricks (control characters, bidi formatting) and no
/// client state (a `.ferry` segment), and is in Unicode NFC, so one name
/// is one file whichever way a file system spelled it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FilePath(String);

impl FilePath {
    pub const MAX_BYTES: usize = 4096;
    pub const MAX_SEGMENT_BYTES: usize = 255;
    /// The client's state folder (`ferry pull`, `ferry share`): never a
    /// project file.
    pub const STATE_SEGMENT: &'static str = ".ferry";

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| ValidationError::new("invalid_path", format!("invalid path {value:?}: {why}"));
        if value.len() > Self::MAX_BYTES {
            return Err(bad("longer than 4096 bytes"));
        }
        let Some(rest) = value.strip_prefix('/') else { return Err(bad("must start with /")) };
        if value.contains('\0') || value.contains('\\') {
            return Err(bad("NUL and backslash are not allowed"));
        }
        if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
            return Err(bad("control characters and bidi formatting characters are not allowed"));
        }
        if !unicode_normalization::is_nfc(value) {
            return Err(bad("not in Unicode NFC (normalise the name first)"));
        }
        for segment in rest.split('/') {
            match segment {
                "" => return Err(bad("empty segment")),
                "." | ".." => return Err(bad("`.` and `..` segments are not allowed")),
                Self::STATE_SEGMENT => return Err(bad("`.ferry` is the client's state folder, never a file")),
                s if s.len() > Self::MAX_SEGMENT_BYTES => return Err(bad("a segment is longer than 255 bytes")),
                _ => {}
            }
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Characters that reorder how text is shown (Trojan Source): a path with
/// one could show a member another name than the file has.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl<'de> Deserialize<'de> for FilePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FilePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A BLAKE3 hash: 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Blake3Hash(String);

impl Blake3Hash {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "invalid_hash",
                format!("invalid hash {value:?}: a BLAKE3 hash is 64 lowercase hex characters"),
            ))
        }
    }

    pub fn of(bytes: &[u8]) -> Self {
        Self(blake3::hash(bytes).to_hex().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Compares with a hash held as text (a manifest's, an event's).
impl PartialEq<str> for Blake3Hash {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// So a set of hashes can be asked about a hash held as text.
impl std::borrow::Borrow<str> for Blake3Hash {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<blake3::Hash> for Blake3Hash {
    fn from(h: blake3::Hash) -> Self {
        Self(h.to_hex().to_string())
    }
}

impl<'de> Deserialize<'de> for Blake3Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Blake3Hash::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One chunk of a file, as sent by the owner's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkRef {
    #[schema(value_type = Blake3Hash)]
    pub hash: String,
    /// 1 byte to 16 MiB.
    #[schema(minimum = 1, maximum = 16_777_216)]
    pub size: i64,
}

/// One change of a `files/update` batch, as sent: fields are checked one
/// change at a time so an error can name its index.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileChange {
    Upsert {
        #[schema(value_type = FilePath)]
        path: String,
        /// Bytes: 0 to 2^53.
        #[schema(minimum = 0, maximum = 9_007_199_254_740_992_i64)]
        size: i64,
        #[schema(value_type = Blake3Hash)]
        hash: String,
        /// `type/subtype`, at most 255 bytes, no control characters; guessed from the path when absent.
        #[serde(default)]
        #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]*/[^\x00-\x1f\x7f-\x9f]*$", max_length = 255)]
        mime_type: Option<String>,
        #[serde(default)]
        modified_at: Option<DateTime<Utc>>,
        /// The file's chunks in order; their sizes add up to `size` (else 422 `chunk_sizes_mismatch`).
        #[serde(default)]
        chunks: Option<Vec<ChunkRef>>,
    },
    Delete {
        #[schema(value_type = FilePath)]
        path: String,
    },
    /// `from` and `to` differ (else 422 `invalid_move`).
    Move {
        #[schema(value_type = FilePath)]
        from: String,
        #[schema(value_type = FilePath)]
        to: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateFilesRequest {
    /// At most 10,000 (413 `too_many_changes` above).
    #[schema(max_items = 10_000)]
    pub changes: Vec<FileChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateFilesResponse {
    /// Changes that appended an event (unchanged upserts do not).
    pub applied: usize,
    /// The seqs of the appended events; null when nothing was applied.
    pub from_seq: Option<i64>,
    pub to_seq: Option<i64>,
    pub head_seq: i64,
}

/// A file as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteFile {
    pub path: String,
    pub size: i64,
    pub hash: String,
    pub mime_type: String,
    pub modified_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub updated_seq: i64,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FilesPage {
    pub files: Vec<RemoteFile>,
    /// Opaque; null on the last page.
    pub next_cursor: Option<String>,
    /// The project's head when this page was read: follow up from here.
    pub head_seq: i64,
}

/// One entry of a folder: a subfolder, or a file directly in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FolderEntry {
    /// A folder holding at least one live file, at any depth.
    Folder {
        name: String,
        /// The folder's path, ending in `/`.
        path: String,
    },
    File {
        name: String,
        #[serde(flatten)]
        file: RemoteFile,
    },
}

/// A page of one folder's entries, ordered by name byte by byte (the
/// order paths have everywhere in the API).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FolderPage {
    /// The folder listed, ending in `/` (`/` for the project's top).
    pub path: String,
    pub entries: Vec<FolderEntry>,
    /// Opaque; null on the last page.
    pub next_cursor: Option<String>,
    /// The project's head when this page was read: follow up from here.
    pub head_seq: i64,
}

/// An opaque keyset cursor: the last key of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub String);

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    pub fn decode(value: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("invalid_cursor", "the cursor is not one this server gave out");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).map_err(|_| bad())?;
        String::from_utf8(bytes).map(Cursor).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_follow_the_contract() {
        for good in ["/a", "/documents/report.pdf", "/ünï/cødé 名前.txt", "/a/.hidden", "/a/...", "/x..y"] {
            assert!(FilePath::parse(good).is_ok(), "{good:?} refused");
        }
        let long_segment = format!("/{}", "a".repeat(256));
        let long_path = format!("{}/end", "/abcdefgh".repeat(455));
        let nfd = "/cafe\u{301}.txt";
        for bad in [
            "",
            "/",
            "a/b",
            "/a//b",
            "/a/",
            "/./a",
            "/a/../b",
            "/a/..",
            "/a\\b",
            "/a\0b",
            &long_segment,
            &long_path,
            "/a\u{1b}[2Jb",
            "/tab\there",
            "/del\u{7f}",
            "/c1\u{85}",
            "/evil\u{202E}fdp.exe",
            "/iso\u{2066}late",
            nfd,
            "/.ferry/index.json",
            "/sub/.ferry/manifest.json",
            "/.ferry",
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FilePath::parse(&format!("/{}", "a".repeat(255))).is_ok());
        assert!(FilePath::parse("/caf\u{e9}.txt").is_ok(), "NFC is the form accepted");
        assert!(FilePath::parse("/a/.ferryignore").is_ok() && FilePath::parse("/x.ferry").is_ok());
    }

    #[test]
    fn hashes_are_64_lowercase_hex() {
        assert!(Blake3Hash::parse(&"ab".repeat(32)).is_ok());
        assert_eq!(Blake3Hash::of(b"abc").as_str().len(), 64);
        for bad in ["", "AB".repeat(32).as_str(), &"a".repeat(63), &"g".repeat(64)] {
            assert!(Blake3Hash::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        use unicode_normalization::UnicodeNormalization;
        "[^/\\\\\u{0}]{1,40}".prop_map(|s| s.nfc().collect::<String>()).prop_filter(
            "not . or .., no state folder, no control or bidi characters",
            |s| {
                !matches!(s.as_str(), "." | ".." | FilePath::STATE_SEGMENT)
                    && s.len() <= 255
                    && !s.chars().any(|c| c.is_control() || is_bidi_control(c))
            },
        )
    }

    proptest! {
        #[test]
        fn joined_valid_segments_always_parse(segments in prop::collection::vec(segment(), 1..8)) {
            let path = format!("/{}", segments.join("/"));
            let parsed = FilePath::parse(&path).unwrap();
            prop_assert_eq!(parsed.as_str(), path.as_str());
        }

        #[test]
        fn whatever_parses_obeys_every_rule(s in "(/[a-z.\\\\\u{0}]{0,4}){0,5}") {
            if let Ok(p) = FilePath::parse(&s) {
                prop_assert!(p.as_str().starts_with('/'));
                prop_assert!(!p.as_str().contains('\\') && !p.as_str().contains('\0'));
                for seg in p.as_str()[1..].split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                }
            }
        }

        #[test]
        fn cursors_round_trip(key in "\\PC{0,300}") {
            let cursor = Cursor(key.clone());
            prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
    }
}
