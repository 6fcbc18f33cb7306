#!/bin/sh
# install.sh: install envelope-runner and envelope-agent from a GitHub release.
#
#   curl -fsSL https://github.com/envelope-runner/envelope-runner/releases/latest/download/install.sh | sh
#   curl -fsSL …/install.sh | sh -s -- 0.2.0 --dir /usr/local/bin
#   sh install.sh [VERSION] [--dir DIR] [--print-version]
#
# VERSION is `0.2.0`, `v0.2.0` or `latest` (the default; also ENVELOPE_RUNNER_VERSION).
# `latest` is the tag that `<repository>/releases/latest` redirects to: the newest release
# that is not a pre-release.
#
# What it does: picks the archive for this machine (`uname -s` must say Linux, `uname -m`
# x86_64/amd64 or aarch64/arm64), downloads
# `$ENVELOPE_RUNNER_DOWNLOAD_URL/v<version>/envelope-runner-<version>-<target>.tar.gz` and its
# `.sha256`, checks the SHA-256 (sha256sum or shasum), checks that the binary starts here,
# then puts envelope-runner and envelope-agent into the install directory: --dir, else
# ENVELOPE_RUNNER_INSTALL_DIR, else /usr/local/bin as root and ~/.local/bin otherwise.
#
# Cache: a verified archive is kept with its checksum in
# ${ENVELOPE_RUNNER_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/envelope-runner}/<version>/.
# Installing the same version again checks the cached archive against that checksum and uses
# it without downloading anything (a damaged one is downloaded again).
#
# Environment:
#   ENVELOPE_RUNNER_VERSION       the release to install when no VERSION argument is given
#   ENVELOPE_RUNNER_INSTALL_DIR   where the binaries go when --dir is not given
#   ENVELOPE_RUNNER_CACHE_DIR     where verified archives are kept
#   ENVELOPE_RUNNER_DOWNLOAD_URL  where release assets are downloaded from, laid out like
#                                 GitHub's (default
#                                 https://github.com/envelope-runner/envelope-runner/releases/download);
#                                 `latest` asks the `latest` address next to it.
#
# --print-version prints the version that would be installed (resolving `latest`) and stops.
#
# Exit codes: 0 installed; 1 a download failed or a needed tool is missing; 2 invalid
# argument or unsupported machine; 3 checksum mismatch (nothing was installed); 4 the
# release's binary does not start on this machine (nothing was installed).
set -eu

DEFAULT_DOWNLOAD_URL=https://github.com/envelope-runner/envelope-runner/releases/download
# The glibc the release binaries are built against (.github/workflows/release.yml).
GLIBC_MINIMUM=2.28

say() {
	printf 'envelope-runner install: %s\n' "$*" >&2
}

fail() {
	code=$1
	shift
	say "error: $*"
	exit "$code"
}

usage() {
	fail 2 "$1 (usage: install.sh [VERSION] [--dir DIR] [--print-version])"
}

# The Rust target triple of this machine's archive.
detect_target() {
	os=$(uname -s)
	arch=$(uname -m)
	case "$os" in
	Linux) ;;
	*) fail 2 "no release build for $os: build from source with \`cargo install --locked --git https://github.com/envelope-runner/envelope-runner envelope-runner\`" ;;
	esac
	case "$arch" in
	x86_64 | amd64) arch=x86_64 ;;
	aarch64 | arm64) arch=aarch64 ;;
	*) fail 2 "no release build for $arch Linux (there are x86_64 and aarch64 builds): build from source with \`cargo install --locked --git https://github.com/envelope-runner/envelope-runner envelope-runner\`" ;;
	esac
	echo "$arch-unknown-linux-gnu"
}

# download URL FILE [HINT]: fetch URL into FILE (curl, else wget); HINT ends the message of
# a failed download.
download() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL --retry 3 -o "$2" "$1" || fail 1 "downloading $1 failed (curl exit $?)${3:-}"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O "$2" "$1" || fail 1 "downloading $1 failed (wget exit $?)${3:-}"
	else
		fail 1 "neither curl nor wget is installed: install one of them"
	fi
}

