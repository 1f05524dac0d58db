//! Whether a share's folder is the share's (see `scan::marker`): checked before
//! anything is scanned or written there; the share pauses while it is not.

use super::Share;
use crate::index::RootRecord;
use crate::scan::marker::{self, Verdict};
use anyhow::Context;
use std::time::Duration;
use tracing::{info, warn};

/// How often a paused share's folder is looked at again.
pub(super) const ROOT_RECHECK: Duration = Duration::from_secs(5);

/// Why a share does nothing now; each cause is set and cleared by its own check.
#[derive(Default)]
pub(super) struct Pauses {
    /// The folder is not known to be the share's (missing, unmarked, moved).
    pub(super) root: Option<String>,
    /// Not enough free space for the next download.
    pub(super) disk_full: Option<String>,
    /// A scan found more deletions than the share's brake allows.
    pub(super) mass_delete: Option<String>,
}

impl Pauses {
    fn reason(&self) -> Option<String> {
        self.root.clone().or_else(|| self.mass_delete.clone()).or_else(|| self.disk_full.clone())
    }
}

impl Share {
    /// Why the share is paused, if it is: the first cause that holds.
    pub fn paused(&self) -> Option<String> {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).reason()
    }

    /// True while a scan found more deletions than the brake allows.
    pub(super) fn brake_paused(&self) -> bool {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).mass_delete.is_some()
    }

    /// Notes what the last scan said of deletions: held back by the brake (pause,
    /// saying why once), or recorded (resume; a confirmation is used up).
    pub(super) fn brake(&self, held_back: Option<String>) {
        let mut p = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        match (&held_back, p.mass_delete.is_some()) {
            (Some(why), false) => warn!(reason = %why, "share paused"),
            (None, true) => info!("no more deletions than the brake allows, or confirmed; share resumed"),
            _ => {}
        }
        if held_back.is_none() {
            self.deletes_confirmed.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        p.mass_delete = held_back;
    }

    /// True while the share's folder is not known to be the share's (see [`marker`]).
    pub(super) fn root_paused(&self) -> bool {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).root.is_some()
    }

    /// Checks that the folder is this share's before anything is scanned or written
    /// there; pauses the share (saying why, once) while it is not. True if it is.
    pub(super) fn root_ready(&self) -> bool {
        let res = self.check_root();
        let mut p = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        match res {
            Ok(()) => {
                if p.root.take().is_some() {
                    info!("the share folder is right again; resuming");
                }
                true
            }
            Err(e) => {
                let why = format!("{e:#}");
                if p.root.as_ref() != Some(&why) {
                    warn!(reason = %why, "share paused");
                }
                p.root = Some(why);
                false
            }
        }
    }

    fn check_root(&self) -> anyhow::Result<()> {
        let (root, name, index) = (&self.ctx.root, &self.cfg.name, &self.ctx.index);
        let found = marker::inspect(root, name)?;
        let recorded = index.root_record()?;
        // Reads the whole index: only when there is no marker and nothing recorded.
        let empty = found.marker.is_none() && recorded.is_none() && index.has_no_live_entries()?;
        match marker::judge(root, &self.mesh, name, &found, recorded.as_ref(), empty)? {
            Verdict::Ok => {}
            Verdict::Record(r) => index.set_root_record(&r)?,
            Verdict::WriteMarker => {
                let m = marker::new_marker(&self.mesh, name);
                marker::write_marker(root, &m)
                    .with_context(|| format!("writing the share marker in {}", root.display()))?;
                index.set_root_record(&RootRecord { marker_id: m.id, filesystem: found.fs })?;
                info!(path = %root.display(), "marked the folder as this share's");
            }
        }
        Ok(())
    }

    /// The user confirmed the share's folder as it is now (`meshsync share resume`):
    /// it is marked as this share's, on the filesystem it is on now, and scanned.
    pub fn resume(&self) -> anyhow::Result<()> {
        let (root, name) = (&self.ctx.root, &self.cfg.name);
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("{} is not a directory", root.display()),
            Err(e) => anyhow::bail!("{}: {e}; create or mount the folder first", root.display()),
        }
        let keep = match marker::read_marker(root, name) {
            Ok(Some(m)) if m.mesh == self.mesh && &m.share == name => Some(m),
            Ok(Some(m)) => anyhow::bail!(
                "{} is marked as share {:?} of {}; not taking it over (pick another folder)",
                root.display(),
                m.share,
                if m.mesh == self.mesh { "this mesh" } else { "another mesh" }
            ),
            // Damaged or missing: written anew.
            Ok(None) | Err(_) => None,
        };
        let m = keep.unwrap_or_else(|| marker::new_marker(&self.mesh, name));
        marker::write_marker(root, &m).with_context(|| format!("writing the share marker in {}", root.display()))?;
        let filesystem = marker::filesystem_of(root).with_context(|| format!("reading {}", root.display()))?;
        self.ctx.index.set_root_record(&RootRecord { marker_id: m.id, filesystem })?;
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).root = None;
        info!(path = %root.display(), "share folder confirmed by the user; resuming");
        self.rescan();
        Ok(())
    }
}
