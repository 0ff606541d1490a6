#!/usr/bin/env bash
# The Debian package as an administrator meets it (ctest label "package", tests/CMakeLists.txt):
#   package_test.sh build    WORK BUILD_DIR CPACK         cpack -G DEB once (the ctest fixture)
#   package_test.sh contents WORK VERSION LIBDIR          files, control fields, dependencies,
#                                                         conffiles, maintainer scripts, the unit
#   package_test.sh run      WORK VERSION SOURCE_DIR      the packaged kvmeshd, extracted into a
#                                                         temporary root, serves the packaged kvmesh
# Exit 77 (ctest: skipped) where the Debian tools are missing. Every wait is bounded.
set -euo pipefail

mode=$1
work=$2
deb_dir="$work/deb"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
skip() {
  echo "SKIPPED: $*"
  exit 77
}
need() {
  command -v "$1" >/dev/null || skip "$1 is not installed ($2; scripts/install-deps.sh installs it)"
}

need dpkg-deb "package dpkg"

the_deb() {
  local debs=("$deb_dir"/kvmesh_*.deb)
  [ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] ||
    fail "expected one kvmesh_*.deb in $deb_dir (from PackageTest.BuildsDeb), found: ${debs[*]}"
  echo "${debs[0]}"
}

case "$mode" in
build)
  build_dir=$3
  cpack=$4
  need dpkg-shlibdeps "package dpkg-dev"
  rm -rf "$work"
  mkdir -p "$work"
  "$cpack" -G DEB --config "$build_dir/CPackConfig.cmake" -B "$deb_dir" >"$work/cpack.log" 2>&1 ||
    fail "cpack -G DEB failed:
$(cat "$work/cpack.log")"
  deb=$(the_deb)
  echo "built $deb ($(stat -c %s "$deb") bytes)"
  ;;

contents)
  version=$3
  libdir=$4
  deb=$(the_deb)
  field() { dpkg-deb -f "$deb" "$1"; }
  [ "$(field Package)" = kvmesh ] || fail "Package is '$(field Package)', not kvmesh"
  [ "$(field Version)" = "$version" ] ||
    fail "Version is '$(field Version)', not the project version $version"
  if command -v dpkg >/dev/null; then
    arch=$(dpkg --print-architecture)
    [ "$(field Architecture)" = "$arch" ] || fail "Architecture is '$(field Architecture)', not $arch"
  fi

  # Files: what an administrator and a library user look for, and nothing else.
  dpkg-deb -c "$deb" >"$work/files.txt"
  paths=$(awk '{print $6}' "$work/files.txt")
  for expected in ./usr/bin/kvmeshd ./usr/bin/kvmesh ./usr/bin/kvmesh-cluster \
    "./usr/$libdir/libkvmesh-client.so.$version" "./usr/$libdir/libkvmesh-embedded.so.$version" \
    ./usr/include/kvmesh/client.hpp ./usr/include/kvmesh/node.hpp \
    "./usr/$libdir/cmake/kvmesh/kvmeshConfig.cmake" "./usr/$libdir/pkgconfig/kvmesh-client.pc" \
    ./lib/systemd/system/kvmeshd.service ./etc/kvmesh/kvmeshd.yaml ./etc/kvmesh/databases.d/ \
    ./usr/share/kvmesh/examples/databases.d/example.yaml; do
    grep -qxF -- "$expected" <<<"$paths" || fail "the package has no $expected; it has:
