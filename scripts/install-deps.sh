#!/usr/bin/env bash
# Installs the Debian 12 packages kvmesh builds with. Idempotent: does nothing when all are there.
set -euo pipefail
packages=(
  g++ cmake ninja-build pkg-config ccache
  libcaf-dev librocksdb-dev libprotobuf-dev protobuf-compiler libyaml-cpp-dev libspdlog-dev
  libre2-dev libcli11-dev libgtest-dev libgmock-dev nlohmann-json3-dev libssl-dev libxxhash-dev
  libcpp-httplib-dev
  strace iproute2
  # kvmesh-bench's redis target (Redis measured in the same run); its test needs the server.
  libhiredis-dev redis-server
  # The metrics test parses Node::metrics with the reference Prometheus text parser.
  python3-prometheus-client
  # The web console's test drives it in headless Chromium through Selenium.
  chromium chromium-driver python3-selenium
  # The Debian package (cpack -G DEB): dpkg-shlibdeps computes its dependencies, and CPack uses
  # file to find the binaries to give it.
  dpkg-dev file
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
