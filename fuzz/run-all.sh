#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, two at a time, growing the corpus in
# fuzz/corpus/<target>. Needs cargo-fuzz; RUSTC_BOOTSTRAP lets the stable toolchain take the
# sanitizer flags. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
run() { cargo fuzz run -O "$1" "corpus/$1" -- -max_total_time="$secs" -rss_limit_mb=4096 > "target/fuzz-$1.log" 2>&1; echo "$1: exit $?"; }
mkdir -p target
run datagram & run frames & wait
run query & run update & wait
