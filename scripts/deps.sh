#!/bin/sh
# Install the Debian packages qlora needs to build and test, if any are missing.
# As root: apt-get installs them. Otherwise: print the exact command and fail.
# Usage: scripts/deps.sh [extra-package ...]
set -eu
PACKAGES="gcc make pkg-config libopenblas-openmp-dev libstb-dev libcjson-dev libyaml-dev \
libpcre2-dev libutf8proc-dev libxml2-utils $*"
missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
else
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: run as root:  apt-get install -y$missing" >&2
    exit 1
fi