# The address URL redirects to, following every redirect.
redirect_target() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL --retry 3 -o /dev/null -w '%{url_effective}' "$1" ||
			fail 1 "asking $1 for the latest release failed (curl exit $?): give a version instead"
	elif command -v wget >/dev/null 2>&1; then
		headers=$(wget -S -O /dev/null "$1" 2>&1) ||
			fail 1 "asking $1 for the latest release failed (wget exit $?): give a version instead"
		printf '%s\n' "$headers" | sed -n 's/^ *[Ll]ocation: *//p' | tail -n 1 | tr -d '\r'
	else
		fail 1 "neither curl nor wget is installed: install one of them"
	fi
}

# The SHA-256 of FILE in hex.
sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d ' ' -f 1
	else
		fail 1 "neither sha256sum nor shasum is installed: install coreutils or perl's shasum"
	fi
}

# The checksum a `.sha256` file holds (`<hex>  <file name>`, as sha256sum writes it).
expected_sha256() {
	sum=$(cut -d ' ' -f 1 <"$1" | head -n 1)
	case "$sum" in
	*[!0-9a-f]* | "") fail 1 "$2 does not hold a SHA-256 checksum" ;;
	esac
	[ ${#sum} -eq 64 ] || fail 1 "$2 does not hold a SHA-256 checksum"
	echo "$sum"
}

# `0.2.0`, `v0.2.0` → `0.2.0`; `latest` → the tag the latest address redirects to.
resolve_version() {
	case "$1" in
	latest)
		latest_url="${download_url%/download}/latest"
		target_url=$(redirect_target "$latest_url")
		tag=${target_url##*/}
		case "$target_url" in
		*/tag/v*) ;;
		*) fail 1 "$latest_url did not lead to a release tag (it led to '$target_url'): give a version instead" ;;
		esac
		version=${tag#v}
		;;
	*) version=${1#v} ;;
	esac
	case "$version" in
	[0-9]*) ;;
	*) fail 2 "'$1' is not a version (expected 0.2.0, v0.2.0 or latest)" ;;
	esac
	case "$version" in
	*[!0-9A-Za-z.+-]*) fail 2 "'$1' is not a version (expected 0.2.0, v0.2.0 or latest)" ;;
	esac
	echo "$version"
}

