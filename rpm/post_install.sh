# %post of the extdrop RPM (cargo-generate-rpm: [package.metadata.generate-rpm] in Cargo.toml).
# $1 is 1 on a first install, 2 on an upgrade; both apply the snippets, which is idempotent.
# Each tool runs on the name of a snippet this package installs (.ci/run checks that), and only
# where it exists: a container or chroot without systemd still gets the files, and rpm carries on.
# The unit is installed but left alone: an operator writes /etc/extdrop/config.toml first.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers extdrop.conf || :
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create extdrop.conf || :
fi
# Only a running systemd has unit files to re-read.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
