//! Bodies of the relay's chunk routes.

use serde::{Deserialize, Serialize};

/// `POST /api/projects/:id/chunks/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HashesRequest {
    /// At most 10,000 (413 `too_many_hashes` above).
    #[schema(value_type = Vec<crate::protocol::files::Blake3Hash>, max_items = 10_000)]
    pub hashes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingResponse {
    /// The asked hashes the relay does not hold, in the order asked.
    pub missing: Vec<String>,
}

/// The answer to a chunk upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredChunk {
    pub hash: String,
    pub size: i64,
}