$paths"
  done
  while read -r path; do
    case "$path" in
    ./ | ./etc/ | ./etc/kvmesh/* | ./lib/ | ./lib/systemd/ | ./lib/systemd/system/ | \
      ./lib/systemd/system/kvmeshd.service | ./usr/ | ./usr/bin/* | ./usr/include/* | \
      "./usr/$libdir/"* | ./usr/share/* | ./usr/lib/) ;;
    *) fail "unexpected path in the package: $path" ;;
    esac
  done <<<"$paths"
  if awk '$2 != "root/root" {found=1} END {exit !found}' "$work/files.txt"; then
    fail "files not owned by root/root:
$(awk '$2 != "root/root"' "$work/files.txt")"
  fi

  # Control files: the conffile, the ldconfig trigger, maintainer scripts that parse.
  ctrl="$work/control"
  rm -rf "$ctrl"
  dpkg-deb -e "$deb" "$ctrl"
  while read -r path; do
    grep -qxF "${path#.}" "$ctrl/conffiles" ||
      fail "${path#.} is not a conffile: an upgrade would overwrite the administrator's changes"
  done < <(grep -E '^\./etc/.*[^/]$' <<<"$paths")
  grep -qx "activate-noawait ldconfig" "$ctrl/triggers" || fail "no ldconfig trigger for the libraries"
  for script in postinst prerm postrm; do
    [ -x "$ctrl/$script" ] || fail "maintainer script $script is missing or not executable"
    head -1 "$ctrl/$script" | grep -qx '#!/bin/sh' || fail "$script does not start with #!/bin/sh"
    sh -n "$ctrl/$script" || fail "$script is not valid sh"
  done
  grep -q 'adduser .*--system.* kvmesh' "$ctrl/postinst" || fail "postinst does not create the kvmesh system user"
  grep -q 'chown kvmesh:kvmesh /var/lib/kvmesh' "$ctrl/postinst" &&
    grep -q 'chmod 0750 /var/lib/kvmesh' "$ctrl/postinst" ||
    fail "postinst does not give /var/lib/kvmesh to kvmesh with mode 0750"

  # Dependencies: every library any packaged binary or library loads comes from a Debian package
  # that Depends names (else `apt install ./kvmesh_*.deb` on a fresh machine leaves it missing).
  root="$work/root"
  rm -rf "$root"
  dpkg-deb -x "$deb" "$root"
  depends=$(field Depends)
  grep -qw adduser <<<"$depends" || fail "Depends lacks adduser (postinst uses it): $depends"
  grep -qw procps <<<"$depends" || fail "Depends lacks procps (/bin/kill, the unit's reload): $depends"
  # Package names only: "a (>= 1), b | c" gives a, b and c, one a line.
  depends_names=$(tr ',|' '\n\n' <<<"$depends" | sed -E 's/\(.*\)//; s/^ +//; s/ +$//')
  declare -A owner_of=()
  for elf in "$root"/usr/bin/* "$root/usr/$libdir"/libkvmesh-*.so.*.*.*; do
    if readelf -d "$elf" | grep -qE 'RPATH|RUNPATH'; then
      fail "$(basename "$elf") carries a run path: $(readelf -d "$elf" | grep -E 'RPATH|RUNPATH')"
    fi
    ldd_out=$(ldd "$elf")
    if grep -q "not found" <<<"$ldd_out"; then
      fail "$(basename "$elf") needs libraries this machine lacks:
$ldd_out"
    fi
    # The libraries it names itself (the ones they load come with their own packages).
    for needed in $(readelf -d "$elf" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p'); do
      lib=$(awk -v n="$needed" '$1 == n && $2 == "=>" {print $3}' <<<"$ldd_out")
      [ -n "$lib" ] || continue # the dynamic loader itself
      [ -n "${owner_of[$lib]:-}" ] && continue
      command -v dpkg >/dev/null || skip "dpkg is not installed: cannot tell which package holds $lib"
      real=$(realpath "$lib")
      owner=""
      for candidate in "$lib" "/usr$lib" "${lib#/usr}" "$real" "/usr$real" "${real#/usr}"; do
        owner=$(dpkg -S "$candidate" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$owner" ] && break
      done
      [ -n "$owner" ] || fail "$(basename "$elf") loads $lib, which no Debian package installed"
      owner_of[$lib]=$owner
      # Depends may name the package or a virtual package it provides (libspdlog1.10-fmt9).
      provides=$(dpkg-query -W -f='${Provides}' "$owner" 2>/dev/null | tr ',' '\n' |
        sed -E 's/\(.*\)//; s/^ +//; s/ +$//')
      printf '%s\n%s\n' "$owner" "$provides" | grep -v '^$' | grep -qxFf - <(echo "$depends_names") ||
        fail "$(basename "$elf") loads $lib from package $owner, which Depends does not name: $depends"
    done
  done
  echo "Depends covers the ${#owner_of[@]} libraries the binaries and libraries name: $depends"

  # The unit: what the README promises, and what systemd makes of it.
  unit="$root/lib/systemd/system/kvmeshd.service"
  for line in 'User=kvmesh' 'Group=kvmesh' 'ExecStart=/usr/bin/kvmeshd --config /etc/kvmesh/kvmeshd.yaml' \
    'Restart=on-failure' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
    'ReadWritePaths=/var/lib/kvmesh' 'PrivateTmp=yes' 'WorkingDirectory=/var/lib/kvmesh' \
    'WantedBy=multi-user.target'; do
    grep -qxF "$line" "$unit" || fail "kvmeshd.service lacks '$line'"
  done
  nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
  # Two ports of max_connections (default 10000) each, plus RocksDB's files.
  [ -n "$nofile" ] && [ "$nofile" -ge 21000 ] ||
    fail "LimitNOFILE=$nofile is below two ports of 10000 connections plus RocksDB's files"
  if command -v systemd-analyze >/dev/null; then
    # verify checks that ExecStart's binary exists: point it at the extracted one.
    mkdir -p "$work/unit"
    sed "s|/usr/bin/kvmeshd|$root/usr/bin/kvmeshd|" "$unit" >"$work/unit/kvmeshd.service"
    out=$(systemd-analyze verify "$work/unit/kvmeshd.service" 2>&1) ||
      fail "systemd-analyze verify failed: $out"
    # Unknown or misspelt settings are only warnings: any output fails the test.
    [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
    echo "systemd-analyze verify: kvmeshd.service is clean"
  else
    echo "systemd-analyze is not installed: the unit was not verified by systemd (skipped that part)"
  fi

  # The settings the default kvmeshd.yaml documents in comments are ones kvmeshd knows: a file
  # with an unknown setting makes kvmeshd print the known ones (and exit 2 without starting).
  printf 'no_such_setting: 1\n' >"$work/unknown.yaml"
  known=$("$root/usr/bin/kvmeshd" --config "$work/unknown.yaml" 2>&1 || true)
  grep -q "unknown setting (known: " <<<"$known" || fail "kvmeshd did not list its settings: $known"
  known_names=$(sed -E 's/.*\(known: ([^)]*)\).*/\1/' <<<"$known" | tr -d ' ' | tr ',' '\n')
  # Setting lines: "name: value" or "# name: value".
  for setting in $(sed -nE 's/^(# )?([a-z_]+):( .*)?$/\2/p' "$root/etc/kvmesh/kvmeshd.yaml"); do
    grep -qxF "$setting" <<<"$known_names" ||
      fail "kvmeshd.yaml documents '$setting', which kvmeshd does not know ($known)"
  done
  echo "package contents OK: $(wc -l <"$work/files.txt") entries, $(stat -c %s "$deb") bytes"
  ;;

