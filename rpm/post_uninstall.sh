# %postun of the extdrop RPM. $1 is 0 after an erase, 1 after an upgrade. systemd forgets the
# removed unit (or reads the new one); after an upgrade a running service restarts on the new
# binary (try-restart starts nothing that was stopped). The user, the group and
# /var/lib/extdrop are kept: they hold the operator's files.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart extdrop.service >/dev/null 2>&1 || :
    fi
fi
