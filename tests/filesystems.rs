//! Inboxes on file systems where inotify is blind: files written on another host of an NFS or
//! SMB share, or behind a FUSE mount, raise no event here. extdrop detects such an inbox at
//! start-up and polls it.
//!
//! The FUSE test mounts `bindfs` over the inbox (as root, with `/dev/fuse`), writes into the
//! folder behind the mount, and expects the file uploaded; it skips with a message where bindfs
//! or FUSE is missing, and never leaves a mount behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::Sandbox;

/// A `bindfs` mount of `source` over `target`, unmounted when dropped.
struct FuseMount {
    target: PathBuf,
}

impl FuseMount {
    /// Mounts, or says why it cannot (the test then skips).
    fn bind(source: &Path, target: &Path) -> Result<FuseMount, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is missing".to_owned());
        }
        let out = Command::new("bindfs")
            .arg(source)
            .arg(target)
            .output()
            .map_err(|e| format!("bindfs cannot run ({e}); install it (Debian: bindfs)"))?;
        if !out.status.success() {
            return Err(format!(
                "bindfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(FuseMount {
            target: target.to_owned(),
        })
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let unmounted = Command::new("fusermount")
            .arg("-u")
            .arg(&self.target)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Lazily, so that a process still inside cannot keep it mounted.
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
    }
}

/// Mounts the folder `behind` over the sandbox's inbox; `None` (the test skips, saying why)
/// where FUSE cannot be mounted.
fn fuse_inbox(s: &Sandbox, behind: &Path) -> Option<FuseMount> {
    std::fs::create_dir_all(behind).expect("folder behind the mount");
    FuseMount::bind(behind, &s.path("inbox"))
        .map_err(|why| eprintln!("skipped: cannot mount FUSE here: {why}"))
        .ok()
}

#[test]
fn an_inbox_behind_fuse_is_polled_and_files_written_behind_it_are_uploaded() {
    let mut s = Sandbox::new();
    let behind = s.path("behind");
    let Some(_mount) = fuse_inbox(&s, &behind) else {
        return;
    };
    s.watch_extra = "poll_interval = \"200ms\"".to_owned();
    let daemon = s.start();
    assert!(
        daemon.log().contains("file_system=\"fuse\"") || daemon.log().contains("file_system=fuse"),
        "the switch to polling is logged:\n{}",
        daemon.log()
    );
    // Written behind the mount: inotify on the mount sees nothing of it.
    let staged = s.path("behind/.staged");
    extdrop::package::write_sample(&staged, "fused", "Build", "1.0.0").expect("sample");
    std::fs::rename(&staged, behind.join("fused__Build.zip")).expect("drop behind the mount");
    s.wait_until(
        "the file written behind the mount in done",
        Some(&daemon),
        || s.files("done") == ["fused__Build.zip"],
    );
    assert!(!behind.join("fused__Build.zip").exists());
    drop(daemon);
}

#[test]
fn poll_set_explicitly_is_obeyed_on_fuse() {
    let mut s = Sandbox::new();
    let behind = s.path("behind");
    let Some(_mount) = fuse_inbox(&s, &behind) else {
        return;
    };
    s.watch_extra = "poll = false".to_owned();
    let out = s.run(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inotify") && !text.contains("polling"),
        "{text}"
    );
    s.watch_extra = String::new();
    let out = s.run(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("polling every") && text.contains("fuse"),
        "{text}"
    );
}
