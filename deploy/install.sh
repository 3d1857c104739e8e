#!/usr/bin/env bash
# citynode installer for 64-bit Raspberry Pi OS (Debian bookworm, arm64).
#
#   sudo ./install.sh --bundle citynode-bundle-0.1.0-aarch64.tar.gz   # offline, from a bundle
#   sudo ./install.sh --online                                       # from the package index
#   sudo ./install.sh --uninstall [--purge]
#
# Idempotent: a second run with the same inputs changes nothing and says so. It never
# overwrites /etc/citynode/citynode.toml once it exists. docs/install.md lists every change.
#
# Options:
#   --bundle FILE    install from an offline bundle (make bundle); its SHA256SUMS are checked
#                    first, and FILE.sha256 too when it lies beside FILE
#   --online         install from the package index pip is configured for (PIP_INDEX_URL);
#                    from a source checkout, the checkout itself (override with --package)
#   --package SPEC   with --online: what to pip install (default: see above)
#   --reinstall      reinstall the venv's packages even if the same bundle is installed
#   --no-enable      do not enable the systemd unit
#   --no-boot-config do not enable the UART and I2C (config.txt, cmdline.txt, raspi-config)
#   --prefix DIR     treat DIR as the root file system (tests, image building): every path
#                    is under DIR, users are created with useradd --prefix, nothing is started
#   --force          install on another architecture or OS release than 64-bit bookworm
#   --uninstall      stop and disable the units; remove them, the releases and the udev rules
#   --purge          with --uninstall: also remove /etc/citynode, /var/lib/citynode and the user
#   -h, --help       this text
#
# Environment: CITYNODE_RASPI_CONFIG=PATH uses that raspi-config (tests use a stub); with
# --prefix raspi-config is only used when this is set, since it edits the running system.
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVICE_USER=citynode
DEVICE_GROUPS=(dialout i2c gpio)
UDEV_RULES=(99-citynode.rules)  # ours; 98-citynode-local.rules is the operator's and is kept

MODE=install
BUNDLE=""
ONLINE=0
PACKAGE=""
REINSTALL=0
ENABLE=1
BOOT_CONFIG=1
PREFIX=""
FORCE=0
PURGE=0

CHANGES=0
REBOOT_NEEDED=0
VENV_CHANGED=0
UNIT_CHANGED=0
WORK=""

# -- output ---------------------------------------------------------------------------------
step() { printf '==> %s\n' "$*"; }
changed() { CHANGES=$((CHANGES + 1)); printf '    changed: %s\n' "$*"; }
same() { printf '    unchanged: %s\n' "$*"; }
note() { printf '    note: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

cleanup() { if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

# -- arguments ------------------------------------------------------------------------------
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) [ $# -ge 2 ] || die "--bundle needs a file"; BUNDLE=$2; shift ;;
        --bundle=*) BUNDLE=${1#*=} ;;
        --online) ONLINE=1 ;;
        --package) [ $# -ge 2 ] || die "--package needs a value"; PACKAGE=$2; shift ;;
        --reinstall) REINSTALL=1 ;;
        --no-enable) ENABLE=0 ;;
        --no-boot-config) BOOT_CONFIG=0 ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#*=} ;;
        --force) FORCE=1 ;;
        --uninstall) MODE=uninstall ;;
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

if [ -n "$PREFIX" ]; then
    [ -d "$PREFIX" ] || die "--prefix $PREFIX is not a directory"
    R=$(cd "$PREFIX" && pwd)
    [ "$R" != / ] || R=""
else
    R=""
fi
OPT="$R/opt/citynode"
# Releases side by side (docs/updates.md): releases/<version>/venv, current and previous
# name one each; /opt/citynode/venv is a link to current/venv for older scripts.
RELEASES="$OPT/releases"
RELEASE=""   # set once the version is known (release_name)
VENV=""
STAMP=""
ETC="$R/etc/citynode"
STATE="$R/var/lib/citynode"
UNIT_DST="$R/etc/systemd/system/citynode.service"
UPDATE_UNITS=(citynode-update.service citynode-update.path)  # root side of OTA updates
GUARD_DST="$OPT/bin/citynode-guard"
UDEV_DIR="$R/etc/udev/rules.d"
MODULES_CONF="$R/etc/modules-load.d/citynode.conf"
IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

if [ -z "$PREFIX" ] && [ "$IS_ROOT" -eq 0 ]; then
    die "run as root: sudo $0 $*"
