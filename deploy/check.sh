#!/usr/bin/env bash
# Check the Prometheus kit with promtool (Debian: apt-get install -y prometheus): the rules
# parse, their unit tests pass, and the example prometheus.yml is valid. Offline; exits
# non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/prometheus"

PROMTOOL="${PROMTOOL:-promtool}"
if ! command -v "$PROMTOOL" >/dev/null 2>&1; then
    echo "deploy/check.sh: promtool not found (apt-get install -y prometheus)" >&2
    exit 127
fi

"$PROMTOOL" check rules stress-runner.rules.yml
"$PROMTOOL" test rules stress-runner.rules.test.yml
"$PROMTOOL" check config prometheus.yml
echo "deploy/check.sh: OK"
