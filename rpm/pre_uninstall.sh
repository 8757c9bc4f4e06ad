# %preun of the extdrop RPM. $1 is 0 when the package is erased, 1 on an upgrade: only an
# erase stops the service and removes the operator's links to the unit, before its file goes.
# A stop lets uploads in flight finish (up to 20 s); unfiled files stay claimed in the inbox.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now extdrop.service >/dev/null 2>&1 || :
fi
