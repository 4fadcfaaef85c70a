#!/usr/bin/env bash
# Record asv history points for the last N commits (default 2) with the current environment,
# then build the HTML site in .asv/html. Each commit is checked out in turn (the editable
# install then imports that commit's code); the original checkout is restored at the end.
#   FWBENCH_ASV_BACKENDS=numpy bash benchmarks/asv_history.sh 2
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2}
asv=${ASV:-.venv/bin/asv}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "asv_history: commit or stash your changes first (this script checks out older commits)" >&2
  exit 2
fi
start=$(git rev-parse --abbrev-ref HEAD)
[ "$start" = "HEAD" ] && start=$(git rev-parse HEAD)
trap 'git checkout -q "$start"' EXIT
"$asv" machine --yes >/dev/null
for commit in $(git rev-list --reverse -n "$n" HEAD); do
  git -c advice.detachedHead=false checkout -q "$commit"
  if [ ! -d benchmarks/asv_suite ]; then
    echo "asv_history: $commit has no asv benchmarks; skipped"
    continue
  fi
  "$asv" run --python=same --set-commit-hash "$commit" --show-stderr
done
"$asv" publish
echo "asv_history: open .asv/html/index.html (or: $asv preview)"
