//! One-time join tokens: what `invite` prints, and how the inviter redeems them.
//!
//! The token carries the CA fingerprint (so the joiner can check the inviter), the
//! inviter's addresses and a random secret; the inviter keeps only blake3(secret),
//! in one file per token, so `invite` works whether or not the daemon runs.

use crate::home::{write_private, Home};
use crate::proto;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "msj1-";

/// The decoded content of a join token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// blake3 of the mesh CA certificate.
    pub ca_fingerprint: [u8; 32],
    /// Where the inviter listens.
    pub addrs: Vec<SocketAddr>,
    /// Selects the stored invite.
    pub token_id: [u8; 16],
    /// The secret whose hash the inviter stored.
    pub secret: [u8; 32],
    /// Unix seconds after which the token is refused.
    pub expires: u64,
}

/// Why a token was refused; the text is what both sides log and the joiner prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token at all.
    #[error("not a meshsync join token (it should start with {PREFIX:?}): {0}")]
    Malformed(String),
    /// Past its expiry.
    #[error("join token expired {0} s ago; ask for a new one with `meshsync invite`")]
    Expired(u64),
    /// Already redeemed.
    #[error("join token was already used; tokens are single-use, ask for a new one")]
    Used,
    /// Unknown id or wrong secret.
    #[error("join token is not valid for this node (unknown or forged)")]
    Forged,
    /// The invite store could not be read or written.
    #[error("invite store: {0}")]
    Store(String),
}

#[derive(Serialize, Deserialize)]
struct StoredInvite {
    secret_hash: [u8; 32],
    expires: u64,
    can_invite: bool,
}

/// Whether a node joined with a token receives the CA key (and so may invite).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteRight {
    /// Receives the CA key: a full member that can invite others.
    CanInvite,
    /// No CA key (`invite --no-invite`).
    NoInvite,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

impl JoinToken {
    /// The single-line text form.
    pub fn encode(&self) -> String {
        let bytes = proto::encode(self).unwrap_or_default();
        format!("{PREFIX}{}", data_encoding::BASE64URL_NOPAD.encode(&bytes))
    }

    /// Parses the text form.
    pub fn decode(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        let body = s.strip_prefix(PREFIX).ok_or_else(|| TokenError::Malformed("wrong prefix".into()))?;
        let bytes =
            data_encoding::BASE64URL_NOPAD.decode(body.as_bytes()).map_err(|e| TokenError::Malformed(e.to_string()))?;
        proto::decode(&bytes).map_err(|e| TokenError::Malformed(e.to_string()))
    }
}

/// Makes a token and stores the hash of its secret in the home's invite folder.
pub fn issue(
    home: &Home,
    ca_fingerprint: [u8; 32],
    addrs: Vec<SocketAddr>,
    ttl: Duration,
    right: InviteRight,
) -> Result<JoinToken, TokenError> {
    let token = JoinToken {
        ca_fingerprint,
        addrs,
        token_id: rand::random(),
        secret: rand::random(),
        expires: now_secs() + ttl.as_secs(),
    };
    let dir = home.invites();
    std::fs::create_dir_all(&dir).map_err(|e| TokenError::Store(format!("{}: {e}", dir.display())))?;
    let stored = StoredInvite {
        secret_hash: *blake3::hash(&token.secret).as_bytes(),
        expires: token.expires,
        can_invite: right == InviteRight::CanInvite,
    };
    let bytes = proto::encode(&stored).map_err(|e| TokenError::Store(e.to_string()))?;
    let path = dir.join(format!("{}.invite", hex(&token.token_id)));
    write_private(&path, &bytes).map_err(|e| TokenError::Store(format!("{}: {e}", path.display())))?;
    Ok(token)
}

/// Checks a presented token and marks it used; fails without side effects otherwise.
pub fn redeem(home: &Home, token_id: &[u8; 16], secret: &[u8; 32]) -> Result<InviteRight, TokenError> {
    let dir = home.invites();
    let path = dir.join(format!("{}.invite", hex(token_id)));
    let used = dir.join(format!("{}.used", hex(token_id)));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) if used.exists() => return Err(TokenError::Used),
        Err(_) => return Err(TokenError::Forged),
    };
    let stored: StoredInvite = proto::decode(&bytes).map_err(|e| TokenError::Store(e.to_string()))?;
    // Compare hashes in constant time so timing says nothing about the secret.
    if blake3::hash(secret) != blake3::Hash::from(stored.secret_hash) {
        return Err(TokenError::Forged);
    }
    let now = now_secs();
    if now > stored.expires {
        return Err(TokenError::Expired(now - stored.expires));
    }
    // The rename is the single-use guarantee: of two racing joins only one renames.
    std::fs::rename(&path, &used).map_err(|_| TokenError::Used)?;
    Ok(if stored.can_invite { InviteRight::CanInvite } else { InviteRight::NoInvite })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let t = issue(
            &home,
            [1; 32],
            vec!["127.0.0.1:7000".parse().unwrap()],
            Duration::from_secs(60),
            InviteRight::CanInvite,
        )
        .unwrap();
        let s = t.encode();
        assert!(!s.contains(char::is_whitespace));
        assert_eq!(JoinToken::decode(&s).unwrap(), t);
        assert!(matches!(JoinToken::decode("hello"), Err(TokenError::Malformed(_))));
        assert!(matches!(JoinToken::decode("msj1-!!!"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn redeem_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let t = issue(&home, [1; 32], vec![], Duration::from_secs(60), InviteRight::NoInvite).unwrap();
        assert_eq!(redeem(&home, &t.token_id, &[9; 32]), Err(TokenError::Forged));
        assert_eq!(redeem(&home, &[3; 16], &t.secret), Err(TokenError::Forged));
        assert_eq!(redeem(&home, &t.token_id, &t.secret), Ok(InviteRight::NoInvite));
        assert_eq!(redeem(&home, &t.token_id, &t.secret), Err(TokenError::Used));
        let old = issue(&home, [1; 32], vec![], Duration::from_secs(0), InviteRight::CanInvite).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(redeem(&home, &old.token_id, &old.secret), Err(TokenError::Expired(_))));
    }
}