fi
if [ "$MODE" = install ]; then
    if [ -n "$BUNDLE" ] && [ "$ONLINE" -eq 1 ]; then die "--bundle and --online exclude each other"; fi
    if [ -z "$BUNDLE" ] && [ "$ONLINE" -eq 0 ]; then
        die "say where citynode comes from: --bundle FILE.tar.gz (offline) or --online"
    fi
fi
if [ "$PURGE" -eq 1 ] && [ "$MODE" != uninstall ]; then die "--purge only goes with --uninstall"; fi

# -- the machine ----------------------------------------------------------------------------
machine_arch() {
    # The userland's architecture: a 32-bit Raspberry Pi OS runs a 64-bit kernel on a Pi 4,
    # so `uname -m` says aarch64 there while every binary (and python3) is armhf.
    if command -v dpkg >/dev/null 2>&1; then
        case "$(dpkg --print-architecture)" in
            arm64) echo aarch64 ;;
            amd64) echo x86_64 ;;
            armhf) echo armv7l ;;
            *) dpkg --print-architecture ;;
        esac
    else
        uname -m
    fi
}

os_field() { sed -n "s/^$1=//p" "$R/etc/os-release" 2>/dev/null | tr -d '"' | head -n 1; }

python_version() { python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

check_platform() {
    step "checking the platform"
    local arch codename id
    arch=$(machine_arch)
    codename=$(os_field VERSION_CODENAME)
    id=$(os_field ID)
    local problems=()
    if [ "$arch" = armv7l ]; then
        problems+=("this is a 32-bit (armhf) system: citynode needs 64-bit Raspberry Pi OS (arm64); reflash with \"Raspberry Pi OS Lite (64-bit)\"")
    elif [ "$arch" != aarch64 ]; then
        problems+=("architecture $arch: citynode targets 64-bit Raspberry Pi OS (aarch64)")
    fi
    if [ "$codename" != bookworm ] || { [ "$id" != debian ] && [ "$id" != raspbian ]; }; then
        problems+=("OS ${id:-unknown} ${codename:-unknown}: citynode targets Raspberry Pi OS / Debian bookworm")
    fi
    if [ ${#problems[@]} -gt 0 ]; then
        local p
        for p in "${problems[@]}"; do printf '    %s\n' "$p" >&2; done
        if [ "$FORCE" -eq 0 ]; then die "refusing to install here (--force to install anyway)"; fi
        note "--force: installing anyway"
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is missing: apt-get install python3 python3-venv"
    printf '    %s %s, %s, Python %s\n' "${id:-?}" "${codename:-?}" "$arch" "$(python_version)"
}

# -- the bundle -----------------------------------------------------------------------------
manifest_get() { sed -n "s/^$1=//p" "$SRC/MANIFEST" | head -n 1; }

verify_bundle() {
    step "verifying bundle $BUNDLE"
    [ -f "$BUNDLE" ] || die "bundle $BUNDLE not found"
    if [ -f "$BUNDLE.sha256" ]; then
        local want have
        want=$(awk '{print $1; exit}' "$BUNDLE.sha256")
        have=$(sha256sum "$BUNDLE" | awk '{print $1}')
        [ "$want" = "$have" ] || die "$BUNDLE does not match $BUNDLE.sha256 (corrupt or replaced): refusing it"
        printf '    %s matches %s\n' "$(basename "$BUNDLE")" "$(basename "$BUNDLE.sha256")"
    fi
    local listing
    listing=$(tar -tzf "$BUNDLE" 2>/dev/null) || die "$BUNDLE is not a readable .tar.gz"
    if printf '%s\n' "$listing" | grep -Eq '(^/|(^|/)\.\.(/|$))'; then
        die "$BUNDLE has absolute or .. paths: refusing it"
    fi
    local top
    top=$(printf '%s\n' "$listing" | head -n 1 | cut -d/ -f1)
    if printf '%s\n' "$listing" | grep -qv "^$top\(/\|$\)"; then
        die "$BUNDLE has more than one top-level directory: not a citynode bundle"
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/citynode-install.XXXXXX")
    tar -xzf "$BUNDLE" -C "$WORK" --no-same-owner
    SRC="$WORK/$top"
    if [ ! -f "$SRC/SHA256SUMS" ] || [ ! -f "$SRC/MANIFEST" ]; then
        die "$BUNDLE has no SHA256SUMS or MANIFEST: not a citynode bundle"
    fi
    (cd "$SRC" && sha256sum --strict --quiet -c SHA256SUMS) \
        || die "checksums in $BUNDLE do not match its SHA256SUMS (corrupt or tampered): refusing it"
    # Every file must be listed: an extra wheel would be picked up by --find-links.
    local unlisted
    unlisted=$(cd "$SRC" && comm -23 <(find . -type f ! -path ./SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort) \
        <(sed -E 's/^[0-9a-f]{64} [ *]//' SHA256SUMS | LC_ALL=C sort))
    [ -z "$unlisted" ] || die "$BUNDLE holds files not in its SHA256SUMS ($(echo "$unlisted" | head -n 3 | tr '\n' ' ')): refusing it"
    [ "$(manifest_get name)" = citynode ] || die "$BUNDLE is not a citynode bundle (MANIFEST name)"
    BUNDLE_VERSION=$(manifest_get version)
    BUNDLE_ARCH=$(manifest_get arch)
    BUNDLE_PY=$(manifest_get python)
    BUNDLE_EXTRAS=$(manifest_get extras)
    printf '    citynode %s for %s, Python %s%s, %s files verified\n' "$BUNDLE_VERSION" \
        "$BUNDLE_ARCH" "$BUNDLE_PY" "${BUNDLE_EXTRAS:+, extras $BUNDLE_EXTRAS}" \
        "$(wc -l <"$SRC/SHA256SUMS")"
    if [ "$BUNDLE_ARCH" != "$(machine_arch)" ]; then
        [ "$FORCE" -eq 1 ] || die "the bundle is for $BUNDLE_ARCH, this machine is $(machine_arch): build one with make bundle ARCH=$(machine_arch)"
        note "--force: bundle for $BUNDLE_ARCH on $(machine_arch)"
    fi
    if [ "$BUNDLE_PY" != "$(python_version)" ]; then
        [ "$FORCE" -eq 1 ] || die "the bundle's wheels are for Python $BUNDLE_PY, python3 here is $(python_version)"
        note "--force: wheels for Python $BUNDLE_PY on $(python_version)"
    fi
}

# -- users, files, directories ----------------------------------------------------------------
PREFIX_ARGS=()
[ -z "$R" ] || PREFIX_ARGS=(--prefix "$R")

has_group() {
    if [ -n "$R" ]; then grep -q "^$1:" "$R/etc/group" 2>/dev/null; else getent group "$1" >/dev/null; fi
}
has_user() {
    if [ -n "$R" ]; then grep -q "^$1:" "$R/etc/passwd" 2>/dev/null; else getent passwd "$1" >/dev/null; fi
}
# Numeric ids, read from the target's files under --prefix (the host's names may differ).
uid_of() {
    if [ -n "$R" ]; then awk -F: -v u="$1" '$1 == u {print $3}' "$R/etc/passwd"; else id -u "$1"; fi
}
gid_of() {
    if [ -n "$R" ]; then awk -F: -v g="$1" '$1 == g {print $3}' "$R/etc/group"; else getent group "$1" | cut -d: -f3; fi
}
in_group() {
    local file="$R/etc/group"
    [ -n "$R" ] || file=/etc/group
    if [ -z "$R" ]; then id -nG "$2" 2>/dev/null | tr ' ' '\n' | grep -qx "$1"; return; fi
    awk -F: -v g="$1" -v u="$2" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 } END { exit !found }' "$file"
}

ensure_user() {
    step "service user $SERVICE_USER (groups ${DEVICE_GROUPS[*]})"
    local g missing=()
    for g in "${DEVICE_GROUPS[@]}"; do
        if has_group "$g"; then continue; fi
        groupadd "${PREFIX_ARGS[@]}" --system "$g"
        changed "created group $g"
    done
    if has_user "$SERVICE_USER"; then
        same "user $SERVICE_USER exists"
    else
        useradd "${PREFIX_ARGS[@]}" --system --user-group --home-dir /var/lib/citynode \
            --no-create-home --shell /usr/sbin/nologin --comment "citynode sensor node agent" \
            --groups "$(IFS=,; echo "${DEVICE_GROUPS[*]}")" "$SERVICE_USER"
        changed "created system user $SERVICE_USER (no login shell, home /var/lib/citynode)"
    fi
    for g in "${DEVICE_GROUPS[@]}"; do in_group "$g" "$SERVICE_USER" || missing+=("$g"); done
    if [ ${#missing[@]} -gt 0 ]; then
        usermod "${PREFIX_ARGS[@]}" -a -G "$(IFS=,; echo "${missing[*]}")" "$SERVICE_USER"
        changed "added $SERVICE_USER to ${missing[*]}"
    fi
}

# ensure_dir DIR MODE USER GROUP
ensure_dir() {
    local dir=$1 mode=$2 owner="" want have
    if [ "$IS_ROOT" -eq 1 ]; then owner="$(uid_of "$3"):$(gid_of "$4")"; fi
    want="$mode${owner:+ $owner}"
    if [ -d "$dir" ]; then
        have=$(stat -c '%a' "$dir")
        [ -z "$owner" ] || have="$have $(stat -c '%u:%g' "$dir")"
        if [ "$have" = "$want" ]; then same "${dir#"$R"}/"; return; fi
    fi
    mkdir -p "$dir"
    chmod "$mode" "$dir"
    [ -z "$owner" ] || chown "$owner" "$dir"
    changed "${dir#"$R"}/ (mode $mode${owner:+, owner $3:$4})"
}

# install_file SRC DST MODE [USER GROUP]: copy unless identical (content, mode, owner)
install_file() {
    local src=$1 dst=$2 mode=$3 owner="" what
    # Called in `if` conditions, where set -e does not stop a failed cp: check first.
    [ -f "$src" ] || die "$src is missing (an incomplete bundle or checkout)"
    if [ "$IS_ROOT" -eq 1 ]; then owner="$(uid_of "${4:-root}"):$(gid_of "${5:-root}")"; fi
    if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c '%a' "$dst")" = "$mode" ] \
        && { [ -z "$owner" ] || [ "$(stat -c '%u:%g' "$dst")" = "$owner" ]; }; then
        same "${dst#"$R"}"
        return 1
    fi
    what=installed
    [ ! -e "$dst" ] || what=updated
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst.citynode-new"
    chmod "$mode" "$dst.citynode-new"
    [ -z "$owner" ] || chown "$owner" "$dst.citynode-new"
    mv -f "$dst.citynode-new" "$dst"
    changed "$what ${dst#"$R"}"
    return 0
}

# -- releases -------------------------------------------------------------------------------
# The folder this install goes to: the bundle's version, or for --online the version asked
# for (--package NAME==X) or the checkout's; "online" when nothing says it.
release_name() {
    local v=""
    if [ -n "$BUNDLE" ]; then v=$BUNDLE_VERSION
    elif [[ "$PACKAGE" == *==* ]]; then v=${PACKAGE##*==}
    elif [ -z "$PACKAGE" ] && [ -f "$SELF_DIR/../agent/__init__.py" ]; then
        v=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$SELF_DIR/../agent/__init__.py" | head -n 1)
    fi
    [ -n "$v" ] || v=online
    [[ "$v" =~ ^[0-9A-Za-z][0-9A-Za-z.+_-]{0,39}$ ]] || die "version $v cannot name a release folder"
    RELEASE=$v
    VENV="$RELEASES/$RELEASE/venv"
    STAMP="$RELEASES/$RELEASE/.installed"
}

# set_link NAME VERSION: point $OPT/NAME at releases/VERSION (a new link renamed over the old)
set_link() {
    local link="$OPT/$1" want="releases/$2"
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$want" ]; then return 1; fi
    ln -sfn "$want" "$OPT/.$1.new"
    mv -Tf "$OPT/.$1.new" "$link"
    return 0
}

switch_release() {
    step "release links"
    local was="" mark="$RELEASES/$RELEASE/.complete"
    if [ -L "$OPT/current" ]; then was=$(basename "$(readlink "$OPT/current")"); fi
    if [ "$(cat "$mark" 2>/dev/null)" != "$RELEASE" ]; then
        printf '%s\n' "$RELEASE" >"$mark.new"
        mv -f "$mark.new" "$mark"
    fi
    if [ -n "$was" ] && [ "$was" != "$RELEASE" ] && [ -d "$RELEASES/$was" ]; then
        if set_link previous "$was"; then changed "/opt/citynode/previous -> releases/$was"; fi
    fi
    if set_link current "$RELEASE"; then changed "/opt/citynode/current -> releases/$RELEASE"
    else same "/opt/citynode/current -> releases/$RELEASE"; fi
    # An install from before releases: its venv gives way to a link to the current one.
    if [ -d "$OPT/venv" ] && [ ! -L "$OPT/venv" ]; then
        rm -rf "$OPT/venv"
        rm -f "$OPT/.installed"
        changed "migrated /opt/citynode/venv into releases/$RELEASE (the old venv removed)"
    fi
    if [ "$(readlink "$OPT/venv" 2>/dev/null)" != current/venv ]; then
        ln -sfn current/venv "$OPT/venv"
        changed "/opt/citynode/venv -> current/venv"
    fi
}

# The guard (ExecStartPre of citynode.service) lives outside the releases: from the bundle,
# else the new release's own copy, else this checkout's.
guard_source() {
    local f
    for f in "$SRC/citynode-guard" "$SELF_DIR/citynode-guard"; do
        if [ -f "$f" ]; then echo "$f"; return; fi
    done
    f=$("$VENV/bin/python" -c 'import agent.update.guard as g; print(g.__file__)' 2>/dev/null || true)
    if [ -n "$f" ] && [ -f "$f" ]; then echo "$f"; return; fi
    f="$SELF_DIR/../agent/update/guard.py"
    if [ -f "$f" ]; then echo "$f"; return; fi
    die "no citynode-guard in the bundle or the release: cannot install the health gate"
}

unit_source() { if [ -f "$SRC/$1" ]; then echo "$SRC/$1"; else echo "$SELF_DIR/$1"; fi; }

# -- the virtual environment ------------------------------------------------------------------
create_venv() {
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if python3 -m venv "$VENV" >/dev/null 2>&1; then return; fi
    rm -rf "$VENV"
    # No ensurepip (python3-venv missing): a venv without pip, then pip from the bundle.
    local pipwheel=""
    if [ -n "$BUNDLE" ]; then pipwheel=$(find "$SRC/wheels" -name 'pip-*.whl' | head -n 1); fi
    if [ -n "$pipwheel" ] && python3 -m venv --without-pip "$VENV" >/dev/null 2>&1; then
        note "python3-venv is missing: bootstrapping pip from the bundle"
        "$VENV/bin/python" "$pipwheel/pip" install -q --no-index --find-links "$SRC/wheels" pip
        return
    fi
    rm -rf "$VENV"
    if [ "$ONLINE" -eq 1 ] && [ -z "$R" ] && command -v apt-get >/dev/null 2>&1; then
        note "installing python3-venv (Debian package)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
        python3 -m venv "$VENV" && return
    fi
    die "cannot create a venv: python3-venv is missing (apt-get install python3-venv)"
}

venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; }

install_venv() {
    local want spec pip_args=()
    if [ -n "$BUNDLE" ]; then
        spec="citynode${BUNDLE_EXTRAS:+[$BUNDLE_EXTRAS]}==$BUNDLE_VERSION"
        want="bundle $(sha256sum "$SRC/SHA256SUMS" | cut -c1-64) $spec python $(python_version)"
        step "venv ${VENV#"$R"} from the bundle (offline)"
    else
        if [ -n "$PACKAGE" ]; then spec=$PACKAGE
        elif [ -f "$SELF_DIR/../setup.cfg" ]; then spec=$(cd "$SELF_DIR/.." && pwd)
        else spec=citynode; fi
        want="online $spec python $(python_version)"
        step "venv ${VENV#"$R"} from the package index ($spec)"
    fi
    if [ "$REINSTALL" -eq 0 ] && venv_ok && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
        && "$VENV/bin/citynode" version >/dev/null 2>&1; then
        same "$("$VENV/bin/citynode" version) already installed"
        return
    fi
    local pyv=""
    if venv_ok; then pyv=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); fi
    if [ "$pyv" != "$(python_version)" ]; then
        create_venv
        changed "created venv ${VENV#"$R"} (Python $(python_version))"
    fi
    if [ -n "$BUNDLE" ]; then
        # Eager upgrades: the venv ends up with exactly the bundle's versions.
        pip_args=(--no-index --find-links "$SRC/wheels" --only-binary :all:
                  --upgrade --upgrade-strategy eager "$spec")
    else
        pip_args=("$spec")
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q --no-cache-dir \
        "${pip_args[@]}" || die "pip install failed (see above)"
    "$VENV/bin/citynode" version >/dev/null || die "citynode does not run from the venv"
    printf '%s\n' "$want" >"$STAMP"
    VENV_CHANGED=1
    changed "installed $("$VENV/bin/citynode" version) with $("$VENV/bin/python" -m pip list \
        --disable-pip-version-check --format=freeze 2>/dev/null | wc -l) packages"
}

# -- boot configuration: UART and I2C ---------------------------------------------------------
backup() {
    local f=$1 b
    b="$f.citynode-$(date +%Y%m%d-%H%M%S)"
    cp -p "$f" "$b"
    note "backup ${b#"$R"}"
}

boot_config_raspi() {
    local rc=$1
    step "UART and I2C with raspi-config ($rc)"
    # get_* print 0 when enabled; do_* with 0 enables, 1 disables.
    if [ "$("$rc" nonint get_serial_hw 2>/dev/null)" = 0 ]; then same "UART enabled"
    else "$rc" nonint do_serial_hw 0; changed "enabled the UART (raspi-config do_serial_hw 0)"; REBOOT_NEEDED=1; fi
    if [ "$("$rc" nonint get_serial_cons 2>/dev/null)" = 1 ]; then same "no login console on the UART"
    else "$rc" nonint do_serial_cons 1; changed "serial console off (raspi-config do_serial_cons 1)"; REBOOT_NEEDED=1; fi
    if [ "$("$rc" nonint get_i2c 2>/dev/null)" = 0 ]; then same "I2C enabled"
    else "$rc" nonint do_i2c 0; changed "enabled I2C (raspi-config do_i2c 0)"; REBOOT_NEEDED=1; fi
}

boot_config_files() {
    local dir="" d
    for d in "$R/boot/firmware" "$R/boot"; do
        if [ -f "$d/config.txt" ] && ! grep -q 'DO NOT EDIT THIS FILE' "$d/config.txt"; then dir=$d; break; fi
    done
    step "UART and I2C in config.txt and cmdline.txt"
    if [ -z "$dir" ]; then
        note "no /boot/firmware/config.txt or /boot/config.txt: not a Raspberry Pi image, skipped"
        return
    fi
    local cfg="$dir/config.txt" add=()
    grep -Eq '^[[:space:]]*enable_uart=1[[:space:]]*$' "$cfg" || add+=(enable_uart=1)
    grep -Eq '^[[:space:]]*dtparam=([^#]*,)?i2c(_arm)?=on' "$cfg" || add+=(dtparam=i2c_arm=on)
    if [ ${#add[@]} -eq 0 ]; then
        same "${cfg#"$R"}: enable_uart=1, dtparam=i2c_arm=on"
    else
        backup "$cfg"
        # Switch off contradicting lines; append ours under [all] so no [pi4]-style filter applies.
        sed -i -E 's/^([[:space:]]*enable_uart=0)/#\1  # citynode: see below/;
                   s/^([[:space:]]*dtparam=i2c(_arm)?=off)/#\1  # citynode: see below/' "$cfg"
        {
            printf '\n[all]\n# citynode install.sh: UART for serial sensors, I2C for I2C sensors\n'
            printf '%s\n' "${add[@]}"
        } >>"$cfg"
        changed "${cfg#"$R"}: ${add[*]}"
        REBOOT_NEEDED=1
    fi
    local cmd="$dir/cmdline.txt"
    if [ -f "$cmd" ]; then
        if grep -Eq '(^|[[:space:]])console=(serial0|ttyAMA0|ttyS0),[0-9]+([[:space:]]|$)' "$cmd"; then
            backup "$cmd"
            awk '{ out = ""; for (i = 1; i <= NF; i++) { if ($i ~ /^console=(serial0|ttyAMA0|ttyS0),[0-9]+$/) continue; out = out (out == "" ? "" : " ") $i } print out }' \
                "$cmd" >"$cmd.citynode-new"
            cat "$cmd.citynode-new" >"$cmd"   # keep the file (FAT: no modes to preserve)
            rm -f "$cmd.citynode-new"
            changed "${cmd#"$R"}: removed the serial login console (the sensor owns the UART)"
            REBOOT_NEEDED=1
        else
            same "${cmd#"$R"}: no serial console"
        fi
    fi
    local tmp
    tmp=$(mktemp)
    printf '# citynode: the I2C character devices (/dev/i2c-N)\ni2c-dev\n' >"$tmp"
    install_file "$tmp" "$MODULES_CONF" 644 || true
    rm -f "$tmp"
}

boot_config() {
    local rc="${CITYNODE_RASPI_CONFIG:-}"
    if [ -z "$rc" ] && [ -z "$R" ]; then rc=$(command -v raspi-config || true); fi
    if [ -n "$rc" ]; then boot_config_raspi "$rc"; else boot_config_files; fi
}

# -- systemd and udev -------------------------------------------------------------------------
systemd_running() { [ -z "$R" ] && [ -d /run/systemd/system ]; }

enable_unit() {
    step "systemd unit"
    if systemd_running && [ "$UNIT_CHANGED" -eq 1 ]; then
        systemctl daemon-reload
        note "systemctl daemon-reload"
    fi
    if [ "$ENABLE" -eq 0 ]; then note "--no-enable: not enabled"; return; fi
    local sc=(systemctl)
    [ -z "$R" ] || sc=(systemctl --root="$R")
    if ! command -v systemctl >/dev/null 2>&1; then
        note "systemctl not found: enable citynode once systemd runs (systemctl enable citynode)"
        return
    fi
    if ! systemd_running && [ -z "$R" ]; then
        note "systemd is not running here (chroot?): enabling offline"
    fi
    if "${sc[@]}" is-enabled --quiet citynode.service 2>/dev/null; then
        same "citynode.service enabled"
    else
        "${sc[@]}" enable --quiet citynode.service
        changed "enabled citynode.service (starts at boot)"
    fi
    if "${sc[@]}" is-enabled --quiet citynode-update.path 2>/dev/null; then
        same "citynode-update.path enabled"
    else
        "${sc[@]}" enable --quiet citynode-update.path
        changed "enabled citynode-update.path (installs updates the daemon downloaded)"
    fi
}

reload_udev() {
    if [ -z "$R" ] && command -v udevadm >/dev/null 2>&1 && [ -S /run/udev/control ]; then
        udevadm control --reload
        udevadm trigger --action=add --subsystem-match=tty --subsystem-match=i2c-dev \
            --subsystem-match=gpio || true
        note "udev rules reloaded"
    fi
}

# -- install --------------------------------------------------------------------------------
do_install() {
    printf 'citynode installer: %s into %s\n' \
        "$( [ -n "$BUNDLE" ] && echo "offline from $(basename "$BUNDLE")" || echo online)" "${R:-/}"
    check_platform
    SRC=$SELF_DIR
    [ -z "$BUNDLE" ] || verify_bundle
    ensure_user
    step "directories"
    ensure_dir "$OPT" 755 root root
    ensure_dir "$RELEASES" 755 root root
    ensure_dir "$OPT/bin" 755 root root
    ensure_dir "$ETC" 750 root "$SERVICE_USER"
    ensure_dir "$ETC/keys" 755 root root
    ensure_dir "$STATE" 750 "$SERVICE_USER" "$SERVICE_USER"
    release_name
    install_venv
    if [ -n "$BUNDLE" ] && [ -f "$SRC/MANIFEST.json" ]; then
        install_file "$SRC/MANIFEST.json" "$RELEASES/$RELEASE/MANIFEST.json" 644 || true
    fi
    switch_release

    step "files"
    local readme="$SRC/README.md"
    [ -f "$readme" ] || readme="$SELF_DIR/../README.md"
    if [ -f "$readme" ]; then install_file "$readme" "$OPT/README.md" 644 || true; fi
    install_file "$SRC/citynode.toml" "$OPT/citynode.toml.example" 644 || true
    # Kept for later: sudo /opt/citynode/install.sh --uninstall
    install_file "$SRC/install.sh" "$OPT/install.sh" 755 || true
    if install_file "$SRC/citynode.service" "$UNIT_DST" 644; then UNIT_CHANGED=1; fi
    local unit
    for unit in "${UPDATE_UNITS[@]}"; do
        if install_file "$(unit_source "$unit")" "$R/etc/systemd/system/$unit" 644; then UNIT_CHANGED=1; fi
    done
    install_file "$(guard_source)" "$GUARD_DST" 755 || true
    if [ -e "$ETC/citynode.toml" ]; then
        same "/etc/citynode/citynode.toml exists: kept (never overwritten)"
    else
        install_file "$SRC/citynode.toml" "$ETC/citynode.toml" 640 root "$SERVICE_USER" || true
        NEW_CONFIG=1
    fi
    local rules udev_changed=0
    for rules in "${UDEV_RULES[@]}"; do
        if install_file "$SRC/udev/$rules" "$UDEV_DIR/$rules" 644; then udev_changed=1; fi
    done
    [ "$udev_changed" -eq 0 ] || reload_udev

    if [ "$BOOT_CONFIG" -eq 1 ]; then boot_config; else step "boot configuration"; note "--no-boot-config: UART and I2C left as they are"; fi
    enable_unit

    step "done"
    if [ "$CHANGES" -eq 0 ]; then
        echo "    nothing changed: citynode was already installed exactly like this"
    else
        echo "    $CHANGES change(s)"
    fi
    echo
    echo "Next:"
    if [ "${NEW_CONFIG:-0}" -eq 1 ]; then
        echo "  1. edit /etc/citynode/citynode.toml (node.id, mqtt.host, the sensors); it is the example"
    else
        echo "  1. /etc/citynode/citynode.toml is this node's configuration (kept as it was)"
    fi
    echo "  2. check it:   sudo -u $SERVICE_USER /opt/citynode/current/venv/bin/citynode config check /etc/citynode/citynode.toml"
    if [ "$REBOOT_NEEDED" -eq 1 ]; then
        echo "  3. reboot (the UART and I2C settings take effect then); citynode starts at boot"
    elif systemd_running && systemctl is-active --quiet citynode.service 2>/dev/null && [ "$VENV_CHANGED" -eq 1 ]; then
        echo "  3. citynode is running the previous version: systemctl restart citynode"
    else
        echo "  3. start it:   systemctl start citynode   (or reboot)"
    fi
    echo "  4. watch it:   systemctl status citynode; journalctl -u citynode -f"
}

# -- uninstall ------------------------------------------------------------------------------
remove_path() {
    if [ -e "$1" ] || [ -L "$1" ]; then rm -rf "$1"; changed "removed ${1#"$R"}"; fi
}

do_uninstall() {
    printf 'citynode installer: uninstall from %s%s\n' "${R:-/}" "$( [ "$PURGE" -eq 1 ] && echo ' (purge)')"
    step "systemd unit"
    if [ -f "$UNIT_DST" ] && command -v systemctl >/dev/null 2>&1; then
        if systemd_running; then
            if systemctl is-active --quiet citynode.service; then
                systemctl stop citynode.service
                changed "stopped citynode.service"
            fi
            if systemctl is-enabled --quiet citynode.service 2>/dev/null; then
                systemctl disable --quiet citynode.service
                changed "disabled citynode.service"
            fi
        elif [ -n "$R" ] && systemctl --root="$R" is-enabled --quiet citynode.service 2>/dev/null; then
            systemctl --root="$R" disable --quiet citynode.service
            changed "disabled citynode.service"
        fi
    fi
    remove_path "$UNIT_DST"
    local unit
    for unit in "${UPDATE_UNITS[@]}"; do
        if systemd_running && systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl disable --now --quiet "$unit"
            changed "disabled $unit"
        elif [ -n "$R" ] && command -v systemctl >/dev/null 2>&1 \
            && systemctl --root="$R" is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl --root="$R" disable --quiet "$unit"
            changed "disabled $unit"
        fi
        remove_path "$R/etc/systemd/system/$unit"
    done
    if systemd_running; then systemctl daemon-reload; fi
    step "program and rules"
    remove_path "$OPT"
    local rules udev_changed=0
    for rules in "${UDEV_RULES[@]}"; do
        [ -e "$UDEV_DIR/$rules" ] || continue
        remove_path "$UDEV_DIR/$rules"
        udev_changed=1
    done
    [ "$udev_changed" -eq 0 ] || reload_udev
    remove_path "$MODULES_CONF"
    step "configuration and data"
    if [ "$PURGE" -eq 1 ]; then
        remove_path "$ETC"
        remove_path "$STATE"
        if has_user "$SERVICE_USER"; then
            userdel "${PREFIX_ARGS[@]}" "$SERVICE_USER"
            changed "removed user $SERVICE_USER"
        fi
    else
        [ ! -d "$ETC" ] || same "kept /etc/citynode (configuration, keys): --purge removes it"
        [ ! -d "$STATE" ] || same "kept /var/lib/citynode (spool, session): --purge removes it"
    fi
    note "the UART and I2C stay enabled; config.txt/cmdline.txt backups are *.citynode-<date>"
    step "done"
    if [ "$CHANGES" -eq 0 ]; then echo "    nothing changed: citynode was not installed"
    else echo "    $CHANGES change(s)"; fi
}

if [ "$MODE" = uninstall ]; then do_uninstall; else do_install; fi
