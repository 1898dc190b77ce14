#!/usr/bin/env bash
# Builds and runs the libFuzzer target for the HTTP layer. Not part of CI: a full run
# takes minutes. The HTTP sources are compiled directly with the fuzz main, so this needs
# only swiftc, not SwiftPM or the rest of module Balancer.
#
#   Fuzz/run.sh                 10 million runs (RUNS=), stop after MAX_TIME= seconds
#   Fuzz/run.sh crash-<sha>     replay one input
#
# Scratch files (binary, grown corpus, crash artifacts) go to WORK_DIR, outside the
# repository. Crashes are saved as WORK_DIR/artifacts/crash-*; add each as a regression
# test in Tests/BalancerTests once fixed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
runs="${RUNS:-10000000}"
max_time="${MAX_TIME:-1500}"
work="${WORK_DIR:-${TMPDIR:-/tmp}/balancerd-http-fuzz}"
swiftc="${SWIFTC:-swiftc}"
mkdir -p "$work/corpus" "$work/artifacts"

# lld: gold warns about every ASan symbol it cannot export.
"$swiftc" -sanitize=fuzzer,address -parse-as-library -O -module-name HTTPFuzz -use-ld=lld \
    "$here"/../Sources/Balancer/HTTP/*.swift "$here/HTTPParserFuzz/main.swift" \
    -o "$work/http-parser-fuzz"

# Swift's own crash backtracer would race libFuzzer's handler on a failed check, and its
# helper process outlives the fuzzer holding the log pipe open: leave crashes to libFuzzer.
export SWIFT_BACKTRACE=enable=no

if [ "$#" -gt 0 ]; then
    exec "$work/http-parser-fuzz" "$@"
fi

# New inputs go to the first directory, so the seed corpus stays as committed.
set +e
"$work/http-parser-fuzz" -runs="$runs" -max_len=4096 -max_total_time="$max_time" \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 -dict="$here/http.dict" \
    "$work/corpus" "$here/corpus" 2>&1 | tee "$work/last-run.log"
status=${PIPESTATUS[0]}
set -e
executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/last-run.log" | tail -1)
echo "executions: ${executed:-unknown}; exit status $status; log $work/last-run.log"
exit "$status"
