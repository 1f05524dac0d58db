//! One-time join tokens: what `invite` prints, and how the inviter redeems them.
//!
//! The token carries the CA fingerprint (so the joiner can check the inviter), the
//! inviter's addresses and a random secret; the inviter keeps only blake3(secret),
//! in one file per token, so `invite` works whether or not the daemon runs.

use super::Role;
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
    /// What the joining node will be.
    role: Role,
}

/// An invite file written before roles (every invite gave the CA key unless
/// `--no-invite`): still honoured, as a member's invite, never an admin's.
#[derive(Deserialize)]
struct LegacyInvite {
    secret_hash: [u8; 32],
    expires: u64,
    can_invite: bool,
}

impl StoredInvite {
    fn decode(bytes: &[u8]) -> Result<Self, TokenError> {
        if let Ok(s) = proto::decode::<StoredInvite>(bytes) {
            return Ok(s);
        }
        let old: LegacyInvite = proto::decode(bytes).map_err(|e| TokenError::Store(e.to_string()))?;
        let role = if old.can_invite { Role::Member } else { Role::NoInvite };
        Ok(StoredInvite { secret_hash: old.secret_hash, expires: old.expires, role })
    }
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
    role: Role,
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
    let stored = StoredInvite { secret_hash: *blake3::hash(&token.secret).as_bytes(), expires: token.expires, role };
    let bytes = proto::encode(&stored).map_err(|e| TokenError::Store(e.to_string()))?;
    let path = dir.join(format!("{}.invite", hex(&token.token_id)));
    write_private(&path, &bytes).map_err(|e| TokenError::Store(format!("{}: {e}", path.display())))?;
    Ok(token)
}

/// A token that checked out: what the joining node will be, and until when the
/// token stays valid if this join does not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The role the inviter chose.
    pub role: Role,
    /// Unix seconds.
    pub expires: u64,
}

fn paths(home: &Home, token_id: &[u8; 16]) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = home.invites();
    (dir.join(format!("{}.invite", hex(token_id))), dir.join(format!("{}.used", hex(token_id))))
}

/// Checks a presented token without spending it: the inviter checks it before it
/// looks at anything else the joiner sent, and spends it once the join is done.
pub fn check(home: &Home, token_id: &[u8; 16], secret: &[u8; 32]) -> Result<Grant, TokenError> {
    let (path, used) = paths(home, token_id);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) if used.exists() => return Err(TokenError::Used),
        Err(_) => return Err(TokenError::Forged),
    };
    let stored = StoredInvite::decode(&bytes)?;
    // Compare hashes in constant time so timing says nothing about the secret.
    if blake3::hash(secret) != blake3::Hash::from(stored.secret_hash) {
        return Err(TokenError::Forged);
    }
    let now = now_secs();
    if now > stored.expires {
        return Err(TokenError::Expired(now - stored.expires));
    }
    Ok(Grant { role: stored.role, expires: stored.expires })
}

/// Marks a checked token used. The rename is the single-use guarantee: of two
/// racing joins only one renames, the other gets [`TokenError::Used`].
pub fn spend(home: &Home, token_id: &[u8; 16]) -> Result<(), TokenError> {
    let (path, used) = paths(home, token_id);
    std::fs::rename(&path, &used).map_err(|_| TokenError::Used)
}

/// Checks a presented token and marks it used; fails without side effects otherwise.
pub fn redeem(home: &Home, token_id: &[u8; 16], secret: &[u8; 32]) -> Result<Role, TokenError> {
    let grant = check(home, token_id, secret)?;
    spend(home, token_id)?;
    Ok(grant.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let t = issue(&home, [1; 32], vec!["127.0.0.1:7000".parse().unwrap()], Duration::from_secs(60), Role::Member)
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
        let t = issue(&home, [1; 32], vec![], Duration::from_secs(60), Role::NoInvite).unwrap();
        assert_eq!(redeem(&home, &t.token_id, &[9; 32]), Err(TokenError::Forged));
        assert_eq!(redeem(&home, &[3; 16], &t.secret), Err(TokenError::Forged));
        assert_eq!(check(&home, &t.token_id, &t.secret).map(|g| g.role), Ok(Role::NoInvite));
        assert_eq!(check(&home, &t.token_id, &t.secret).map(|g| g.role), Ok(Role::NoInvite), "checking spends nothing");
        assert_eq!(redeem(&home, &t.token_id, &t.secret), Ok(Role::NoInvite));
        assert_eq!(redeem(&home, &t.token_id, &t.secret), Err(TokenError::Used));
        assert_eq!(spend(&home, &t.token_id), Err(TokenError::Used));
        let old = issue(&home, [1; 32], vec![], Duration::from_secs(0), Role::Member).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(redeem(&home, &old.token_id, &old.secret), Err(TokenError::Expired(_))));
    }

    #[test]
    fn an_invite_written_before_roles_is_a_members_invite() {
        #[derive(Serialize)]
        struct Old {
            secret_hash: [u8; 32],
            expires: u64,
            can_invite: bool,
        }
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::create_dir_all(home.invites()).unwrap();
        for (id, can_invite, role) in [([1; 16], true, Role::Member), ([2; 16], false, Role::NoInvite)] {
            let old = Old { secret_hash: *blake3::hash(&[5; 32]).as_bytes(), expires: now_secs() + 60, can_invite };
            let bytes = proto::encode(&old).unwrap();
            assert_eq!(bytes.len(), 41, "the format certs/README.md described");
            std::fs::write(home.invites().join(format!("{}.invite", hex(&id))), bytes).unwrap();
            assert_eq!(redeem(&home, &id, &[5; 32]), Ok(role));
        }
    }
}
