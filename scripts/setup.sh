#!/usr/bin/env bash
# Sets up everything the engine, its demo and its tests need on a fresh machine. Idempotent:
# a second run only checks. What it installs: a Python virtualenv (.venv) with the project and
# its test extras; the compiled build of the decoder and KPI core (kpi-engine native build);
# Java 17, Maven, Prometheus (promtool), Alertmanager (amtool), Chromium and a C compiler from
# Debian's packages when missing; the Apache Kafka jars from Maven Central into
# ~/.cache/kpi-engine (used by the local broker).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need root to install: ${missing[*]}"; return 1; }
    sudo="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "Python 3.11 or newer is required (found: $("$PYTHON" --version 2>&1))"; exit 1
fi

command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || apt_install prometheus
command -v amtool >/dev/null 2>&1 || apt_install prometheus-alertmanager
# Headless Chromium for the wallboard's browser tests.
{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
  || apt_install chromium chromium-driver

if [ ! -x .venv/bin/python ]; then
  say "creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import engine, faust, pytest, hypothesis' >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.kpi-installed ]; then
  say "installing the engine and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.kpi-installed
fi

# The compiled build of the decoder and KPI core (engine/native.py): a C compiler and Python's
# headers; without them the engine runs interpreted, about half as fast.
command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev || true
if ! .venv/bin/python -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  apt_install python3-dev || true
fi
say "compiling the decoder and KPI core with mypyc (skipped when current)"
.venv/bin/kpi-engine native build --if-possible >&2

say "fetching the Apache Kafka jars (cached after the first run)"
.venv/bin/kpi-engine kafka fetch >&2
say "ready"
