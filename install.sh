#!/bin/sh
# install.sh — download the ecr-auth release binary for this machine's architecture, check it
# against the release's SHA256SUMS, and install it (`ecr-auth install`: the binary and its
# credential-helper names). POSIX sh; needs curl or wget, and sha256sum.
#
#   sh install.sh --base-url URL --version VERSION [--dir /usr/local/bin] [--download-only]
#
#   --base-url URL   where the release files are: URL/ecr-auth-VERSION-linux-ARCH and
#                    URL/SHA256SUMS (e.g. a GitLab generic package:
#                    https://gitlab.example.com/api/v4/projects/ID/packages/generic/ecr-auth/VERSION)
#   --version V      the release (default: $ECR_AUTH_VERSION)
#   --dir DIR        install into DIR (default /usr/local/bin)
#   --download-only  verify and leave ./ecr-auth-VERSION-linux-ARCH, install nothing
# Environment: ECR_AUTH_BASE_URL, ECR_AUTH_VERSION, ECR_AUTH_INSTALL_DIR; ECR_AUTH_ARCH
# (amd64|arm64) overrides `uname -m`; ECR_AUTH_DOWNLOAD_HEADER adds one HTTP header to each
# download, e.g. "JOB-TOKEN: $CI_JOB_TOKEN" or "PRIVATE-TOKEN: ..." for a private registry.
# Nothing is installed unless the checksum matches.
set -eu

base="${ECR_AUTH_BASE_URL:-}"
version="${ECR_AUTH_VERSION:-}"
dir="${ECR_AUTH_INSTALL_DIR:-/usr/local/bin}"
download_only=0
die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --base-url) [ $# -ge 2 ] || die "--base-url needs a value"; base="$2"; shift 2 ;;
        --version) [ $# -ge 2 ] || die "--version needs a value"; version="$2"; shift 2 ;;
        --dir) [ $# -ge 2 ] || die "--dir needs a value"; dir="$2"; shift 2 ;;
        --download-only) download_only=1; shift ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[ -n "$base" ] || die "no --base-url (or ECR_AUTH_BASE_URL): where the release files are"
[ -n "$version" ] || die "no --version (or ECR_AUTH_VERSION)"
base="${base%/}"

arch="${ECR_AUTH_ARCH:-$(uname -m)}"
case "$arch" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64 | armv8*) arch=arm64 ;;
    *) die "no ecr-auth build for this architecture ($arch): there are linux amd64 and arm64" ;;
esac
[ "$(uname -s)" = Linux ] || die "ecr-auth runs on Linux only"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum missing"

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        if [ -n "${ECR_AUTH_DOWNLOAD_HEADER:-}" ]; then
            curl -fsSL --proto '=https,http' -H "$ECR_AUTH_DOWNLOAD_HEADER" -o "$2" "$1"
        else
            curl -fsSL --proto '=https,http' -o "$2" "$1"
        fi
    elif command -v wget >/dev/null 2>&1; then
        if [ -n "${ECR_AUTH_DOWNLOAD_HEADER:-}" ]; then
            wget -q --header "$ECR_AUTH_DOWNLOAD_HEADER" -O "$2" "$1"
        else
            wget -q -O "$2" "$1"
        fi
    else
        die "neither curl nor wget is installed"
    fi || die "download of $1 failed"
}

name="ecr-auth-$version-linux-$arch"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/ecr-auth-install.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT INT TERM
fetch "$base/SHA256SUMS" "$tmp/SHA256SUMS"
fetch "$base/$name" "$tmp/$name"
# Only the line for our file, matched exactly (sha256sum -c would also take others).
awk -v f="$name" '$2 == f || $2 == "*" f' "$tmp/SHA256SUMS" >"$tmp/sum"
[ -s "$tmp/sum" ] || die "SHA256SUMS has no entry for $name"
(cd "$tmp" && sha256sum -c sum >/dev/null 2>&1) || die "checksum mismatch for $name: not installed"
chmod 0755 "$tmp/$name"
echo "install.sh: $name verified (sha256 $(cut -d' ' -f1 "$tmp/sum"))" >&2
if [ "$download_only" = 1 ]; then
    mv "$tmp/$name" "./$name"
    echo "./$name"
    exit 0
fi
mkdir -p "$dir"
"$tmp/$name" install --dir "$dir"
