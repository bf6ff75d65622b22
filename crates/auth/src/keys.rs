//! API keys look like `gzt_` + 40 base62 characters of randomness + a
//! 6-character checksum. The checksum lets the client catch a mistyped or
//! truncated key before it is ever sent; only a SHA-256 hash of the whole key
//! is stored, and keys are compared by hash in constant time.

use gleitzeit_core::{ErrorCode, GzError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "gzt_";
const BODY_LEN: usize = 40;
const CHECK_LEN: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not `gzt_` + base62 of the right length.
    Malformed,
    /// Well-formed, but the checksum does not match: a typo.
    BadChecksum,
    /// The system's random source failed.
    NoRandomness(String),
}

impl KeyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            KeyError::Malformed | KeyError::BadChecksum => ErrorCode::InvalidApiKey,
            KeyError::NoRandomness(_) => ErrorCode::InternalError,
        }
    }
}

impl From<KeyError> for GzError {
    fn from(error: KeyError) -> GzError {
        // Deliberately the same words for every bad key: nothing here says
        // whether some user or key exists.
        let message = match &error {
            KeyError::Malformed => "that is not a Gleitzeit API key".to_string(),
            KeyError::BadChecksum => {
                "that API key is mistyped or incomplete (its checksum does not match)".to_string()
            }
            KeyError::NoRandomness(why) => format!("cannot make a key: {why}"),
        };
        GzError::new(error.code(), message)
            .with_hint("Keys look like gzt_ followed by 46 letters and digits; copy it whole.")
    }
}

/// A key in its full text form. Never logged: `Debug` shows only its prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.public_id())
    }
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    digest
        .iter()
        .take(CHECK_LEN)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

impl ApiKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Result<ApiKey, KeyError> {
        let mut body = String::with_capacity(BODY_LEN);
        // Rejection sampling keeps every character uniform over 62 symbols.
        while body.len() < BODY_LEN {
            let mut bytes = [0u8; 64];
            getrandom::fill(&mut bytes).map_err(|e| KeyError::NoRandomness(e.to_string()))?;
            for b in bytes {
                if (b as usize) < 62 * 4 && body.len() < BODY_LEN {
                    body.push(ALPHABET[(b as usize) % 62] as char);
                }
            }
        }
        let check = checksum(&body);
        Ok(ApiKey(format!("{PREFIX}{body}{check}")))
    }

    /// Checks a key's form and checksum without asking anyone.
    pub fn parse(text: &str) -> Result<ApiKey, KeyError> {
        let text = text.trim();
        let rest = text.strip_prefix(PREFIX).ok_or(KeyError::Malformed)?;
        if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::Malformed);
        }
        let (body, check) = rest.split_at(BODY_LEN);
        if checksum(body) != check {
            return Err(KeyError::BadChecksum);
        }
        Ok(ApiKey(text.to_string()))
    }

    /// The text to show once, at creation.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What lists and audit entries show: the prefix and the first characters,
    /// enough to tell keys apart, useless for logging in.
    pub fn public_id(&self) -> String {
        self.0.chars().take(PREFIX.len() + 6).collect()
    }

    /// The only form that is stored: hex SHA-256 of the whole key.
    pub fn hash(&self) -> String {
        Sha256::digest(self.0.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether this key is the one a stored hash was made from, in time that
    /// does not depend on where the two differ.
    pub fn matches(&self, stored_hash: &str) -> bool {
        self.hash().as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.reveal().starts_with("gzt_"));
        assert_eq!(a.reveal().len(), PREFIX.len() + BODY_LEN + CHECK_LEN);
        assert_eq!(ApiKey::parse(a.reveal()).unwrap(), a);
        assert_eq!(
            ApiKey::parse(&format!("  {}\n", a.reveal())).unwrap(),
            a,
            "pasted with whitespace"
        );
    }

    #[test]
    fn every_single_character_typo_is_caught_locally() {
        let key = ApiKey::generate().unwrap();
        let text = key.reveal().to_string();
        let mut caught = 0;
        let mut total = 0;
        for i in PREFIX.len()..text.len() {
            for replacement in ['0', 'Z', 'q'] {
                let mut typo: Vec<char> = text.chars().collect();
                if typo[i] == replacement {
                    continue;
                }
                typo[i] = replacement;
                let typo: String = typo.into_iter().collect();
                total += 1;
                if ApiKey::parse(&typo).is_err() {
                    caught += 1;
                }
            }
        }
        // 36 bits of checksum: a collision among ~140 typos is vanishingly rare.
        assert_eq!(caught, total);
    }

    #[test]
    fn malformed_keys_are_refused_with_gz4004() {
        for text in [
            "",
            "gzt_",
            "gzt_short",
            "abc_0123456789012345678901234567890123456789ABCDEF",
            &format!("gzt_{}", "!".repeat(46)),
        ] {
            let error = ApiKey::parse(text).unwrap_err();
            assert_eq!(error, KeyError::Malformed, "{text:?}");
            assert_eq!(GzError::from(error).code, ErrorCode::InvalidApiKey);
        }
        let key = ApiKey::generate().unwrap();
        let truncated = &key.reveal()[..key.reveal().len() - 1];
        assert_eq!(ApiKey::parse(truncated).unwrap_err(), KeyError::Malformed);
    }

    #[test]
    fn only_the_hash_matches_and_the_key_never_shows_in_debug() {
        let key = ApiKey::generate().unwrap();
        let other = ApiKey::generate().unwrap();
        let stored = key.hash();
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains(&key.reveal()[4..]));
        assert!(key.matches(&stored));
        assert!(!other.matches(&stored));
        assert!(!key.matches(""));
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(&key.reveal()[PREFIX.len() + 6..]),
            "{shown}"
        );
        assert_eq!(key.public_id().len(), PREFIX.len() + 6);
    }
}
