//! The OpenAPI schemas of the validating newtypes: the rules their `parse`
//! enforces, written as JSON Schema (`pattern`, lengths), so the document
//! states what the server accepts. Wire fields that hold one of these as a
//! plain `String` point at it with `#[schema(value_type = ...)]`.
//!
//! Patterns are ECMA-262 and anchored. Lengths in JSON Schema count
//! characters; where the rule counts bytes the description says so.

use std::borrow::Cow;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::files::{Blake3Hash, FilePath};
use super::validate::{DeviceName, DisplayName, Email, Password, Platform, ProjectName};

/// 64 lowercase hex characters.
pub const HASH_PATTERN: &str = "^[0-9a-f]{64}$";

/// POSIX-style absolute path: segments of 1 to 255 characters without `/`,
/// backslash, control or bidi formatting characters, none of them `.`,
/// `..` or `.ferry`. (NFC is in the description: no pattern states it.)
pub const PATH_PATTERN: &str = r"^(?:/(?!\.\.?(?:/|$))(?!\.ferry(?:/|$))[^/\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]{1,255})+$";

/// What `str::trim` removes: Unicode White_Space.
const SPACE: &str = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Neither white space nor a control character.
const VISIBLE: &str = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Not a control character.
const NOT_CONTROL: &str = r"[^\x00-\x1f\x7f-\x9f]";

/// Trimmed text of 1 to `max` characters without control characters.
fn bounded_text(max: usize) -> String {
    format!("^{SPACE}*{VISIBLE}(?:{NOT_CONTROL}{{0,{}}}{VISIBLE})?{SPACE}*$", max - 2)
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description))
}

macro_rules! named_schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let builder: ObjectBuilder = $schema;
                builder.into()
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

named_schema!(
    FilePath,
    "FilePath",
    string(
        "A file's path in its project: POSIX-style and absolute (`/documents/report.pdf`), UTF-8 in \
         Unicode NFC, at most 4096 bytes, each segment 1 to 255 bytes; no `.`, `..`, `.ferry` or empty \
         segments, no NUL, backslash, control or bidi formatting characters. Anything else is 422 \
         `invalid_path`.",
    )
    .pattern(Some(PATH_PATTERN))
    .max_length(Some(FilePath::MAX_BYTES))
    .examples(["/documents/report.pdf"])
);

named_schema!(
    Blake3Hash,
    "Blake3Hash",
    string("A BLAKE3 hash: 64 lowercase hex characters. Anything else is 422 `invalid_hash`.")
        .pattern(Some(HASH_PATTERN))
        .examples(["af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"])
);

named_schema!(
    Email,
    "Email",
    string(
        "An e-mail address: `local@domain` once surrounding white space is trimmed, at most 254 bytes, \
         no white space or control characters, a domain that neither starts nor ends with `.`. \
         Anything else is 422 `invalid_email`.",
    )
    .pattern(Some(format!(
        r"^{SPACE}*{VISIBLE}+@(?:[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]|[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]){SPACE}*$"
    )))
    .max_length(Some(254))
    .examples(["ana@example.org"])
);

named_schema!(
    Password,
    "Password",
    string("A password: 8 to 1024 characters. Shorter is 422 `weak_password`, longer 422 `invalid_password`.")
        .min_length(Some(Password::MIN_CHARS))
        .max_length(Some(Password::MAX_CHARS))
        .examples(["correct horse battery staple"])
);

named_schema!(
    ProjectName,
    "ProjectName",
    string(
        "A project's name: 1 to 200 characters once trimmed, no control characters. \
         Anything else is 422 `invalid_name`.",
    )
    .pattern(Some(bounded_text(ProjectName::MAX_CHARS)))
    .examples(["Holiday photos"])
);

named_schema!(
    DisplayName,
    "DisplayName",
    string(
        "A user's display name: 1 to 100 characters once trimmed, no control characters. \
         Anything else is 422 `invalid_display_name`.",
    )
    .pattern(Some(bounded_text(DisplayName::MAX_CHARS)))
    .examples(["Ana"])
);

named_schema!(
    DeviceName,
    "DeviceName",
    string(
        "A device's name: 1 to 100 characters once trimmed, no control characters. \
         Anything else is 422 `invalid_device_name`.",
    )
    .pattern(Some(bounded_text(DeviceName::MAX_CHARS)))
    .examples(["ana-laptop"])
);

named_schema!(
    Platform,
    "Platform",
    string(
        "A device's platform (`linux`, `macos 15`, ...): 1 to 50 characters once trimmed, no control \
         characters. Anything else is 422 `invalid_platform`.",
    )
    .pattern(Some(bounded_text(Platform::MAX_CHARS)))
    .examples(["linux"])
);

/// `DirectAdvert.urls`: 1 to 8 `http://` or `https://` URLs of at most 2048 bytes.
pub fn direct_urls() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            string("An `http://` or `https://` URL to a host, with no user or password, no whitespace")
                .pattern(Some(r"^https?://[^\s/?#@\x00-\x1f\x7f]+([/?#][^\s\x00-\x1f\x7f]*)?$"))
                .max_length(Some(2048)),
        )
        .min_items(Some(1))
        .max_items(Some(8))
        .description(Some("1 to 8 URLs where the device's agent serves direct transfers (else 422 `invalid_urls`)"))
}

/// `TransferReport.status`: a report moves a transfer to `in_progress` or
/// `failed` only (else 422 `invalid_status`).
pub fn reported_status() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([serde_json::json!("in_progress"), serde_json::json!("failed"), serde_json::Value::Null]))
        .description(Some("`in_progress` or `failed`; another status is 422 `invalid_status`"))
}