# Everything runs from here, on the script's last line: a download cut short (`curl … | sh`)
# runs nothing.
main() {
	requested_version=${ENVELOPE_RUNNER_VERSION:-latest}
	install_dir=${ENVELOPE_RUNNER_INSTALL_DIR:-}
	print_version=false
	while [ $# -gt 0 ]; do
		case "$1" in
		--dir)
			[ $# -ge 2 ] || usage "--dir needs a directory"
			install_dir=$2
			shift 2
			;;
		--dir=*)
			install_dir=${1#--dir=}
			shift
			;;
		--print-version)
			print_version=true
			shift
			;;
		-h | --help)
			echo "usage: install.sh [VERSION] [--dir DIR] [--print-version]"
			echo "installs envelope-runner and envelope-agent; VERSION is 0.2.0, v0.2.0 or latest (default)"
			exit 0
			;;
		-*) usage "unknown option $1" ;;
		*)
			requested_version=$1
			shift
			;;
		esac
	done

	download_url=${ENVELOPE_RUNNER_DOWNLOAD_URL:-$DEFAULT_DOWNLOAD_URL}
	download_url=${download_url%/}
	version=$(resolve_version "$requested_version")
	if [ "$print_version" = true ]; then
		echo "$version"
		exit 0
	fi

	target=$(detect_target)
	if [ -z "$install_dir" ]; then
		if [ "$(id -u)" -eq 0 ]; then
			install_dir=/usr/local/bin
		else
			[ -n "${HOME:-}" ] || fail 2 "HOME is not set: give an install directory with --dir"
			install_dir=$HOME/.local/bin
		fi
	fi
	if [ -n "${ENVELOPE_RUNNER_CACHE_DIR:-}" ]; then
		cache_root=$ENVELOPE_RUNNER_CACHE_DIR
	else
		[ -n "${XDG_CACHE_HOME:-}${HOME:-}" ] || fail 2 "HOME is not set: set ENVELOPE_RUNNER_CACHE_DIR"
		cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/envelope-runner
	fi

	name=envelope-runner-$version-$target
	archive=$name.tar.gz
	cache_dir=$cache_root/$version
	cached=$cache_dir/$archive
	work=$(mktemp -d "${TMPDIR:-/tmp}/envelope-runner-install.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	trap 'exit 130' INT TERM

	# A cached archive is used only while it still matches the checksum it was verified against.
	if [ -f "$cached" ] && [ -f "$cached.sha256" ]; then
		if [ "$(sha256_of "$cached")" = "$(expected_sha256 "$cached.sha256" "$cached.sha256")" ]; then
			say "using the verified archive cached in $cache_dir"
		else
			say "the cached $archive no longer matches its checksum: downloading it again"
			rm -f "$cached" "$cached.sha256"
		fi
	fi
	if [ ! -f "$cached" ] || [ ! -f "$cached.sha256" ]; then
		url=$download_url/v$version/$archive
		say "downloading $url"
		download "$url.sha256" "$work/$archive.sha256" \
			": does release v$version exist, with an archive for $target? See ${download_url%/download}"
		download "$url" "$work/$archive"
		expected=$(expected_sha256 "$work/$archive.sha256" "$url.sha256")
		actual=$(sha256_of "$work/$archive")
		if [ "$actual" != "$expected" ]; then
			fail 3 "checksum mismatch for $url: expected $expected (from $archive.sha256), got $actual. The download is damaged or was tampered with; nothing was installed"
		fi
		mkdir -p "$cache_dir" || fail 1 "cannot create the cache directory $cache_dir"
		mv -f "$work/$archive.sha256" "$cached.sha256.partial"
		mv -f "$work/$archive" "$cached.partial"
		mv -f "$cached.partial" "$cached"
		mv -f "$cached.sha256.partial" "$cached.sha256"
	fi

	mkdir "$work/unpacked"
	tar -xzf "$cached" -C "$work/unpacked" || fail 1 "unpacking $cached failed"
	unpacked=$work/unpacked/$name
	for binary in envelope-runner envelope-agent; do
		[ -f "$unpacked/$binary" ] || fail 1 "$archive has no $name/$binary"
	done
	# Checked before anything is installed: an old C library would otherwise leave a binary
	# that does not start.
	if ! started=$("$unpacked/envelope-runner" --version 2>&1); then
		fail 4 "the release's envelope-runner does not start on this machine (it needs glibc $GLIBC_MINIMUM or newer; \`ldd --version\` shows this machine's): $started"
	fi

	mkdir -p "$install_dir" || fail 1 "cannot create $install_dir: choose another with --dir"
	for binary in envelope-runner envelope-agent; do
		# A rename, so a running copy keeps its file and nothing sees a half-written one.
		cp "$unpacked/$binary" "$install_dir/.$binary.installing" ||
			fail 1 "cannot write to $install_dir: choose another with --dir (or run as root)"
		chmod 755 "$install_dir/.$binary.installing"
		mv -f "$install_dir/.$binary.installing" "$install_dir/$binary"
	done
	say "installed $started (and envelope-agent) for $target in $install_dir"
	case ":${PATH:-}:" in
	*":$install_dir:"*) ;;
	*) say "note: $install_dir is not on PATH; add it (for example in ~/.profile: export PATH=\"$install_dir:\$PATH\")" ;;
	esac
}

main "$@"
