#!/bin/bash
# citynode first boot: run once by systemd from the SD card's boot partition.
#
# `citynode sdcard-kit` copies this to /boot/firmware/citynode/firstboot.sh and appends
#   systemd.run=/boot/firmware/citynode/firstboot.sh systemd.run_success_action=reboot
#   systemd.unit=kernel-command-line.target
# to cmdline.txt (Raspberry Pi OS's own mechanism, the one Raspberry Pi Imager's firstrun.sh
# uses; several systemd.run= entries run in order). No network is needed:
#   1. /etc/citynode/citynode.toml from the kit (an existing different one is backed up)
#   2. install.sh --bundle (verifies the bundle, creates the user and the venv, the unit,
#      the udev rules, enables UART and I2C, enables citynode)
#   3. the secrets into /etc/citynode with their owner and mode, checked, then deleted here
#   4. citynode config check as the service user; the host name if the kit sets one
#   5. our hook out of cmdline.txt, FIRSTBOOT-RESULT.txt and firstboot.log written here
# It always exits 0 so systemd reboots into the normal system (a failing systemd.run unit
# would power the Pi off); the result file says OK or FAILED and what to do.
set -uo pipefail

KIT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
BOOT=$(dirname "$KIT")
RESULT="$KIT/FIRSTBOOT-RESULT.txt"
LOG="$KIT/firstboot.log"
ETC=/etc/citynode
VENV=/opt/citynode/venv
USER_NAME=citynode

STATUS=OK
DONE=()
WARNINGS=()
ERRORS=()

exec > >(tee -a "$LOG") 2>&1

log() {
    printf '%s citynode-firstboot: %s\n' "$(date '+%F %T')" "$*"
    logger -t citynode-firstboot -- "$*" 2>/dev/null || true
}
did() { DONE+=("$*"); log "$*"; }
warn() { WARNINGS+=("$*"); log "warning: $*"; }
fail() { STATUS=FAILED; ERRORS+=("$*"); log "FAILED: $*"; }

kit_get() { sed -n "s/^$1=//p" "$KIT/kit.env" 2>/dev/null | head -n 1; }
stamp() { date +%Y%m%d-%H%M%S; }
have_user() { getent passwd "$USER_NAME" >/dev/null 2>&1; }

log "starting (kit in $KIT)"
BUNDLE_NAME=$(kit_get BUNDLE)
NODE_ID=$(kit_get NODE_ID)
NEW_HOSTNAME=$(kit_get HOSTNAME)

# 1. the node's configuration, in place before install.sh so it keeps it
if [ -f "$KIT/citynode.toml" ]; then
    mkdir -p "$ETC"
    if [ -f "$ETC/citynode.toml" ] && ! cmp -s "$KIT/citynode.toml" "$ETC/citynode.toml"; then
        cp -p "$ETC/citynode.toml" "$ETC/citynode.toml.citynode-$(stamp)"
        warn "an existing /etc/citynode/citynode.toml was replaced (backup beside it)"
    fi
    if install -m 0640 "$KIT/citynode.toml" "$ETC/citynode.toml.new" \
        && mv -f "$ETC/citynode.toml.new" "$ETC/citynode.toml" \
        && cmp -s "$KIT/citynode.toml" "$ETC/citynode.toml"; then
        rm -f "$KIT/citynode.toml"
        did "configuration for node $NODE_ID -> $ETC/citynode.toml (removed from the boot partition)"
    else
        fail "could not write $ETC/citynode.toml"
    fi
fi

# 2. install from the bundle
if [ -z "$BUNDLE_NAME" ] || [ ! -f "$KIT/$BUNDLE_NAME" ]; then
    fail "no bundle in the kit (kit.env BUNDLE=$BUNDLE_NAME)"
elif bash "$KIT/install.sh" --bundle "$KIT/$BUNDLE_NAME"; then
    did "installed from $BUNDLE_NAME with install.sh"
else
    fail "install.sh exited $? (its output is in firstboot.log)"
fi

if have_user && [ -f "$ETC/citynode.toml" ]; then
    chown "root:$USER_NAME" "$ETC/citynode.toml" && chmod 0640 "$ETC/citynode.toml"
fi

