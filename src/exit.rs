//! The `meshsync` command's exit status by cause, so scripts can tell a host that
//! does not answer from a token that was refused (README, "Exit status").

use crate::config::ConfigError;
use crate::daemon::JoinError;
use crate::ops::control::ControlError;

/// Why a command failed, as its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Any failure without a status of its own (and `wait` running out of time).
    Failure = 1,
    /// Bad command line (clap exits with it itself).
    Usage = 2,
    /// The config file (or the home directory) is missing or wrong.
    Config = 3,
    /// Nothing answered: a host down, a daemon not running, a firewall.
    Unreachable = 4,
    /// Something answered and refused: a used, expired or forged token, another mesh.
    Refused = 5,
    /// A token that cannot be used as it is (damaged, or naming no dialable address).
    BadToken = 6,
}

impl Exit {
    /// The status for an error: the first cause in its chain that has one.
    pub fn of(e: &anyhow::Error) -> Exit {
        for cause in e.chain() {
            if cause.downcast_ref::<ConfigError>().is_some() {
                return Exit::Config;
            }
            if cause.downcast_ref::<ControlError>().is_some() {
                return Exit::Unreachable;
            }
            if let Some(j) = cause.downcast_ref::<JoinError>() {
                return match j {
                    JoinError::Unreachable(_) => Exit::Unreachable,
                    JoinError::Refused(_) | JoinError::Handshake(..) => Exit::Refused,
                    JoinError::BadToken(_) | JoinError::NoAddress(_) => Exit::BadToken,
                    JoinError::HomeInUse(_) => Exit::Config,
                    JoinError::Local(_) => Exit::Failure,
                };
            }
        }
        Exit::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_their_status() {
        let e = anyhow::Error::new(JoinError::Unreachable("198.18.0.1:7700".into())).context("joining");
        assert_eq!(Exit::of(&e), Exit::Unreachable);
        assert_eq!(Exit::of(&JoinError::Refused("used".into()).into()), Exit::Refused);
        assert_eq!(Exit::of(&JoinError::NoAddress("0.0.0.0:7700".into()).into()), Exit::BadToken);
        let bad = crate::config::Config::parse("[node]\n", std::path::Path::new("c")).unwrap_err();
        assert_eq!(Exit::of(&anyhow::Error::new(bad)), Exit::Config);
        assert_eq!(Exit::of(&anyhow::anyhow!("something else")), Exit::Failure);
    }
}
