#!/usr/bin/env bash
# Checks the Bazel build (BUILD, WORKSPACE, .bazelrc) with Debian's bazel-bootstrap 4.2.3, offline:
#   1. installs bazel-bootstrap and bazel-bootstrap-source (stand-in @rules_cc/@rules_java, see WORKSPACE)
#      with apt-get when missing;
#   2. `bazel query //...`: BUILD loads and every label resolves;
#   3. `bazel test` of the fast targets, size small (BAZEL_CHECK_TESTS=all: every non-manual target;
#      =none: query only). Extra arguments go to `bazel test`, e.g. --test_tag_filters=-tfio.
# Exits non-zero on any failure. Bazel's output base stays in ~/.cache/bazel (Bazel's default), not the repo.
# Usage: bash tools/bazel_check.sh [bazel test options]     (from anywhere; runs from the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

missing=()
command -v bazel >/dev/null || missing+=(bazel-bootstrap)
[ -f /usr/src/bazel-bootstrap/mock_repos/rules_cc/cc/defs.bzl ] || missing+=(bazel-bootstrap-source)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "bazel_check: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Third-party packages come from the first python3 on PATH (Bazel's autodetected toolchain, see BUILD).
if ! python3 -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ['pytest', 'tensorflow'])))"
then
  echo "bazel_check: $(command -v python3) has no pytest or tensorflow: run 'bash tools/install.sh'" >&2
  exit 1
fi

echo "== bazel query //..."
targets=$(bazel query //... 2>/dev/null) || { bazel query //... >/dev/null; exit 1; }  # 2nd run shows the error
echo "$(wc -l <<<"$targets") targets"

mode="${BAZEL_CHECK_TESTS:-fast}"
case "$mode" in
  none) ;;
  fast) echo "== bazel test //... (size small)"
        bazel test //... --test_size_filters=small "$@" ;;
  all)  echo "== bazel test //... (every non-manual target)"
        bazel test //... "$@" ;;
  *)    echo "bazel_check: BAZEL_CHECK_TESTS must be fast, all or none, not '$mode'" >&2; exit 2 ;;
esac
echo "bazel_check: OK in $(( $(date +%s) - start )) s"
