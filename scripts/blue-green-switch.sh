#!/usr/bin/env bash
# scripts/blue-green-switch.sh — deploy a new version to the idle colour and roll it out.
#
# The seed's script, redone on bluegreen: instead of `sleep 60` between weights and a
# single `curl -f /health`, `bluegreen rollout start --wait` runs the preflight checklist,
# the expand/migrate migrations, smoke tests on the new colour (and on the live one with
# the new schema), then ramps 10 % -> 50 % -> 100 % (rollout.steps) while comparing the new
# colour with the live one, and falls back automatically when it fails.
#
# Usage: scripts/blue-green-switch.sh VERSION [extra `bluegreen rollout start` options]
#
# Environment:
#   DEPLOY_COMMAND         how to put VERSION on the idle colour's servers; it gets
#                          BLUEGREEN_VERSION and BLUEGREEN_TARGET (blue or green) in its
#                          environment, e.g. 'docker compose up -d app-$BLUEGREEN_TARGET'.
#                          Unset: nothing is deployed (the idle colour already runs VERSION).
#   BLUEGREEN_ADMIN_URL    admin API of any replica (default http://127.0.0.1:9900)
#   BLUEGREEN_ADMIN_TOKEN  its bearer token
#   BLUEGREEN              the bluegreen command (default: bluegreen)
#   ROLLOUT_TIMEOUT        give up waiting after this long, e.g. 45m (default: no limit)
#
# Exit status (passed through from `bluegreen rollout start --wait`):
#   0 promoted, 1 rolled back or aborted (or the deploy failed), 2 usage or configuration error.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    usage >&2
    [[ $# -lt 1 ]] && exit 2
    exit 0
fi

VERSION=$1
shift
BLUEGREEN=${BLUEGREEN:-bluegreen}

# The colour that is not live is the one the rollout ramps up: ask the admin API.
if ! weights=$($BLUEGREEN weights get --output json); then
    echo "blue-green-switch: cannot read the weights from the admin API" >&2
    exit 2
fi
read -r live green < <(python3 -c 'import json, sys; w = json.load(sys.stdin); print(w["live"], w["green"])' <<<"$weights")
case "$green" in
    0|0.0) target=green ;;
    100|100.0) target=blue ;;
    *) echo "blue-green-switch: weights are split (green $green %); finish or abort the current rollout first" >&2
       exit 2 ;;
esac
echo "Deploying $VERSION to $target (live: $live)..."

if [[ -n "${DEPLOY_COMMAND:-}" ]]; then
    if ! BLUEGREEN_VERSION=$VERSION BLUEGREEN_TARGET=$target bash -c "$DEPLOY_COMMAND"; then
        echo "blue-green-switch: the deploy command failed; no traffic was moved" >&2
        exit 1
    fi
else
    echo "(DEPLOY_COMMAND is not set: assuming $target already runs $VERSION)"
fi

echo "Rolling out $VERSION: preflight, migrations, smoke tests, 10 % -> 50 % -> 100 %..."
set +e
$BLUEGREEN rollout start "$VERSION" --wait ${ROLLOUT_TIMEOUT:+"$ROLLOUT_TIMEOUT"} "$@"
status=$?
set -e
case $status in
    0) echo "Blue-green deployment finished: $VERSION is live on $target." ;;
    1) echo "Blue-green deployment failed: traffic is back on $live (see above for why)." >&2 ;;
    *) echo "Blue-green deployment did not start (usage or configuration error)." >&2 ;;
esac
exit $status