run)
  version=$3
  source_dir=$4
  deb=$(the_deb)
  run="$work/run"
  rm -rf "$run"
  mkdir -p "$run/root" "$run/databases.d"
  root="$run/root"
  dpkg-deb -x "$deb" "$root"

  # --version: the package's version, and the commit the binaries were built from.
  commit=""
  if command -v git >/dev/null; then
    commit=$(git -C "$source_dir" rev-parse --short=12 HEAD 2>/dev/null || true)
  fi
  for tool in kvmeshd kvmesh kvmesh-cluster; do
    line=$("$root/usr/bin/$tool" --version)
    [[ "$line" == "$tool $version"* ]] || fail "$tool --version printed '$line', not '$tool $version ...'"
    # A commit of this repository (the build's; HEAD may have moved on since the last build).
    if [ -n "$commit" ]; then
      printed=$(sed -n 's/.*(commit \([0-9a-f]\{12\}\)\(-dirty\)\{0,1\}).*/\1/p' <<<"$line")
      [ -n "$printed" ] || fail "$tool --version printed '$line', without '(commit <12 hex digits>)'"
      git -C "$source_dir" cat-file -e "$printed^{commit}" 2>/dev/null ||
        fail "$tool --version printed '$line': $printed is no commit of $source_dir"
    fi
  done
  echo "--version: $("$root/usr/bin/kvmeshd" --version)"

  # The packaged settings with the paths of this run, and the packaged example database.
  sed -e "s|^data_dir: /var/lib/kvmesh|data_dir: $run/data|" \
    -e "s|^config_dir: /etc/kvmesh/databases.d|config_dir: $run/databases.d|" \
    -e "s|^port: 7370|port: 0|" "$root/etc/kvmesh/kvmeshd.yaml" >"$run/kvmeshd.yaml"
  for line in "data_dir: $run/data" "config_dir: $run/databases.d" "port: 0" "listen: 127.0.0.1"; do
    grep -q "^$line" "$run/kvmeshd.yaml" ||
      fail "the packaged kvmeshd.yaml has no '${line%%:*}' line to adjust (or a changed default):
$(cat "$root/etc/kvmesh/kvmeshd.yaml")"
  done
  cp "$root/usr/share/kvmesh/examples/databases.d/example.yaml" "$run/databases.d/"

  "$root/usr/bin/kvmeshd" --config "$run/kvmeshd.yaml" >"$run/stdout" 2>"$run/stderr" &
  pid=$!
  trap 'kill -KILL $pid 2>/dev/null || true' EXIT
  port=""
  for _ in $(seq 300); do # at most 30 s
    port=$(sed -nE 's/.* listening on 127\.0\.0\.1:([0-9]+) .*/\1/p' "$run/stdout")
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || fail "the packaged kvmeshd exited at start:
$(cat "$run/stdout" "$run/stderr")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "no start line from the packaged kvmeshd within 30 s:
$(cat "$run/stdout" "$run/stderr")"
  echo "started: $(head -1 "$run/stdout")"

  cli=("$root/usr/bin/kvmesh" --node "127.0.0.1:$port" --timeout 10)
  value="from-the-package-$$"
  "${cli[@]}" put /example/kv /package/test "$value" || fail "kvmesh put failed"
  got=$("${cli[@]}" get /example/kv /package/test) || fail "kvmesh get failed"
  [ "$got" = "$value" ] || fail "kvmesh get returned '$got', not '$value'"
  echo "kvmesh put/get through the packaged node: OK"

  kill -TERM $pid
  for _ in $(seq 300); do # at most 30 s
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  kill -0 $pid 2>/dev/null && fail "the packaged kvmeshd did not stop within 30 s of SIGTERM"
  rc=0
  wait $pid || rc=$?
  trap - EXIT
  [ $rc -eq 0 ] || fail "the packaged kvmeshd exited $rc after SIGTERM:
$(cat "$run/stderr")"
  grep -q "stopped" "$run/stdout" || fail "no stop line: $(cat "$run/stdout")"
  echo "stopped cleanly"
  ;;

*)
  fail "unknown mode '$mode' (build, contents or run)"
  ;;
esac
