#!/usr/bin/env bash
# Runs every uno-cache check on a fresh machine: installs the test servers if missing
# (Debian/Ubuntu: redis-server, redis-tools, memcached, e2fsprogs, valgrind), then formatting, lints and all tests.
# Tests that need a server start their own on free loopback ports; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
# The disk tests mount a tmpfs and a loop-mounted ext4 image (CI runs as root).
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
# One test runs the CLI under valgrind, as users run their programs.
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        echo "installing test servers: ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "missing test servers (${missing[*]}) and no apt-get; install them and rerun" >&2
        exit 1
    fi
fi
# Debian starts the packaged servers as services; the tests use their own on other ports.

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings
# The API docs as docs.rs builds them (every feature): no link to a missing or private item.
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --all-features
# The default build is the embedded cache (no network stack, no CLI): lint it as users build it,
# check that each optional feature builds on its own, and that a configuration asking for a
# feature compiled out is refused by name.
echo "== cargo clippy --no-default-features"
cargo clippy --locked --no-default-features -- -D warnings
for feature in redb redis memcached cli tls metrics; do
    echo "== cargo check --features $feature"
    cargo check --locked --no-default-features --features "$feature"
done
echo "== cargo test --no-default-features (config_features)"
cargo test --locked --no-default-features --test config_features
echo "== cargo test"
# Every test binary runs even after one failed, so that a red run names every failure.
cargo test --locked --all-features --no-fail-fast
