#!/usr/bin/env bash
# Command 2: set up and run the whole test suite (what .ci/run runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Tools the backup tests drive for real (issue #11): rclone (off-site copies), sshd (an SFTP remote on
# 127.0.0.1), age (opens our encrypted archives). Installed when missing and we may; otherwise the
# tests that need them skip and say why.
# The web page's tests (issue #21) drive Debian's headless chromium through chromium-driver.
if ! command -v rclone >/dev/null || ! command -v age >/dev/null || ! [ -x /usr/sbin/sshd ] \
        || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone openssh-server age \
            chromium chromium-driver) \
            >/dev/null || echo "test.sh: could not install rclone/openssh-server/age/chromium; their tests will skip" >&2
    else
        echo "test.sh: rclone, age or sshd missing and not root: the off-site/encryption interop tests will skip" >&2
    fi
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$code"