# 3. secrets: copy, verify, then delete from the FAT partition
if [ -f "$KIT/secrets/MANIFEST" ]; then
    while read -r mode owner sum name dest; do
        [ -n "$name" ] || continue
        src="$KIT/secrets/$name"
        case "$dest" in "$ETC"/*) ;; *) fail "secret $name: refusing destination $dest"; continue ;; esac
        if [ ! -f "$src" ]; then
            [ -f "$dest" ] && continue  # moved by an earlier run
            fail "secret $name missing from the kit"; continue
        fi
        if [ "$(sha256sum "$src" | cut -c1-64)" != "$sum" ]; then
            fail "secret $name does not match its checksum: not installed"; continue
        fi
        if [ "$owner" != root ] && ! have_user; then
            warn "user $USER_NAME does not exist: $dest owned by root"
            owner=root
        fi
        if install -D -m "$mode" -o "$owner" -g "$owner" "$src" "$dest" && cmp -s "$src" "$dest"; then
            if command -v shred >/dev/null 2>&1; then shred -n 1 -z -u "$src" 2>/dev/null || rm -f "$src"; else rm -f "$src"; fi
            did "secret $name -> $dest ($mode $owner; deleted from the boot partition)"
        else
            fail "could not install secret $name to $dest (left on the boot partition: delete it)"
        fi
    done <"$KIT/secrets/MANIFEST"
    if ! find "$KIT/secrets" -type f ! -name MANIFEST | grep -q .; then
        rm -rf "$KIT/secrets"
    fi
fi

# 4. the configuration as the service will read it
if [ -x "$VENV/bin/citynode" ] && [ -f "$ETC/citynode.toml" ]; then
    as_user=()
    if have_user; then as_user=(setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups --); fi
    if out=$("${as_user[@]}" "$VENV/bin/citynode" config check "$ETC/citynode.toml" 2>&1); then
        did "config check: $out"
    elif out2=$("${as_user[@]}" "$VENV/bin/citynode" config check --no-devices "$ETC/citynode.toml" 2>&1); then
        warn "config check with devices: $out (devices appear after the reboot that enables the UART and I2C; check again then)"
        did "config check without devices: $out2"
        # --no-devices skips the TLS and credential files: check them as the service user.
        check='import sys
from agent.core.config import load
from agent.wire.security import SecurityError, validate_security
cfg = load(sys.argv[1], check_devices=False)
try:
    cfg.local_mode or validate_security(cfg.mqtt)
except SecurityError as exc:
    sys.exit(str(exc))'
        if out3=$("${as_user[@]}" "$VENV/bin/python" -c "$check" "$ETC/citynode.toml" 2>&1); then
            did "TLS and credential files readable and private for $USER_NAME"
        else
            fail "security files: $out3"
        fi
    else
        fail "configuration refused: $out2"
    fi
fi

if [ -n "$NEW_HOSTNAME" ]; then
    old=$(cat /etc/hostname 2>/dev/null || true)
    if [ "$old" != "$NEW_HOSTNAME" ]; then
        printf '%s\n' "$NEW_HOSTNAME" >/etc/hostname
        if grep -q '^127\.0\.1\.1' /etc/hosts 2>/dev/null; then
            sed -i -E "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1\t$NEW_HOSTNAME/" /etc/hosts
        else
            printf '127.0.1.1\t%s\n' "$NEW_HOSTNAME" >>/etc/hosts
        fi
        did "host name $NEW_HOSTNAME (was ${old:-unset})"
    fi
fi

# 5. remove our hook (only ours: another systemd.run= keeps the shared options)
if [ -f "$BOOT/cmdline.txt" ]; then
    if awk '{ other = 0; for (i = 1; i <= NF; i++) if ($i ~ /^systemd\.run=/ && $i !~ /\/citynode\/firstboot\.sh$/) other = 1
              out = ""
              for (i = 1; i <= NF; i++) {
                  t = $i
                  if (t ~ /^systemd\.run=.*\/citynode\/firstboot\.sh$/) continue
                  if (!other && (t == "systemd.run_success_action=reboot" || t == "systemd.unit=kernel-command-line.target")) continue
                  out = out (out == "" ? "" : " ") t
              }
              print out }' "$BOOT/cmdline.txt" >"$BOOT/cmdline.txt.citynode-new" \
        && [ -s "$BOOT/cmdline.txt.citynode-new" ]; then
        cat "$BOOT/cmdline.txt.citynode-new" >"$BOOT/cmdline.txt"
        rm -f "$BOOT/cmdline.txt.citynode-new"
        did "first-boot hook removed from cmdline.txt"
    else
        rm -f "$BOOT/cmdline.txt.citynode-new"
        fail "could not remove the hook from cmdline.txt: remove systemd.run=...citynode/firstboot.sh by hand"
    fi
fi

# the result, for the installer (any laptop reads the FAT partition) and the journal
version=$("$VENV/bin/citynode" version 2>/dev/null || echo "not installed")
model=$(tr -d '\0' </proc/device-tree/model 2>/dev/null || echo unknown)
os=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
enabled="not enabled (no systemctl here)"
if command -v systemctl >/dev/null 2>&1; then enabled=$(systemctl is-enabled citynode.service 2>/dev/null || true); fi
{
    echo "$STATUS"
    echo
    echo "citynode first boot, $(date '+%F %T %Z') (the clock may be wrong before NTP)"
    echo "node id:      ${NODE_ID:-?}"
    echo "host name:    $(cat /etc/hostname 2>/dev/null || hostname)"
    echo "citynode:     $version (bundle ${BUNDLE_NAME:-none})"
    echo "service:      citynode.service ${enabled:-not enabled}"
    echo "system:       $os, kernel $(uname -r), $(uname -m), $model"
    echo "python:       $(python3 --version 2>&1)"
    echo
    echo "Done:"
    for d in "${DONE[@]}"; do echo "  - $d"; done
    if [ ${#WARNINGS[@]} -gt 0 ]; then echo "Warnings:"; for w in "${WARNINGS[@]}"; do echo "  - $w"; done; fi
    if [ ${#ERRORS[@]} -gt 0 ]; then echo "Errors:"; for e in "${ERRORS[@]}"; do echo "  - $e"; done; fi
    echo
    echo "Next:"
    if [ "$STATUS" = OK ]; then
        echo "  The Pi reboots once now; citynode starts with the UART and I2C enabled."
        echo "  On the node: systemctl status citynode; journalctl -u citynode -f"
        echo "  First-boot log: journalctl -t citynode-firstboot, or citynode/firstboot.log here."
    else
        echo "  Read citynode/firstboot.log here (or journalctl -t citynode-firstboot on the node),"
        echo "  fix the cause, then on the node: sudo bash /boot/firmware/citynode/install.sh --bundle /boot/firmware/citynode/$BUNDLE_NAME"
        echo "  Any secret still in citynode/secrets/ here must be deleted by hand."
    fi
} >"$RESULT"
log "result: $STATUS (written to $RESULT)"
sync
exit 0
