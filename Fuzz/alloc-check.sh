#!/usr/bin/env bash
# Verifies that the HTTP layer does not allocate per request once warmed up (STYLE.md
# rule 4): builds AllocationCheck with the HTTP sources, preloads a malloc counter, and
# fails if a warmed-up exchange calls malloc. Not part of CI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK_DIR:-${TMPDIR:-/tmp}/balancerd-http-alloc}"
mkdir -p "$work"
"${CC:-clang}" -shared -fPIC -O2 "$here/AllocationCheck/count.c" -o "$work/libcount.so" -ldl
"${SWIFTC:-swiftc}" -O -module-name AllocationCheck \
    "$here"/../Sources/Balancer/HTTP/*.swift "$here/AllocationCheck/main.swift" -o "$work/alloc-check"
LD_PRELOAD="$work/libcount.so" "$work/alloc-check"
