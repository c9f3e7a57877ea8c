#!/usr/bin/env bash
# Check the monitoring kit offline; exits non-zero on the first failure.
# * Prometheus (Debian: apt-get install -y prometheus): the rules parse, their unit tests
#   pass, the example prometheus.yml is valid.
# * Alertmanager (Debian: apt-get install -y prometheus-alertmanager): alertmanager.yml is
#   valid, and every alert of the rules routes where it should: StressBreach and
#   StressRunFailed to the team channel only (the runner pages breaches and failed runs
#   itself), the other critical alerts to PagerDuty, warnings to the team channel.
set -euo pipefail
cd "$(dirname "$0")"

PROMTOOL="${PROMTOOL:-promtool}"
AMTOOL="${AMTOOL:-amtool}"
for tool in "$PROMTOOL:prometheus" "$AMTOOL:prometheus-alertmanager"; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        echo "deploy/check.sh: ${tool%%:*} not found (apt-get install -y ${tool#*:})" >&2
        exit 127
    fi
done

(cd prometheus \
    && "$PROMTOOL" check rules stress-runner.rules.yml \
    && "$PROMTOOL" test rules stress-runner.rules.test.yml \
    && "$PROMTOOL" check config prometheus.yml)

CONFIG=alertmanager/alertmanager.yml
"$AMTOOL" check-config "$CONFIG"

# route RECEIVER LABEL=VALUE...: the labels (an alert as the rules label it) reach exactly
# RECEIVER.
route() {
    local expected="$1"
    shift
    "$AMTOOL" config routes test --config.file="$CONFIG" --verify.receivers="$expected" \
        "$@" >/dev/null 2>&1 || {
        echo "deploy/check.sh: $* routes to $("$AMTOOL" config routes test \
            --config.file="$CONFIG" "$@" 2>/dev/null), not $expected" >&2
        exit 1
    }
}
S="service=stress-runner job=stress-runner instance=pod:8000"
route team-channel alertname=StressBreach severity=critical scenario=flash_crash_lite $S
route team-channel alertname=StressRunFailed severity=critical scenario=flash_crash_lite \
    reason=book_unavailable $S
route pagerduty alertname=StressRunnerDown severity=critical $S
route pagerduty alertname=StressRunnerAbsent severity=critical service=stress-runner \
    job=stress-runner
route pagerduty alertname=StressRunMissing severity=critical $S
route pagerduty alertname=StressAlertsStuckInOutbox severity=critical sink=pagerduty $S
route team-channel alertname=StressKillSwitchUnconfirmed severity=critical $S
route team-channel alertname=StressReplicasDegraded severity=warning $S
route pagerduty alertname=StressAlertsStuckInOutbox severity=critical sink=webhook $S
route team-channel alertname=StressScheduledRunMissed severity=warning reason=missed $S
route team-channel alertname=StressRuntimeOverBudget severity=warning $S
route team-channel alertname=StressTradingHalted severity=warning $S
route team-channel alertname=StressPluginErrors severity=warning plugin=webhook_sink $S
# what is not the stress runner's falls to the default receiver, never to its PagerDuty
route team-channel alertname=NodeDown severity=critical job=node
echo "deploy/check.sh: OK"
