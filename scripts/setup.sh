#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, from Debian's packages:
# a C compiler for the test plugins, a C++ compiler for the C++ example plugin, minisign for
# the key-format interop tests, checksec (compared with `skillgate inspect`), zlib headers
# (an extra-DT_NEEDED fixture), python3 (present on these machines) for one control in
# the pipeline tests, openssl (the TUF keys of docs/fleet-tuf.md, in tests/freshness.rs),
# and Debian's docker-registry (the CNCF distribution server) that tests/fleet.rs starts
# on a loopback port (as /usr/bin/docker-registry; its systemd unit is never started here).
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v g++ >/dev/null || need+=(g++)
command -v minisign >/dev/null || need+=(minisign)
command -v python3 >/dev/null || need+=(python3)
command -v mkfifo >/dev/null || need+=(coreutils)
command -v checksec >/dev/null || need+=(checksec)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v openssl >/dev/null || need+=(openssl)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "setup: cc, g++, minisign, checksec, zlib headers, python3, openssl and docker-registry are present"
