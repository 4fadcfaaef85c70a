#!/usr/bin/env bash
# Install headless Chromium and its WebDriver for tests/test_report_browser.py (Debian/Ubuntu).
# Never fails the build: without a browser that test is skipped with its reason.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "install-browser: chromium and chromedriver already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no apt-get here; install chromium + chromedriver yourself (the browser test will be skipped)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install-browser: not root and no sudo; cannot install chromium (the browser test will be skipped)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >/dev/null && \
   $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
  echo "install-browser: installed $(chromium --version 2>/dev/null || echo chromium)"
else
  echo "install-browser: apt-get could not install chromium chromium-driver (offline?); the browser test will be skipped" >&2
fi
exit 0
