#!/usr/bin/env bash
# Builds choir in release mode and installs it as a systemd service (run as root on Debian).
#   scripts/install.sh            build, install /usr/local/bin/choir, the unit and /etc/choir/choir.env
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it writes /usr/local/bin, /etc/systemd/system, /etc/choir)" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "install.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }

cargo build --release --locked
install -m 0755 target/release/choir /usr/local/bin/choir
id -u choir >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin choir
install -d -m 0755 /etc/choir
[ -f /etc/choir/choir.env ] || install -m 0640 -g choir systemd/choir.env /etc/choir/choir.env
# The API token secret (used once CHOIR_AUTH_SECRET_FILE is uncommented in choir.env).
if [ ! -f /etc/choir/auth-secret ]; then
  (umask 027; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/choir/auth-secret)
  chgrp choir /etc/choir/auth-secret
fi
install -m 0644 systemd/choir.service /etc/systemd/system/choir.service
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "installed. Set SFU_ANNOUNCED_IP in /etc/choir/choir.env, then: systemctl enable --now choir"
else
  echo "installed (no running systemd here: start /usr/local/bin/choir by hand)"
fi
