//! Bearer secrets: API tokens and invite tokens.

use base64::Engine;
use rand::RngCore;

/// A new secret: 256 random bits behind a prefix naming its kind, shown
/// once; only its hash is kept.
pub fn new_secret(prefix: &str) -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = secret_hash(&secret);
    (secret, hash)
}

/// These secrets are high-entropy, so one fast hash is enough to make a
/// leaked table useless; passwords are the ones that need argon2.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    blake3::hash(secret.as_bytes()).as_bytes().to_vec()
}
