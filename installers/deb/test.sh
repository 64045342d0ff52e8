#!/usr/bin/env bash
# Builds the picket-agent and picket-server Debian packages and tests them for
# real on this machine: package metadata and contents, lintian, dpkg -i, the
# installed binaries run as the service user, user and file modes, the units
# (systemd-analyze verify / security), upgrade, remove, purge.
#
# Needs root (dpkg -i, useradd). Safe to re-run: any installed picket package
# is purged first. Installs what it needs: cargo-deb (crates.io), lintian
# (apt). Reuses CARGO_TARGET_DIR (default /var/tmp/picket-target).
# Usage: installers/deb/test.sh [--no-build]   (--no-build: package the
# release binaries already built, e.g. on a re-run)
#
# What stands in for an enrolled agent's keys: files written as the service
# user into /var/lib/picket-agent (no server is contacted here); they must
# survive upgrade and remove, and be gone after purge.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/picket-target}"
out="$CARGO_TARGET_DIR/debian-test"
fails=0
checks=0

step() { printf '\n--> %s\n' "$*"; }
ok() { checks=$((checks + 1)); printf 'ok: %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf 'FAIL: %s\n' "$*" >&2; }
# check DESCRIPTION COMMAND...: runs the command, records ok or FAIL.
check() {
  local what="$1"
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
# mode_owner PATH: "0700 user:group"
mode_owner() { stat -c '%04a %U:%G' "$1"; }
is() { [ "$1" = "$2" ] || { echo "  expected '$2', got '$1'" >&2; return 1; }; }

if [ "$(id -u)" != 0 ]; then
  echo "installers/deb/test.sh needs root (it installs the packages with dpkg -i)" >&2
  exit 1
fi

purge_all() {
  dpkg -P picket-agent picket-server >/dev/null 2>&1 || true
}

step "tools: cargo-deb, lintian, systemd-analyze"
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
if ! command -v lintian >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian systemd adduser
fi
cargo deb --version

step "clean slate (purge any earlier install)"
purge_all
rm -rf "$out"
mkdir -p "$out"

step "build (release profile) and package"
if [ "${1:-}" = "--no-build" ]; then
  echo "--no-build: packaging the release binaries already in $CARGO_TARGET_DIR/release"
else
  cargo build --release -p picket-agent -p picket-server
fi
crate_version="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="picket-agent"))')"
# cargo-deb adds the Debian revision -1; the upgrade test uses revision 2.
version="${crate_version}-1"
version2="${crate_version}-2"
cargo deb -p picket-agent --no-build --output "$out/picket-agent_${version}_amd64.deb"
cargo deb -p picket-server --no-build --output "$out/picket-server_${version}_amd64.deb"
# A bumped version of the agent, for a real upgrade (same binary, new package version).
cargo deb -p picket-agent --no-build --deb-revision 2 --output "$out/picket-agent_${version2}_amd64.deb"
agent_deb="$out/picket-agent_${version}_amd64.deb"
agent_deb2="$out/picket-agent_${version2}_amd64.deb"
server_deb="$out/picket-server_${version}_amd64.deb"
ls -l "$out"

step "dpkg-deb --info / --contents"
dpkg-deb --info "$agent_deb"
dpkg-deb --contents "$agent_deb"
info="$(dpkg-deb --info "$agent_deb")"
contents="$(dpkg-deb --contents "$agent_deb")"
check "agent: Package/Version/Architecture" \
  grep -q "Package: picket-agent" <<<"$info"
check "agent: version $version" grep -q "Version: $version\$" <<<"$info"
check "agent: amd64" grep -q "Architecture: amd64" <<<"$info"
check "agent: depends on adduser" grep -q "Depends:.*adduser" <<<"$info"
for f in ./usr/bin/picket-agent ./etc/picket/agent.toml ./etc/picket/policy.toml \
  ./usr/lib/systemd/system/picket-agent.service ./usr/share/doc/picket-agent/copyright; do
  check "agent contains $f" grep -q " $f\$" <<<"$contents"
done
check "agent: binary mode 0755 root" grep -qE '^-rwxr-xr-x 0/0 .* ./usr/bin/picket-agent$' <<<"$contents"
conffiles="$(dpkg-deb --ctrl-tarfile "$agent_deb" | tar -xO ./conffiles)"
check "agent: /etc/picket/agent.toml is a conffile" grep -qx /etc/picket/agent.toml <<<"$conffiles"
check "agent: /etc/picket/policy.toml is a conffile" grep -qx /etc/picket/policy.toml <<<"$conffiles"
scontents="$(dpkg-deb --contents "$server_deb")"
for f in ./usr/bin/picket-server ./etc/picket/server.toml ./usr/lib/systemd/system/picket-server.service; do
  check "server contains $f" grep -q " $f\$" <<<"$scontents"
done
sconffiles="$(dpkg-deb --ctrl-tarfile "$server_deb" | tar -xO ./conffiles)"
check "server: /etc/picket/server.toml is a conffile" grep -qx /etc/picket/server.toml <<<"$sconffiles"

step "lintian (errors and warnings fail; each override is justified in installers/deb/lintian-overrides.*)"
for deb in "$agent_deb" "$server_deb"; do
  if lintian --fail-on error,warning --info --display-level '>=warning' "$deb"; then
    ok "lintian clean: $(basename "$deb")"
  else
    fail "lintian: $(basename "$deb")"
  fi
done

step "install the agent (dpkg -i)"
dpkg -i "$agent_deb"
check "installed version is $version" is "$(dpkg-query -W -f='${Version}' picket-agent)" "$version"
/usr/bin/picket-agent --version
check "picket-agent --version" is "$(/usr/bin/picket-agent --version)" "picket-agent $crate_version"
check "user picket-agent is a system user with no login shell" \
  is "$(getent passwd picket-agent | cut -d: -f6,7)" "/var/lib/picket-agent:/usr/sbin/nologin"
uid="$(id -u picket-agent)"
check "picket-agent uid $uid is a system uid (< 1000)" test "$uid" -lt 1000
check "/var/lib/picket-agent is 0700 picket-agent" \
  is "$(mode_owner /var/lib/picket-agent)" "0700 picket-agent:picket-agent"
check "/etc/picket/agent.toml is 0640 root:picket-agent" \
  is "$(mode_owner /etc/picket/agent.toml)" "0640 root:picket-agent"
check "/etc/picket/policy.toml is 0640 root:picket-agent" \
  is "$(mode_owner /etc/picket/policy.toml)" "0640 root:picket-agent"
check "/usr/bin/picket-agent is 0755 root:root" \
  is "$(mode_owner /usr/bin/picket-agent)" "0755 root:root"
echo "check-config as picket-agent:"
if runuser -u picket-agent -- /usr/bin/picket-agent --config /etc/picket/agent.toml check-config \
  >"$out/check-config.txt" 2>"$out/check-config.err"; then
  ok "check-config as the service user succeeds"
else
  fail "check-config as the service user"
  cat "$out/check-config.err" >&2
fi
cat "$out/check-config.txt"
check "check-config read the installed policy" \
  grep -q "policy file: /etc/picket/policy.toml (ok)" "$out/check-config.txt"
check "check-config sees the state dir, not enrolled" \
  grep -q "state_dir: /var/lib/picket-agent (not enrolled yet" "$out/check-config.txt"
# A broken policy is refused with the key named (on a copy: the conffile stays pristine).
bad="$(mktemp -d)"
chmod 0755 "$bad"
printf 'state_dir = "/var/lib/picket-agent"\npolicy_file = "%s/policy.toml"\n' "$bad" >"$bad/agent.toml"
printf 'max_jobs_per_hour = 0\n' >"$bad/policy.toml"
chmod 0644 "$bad"/*.toml
if runuser -u picket-agent -- /usr/bin/picket-agent --config "$bad/agent.toml" check-config \
  >/dev/null 2>"$out/bad.err"; then
  fail "check-config accepted max_jobs_per_hour = 0"
else
  check "check-config names the bad policy key" grep -q 'max_jobs_per_hour' "$out/bad.err"
fi
rm -rf "$bad"

unit=/usr/lib/systemd/system/picket-agent.service
check "systemd-analyze verify $unit" systemd-analyze verify "$unit"
security="$(systemd-analyze security --offline=true "$unit" 2>&1 | tail -n 1)"
echo "systemd-analyze security: $security"
score="$(sed -nE 's/.*exposure level for .*: ([0-9.]+) .*/\1/p' <<<"$security")"
check "agent unit exposure score $score <= 2.0" python3 -c "import sys; sys.exit(0 if float('${score:-99}') <= 2.0 else 1)"

step "upgrade keeps keys and configuration"
# Stand-ins for the keys an enrollment writes, made by the service user.
runuser -u picket-agent -- sh -c 'umask 077; echo key-material > /var/lib/picket-agent/ed25519.key; echo "{}" > /var/lib/picket-agent/enrollment.json'
sum_before="$(sha256sum /var/lib/picket-agent/ed25519.key)"
# An admin's edit of a conffile.
echo '# local edit kept across upgrades' >>/etc/picket/policy.toml
dpkg -i --force-confold "$agent_deb2"
check "upgraded to ${version2}" is "$(dpkg-query -W -f='${Version}' picket-agent)" "${version2}"
check "keys unchanged after upgrade" is "$(sha256sum /var/lib/picket-agent/ed25519.key)" "$sum_before"
check "state dir still 0700 picket-agent" is "$(mode_owner /var/lib/picket-agent)" "0700 picket-agent:picket-agent"
check "key file still 0600 picket-agent" is "$(mode_owner /var/lib/picket-agent/ed25519.key)" "0600 picket-agent:picket-agent"
check "local policy edit kept" grep -q 'local edit kept across upgrades' /etc/picket/policy.toml
# Reinstalling the same version must be just as harmless.
dpkg -i --force-confold "$agent_deb2"
check "keys unchanged after reinstall" is "$(sha256sum /var/lib/picket-agent/ed25519.key)" "$sum_before"

step "dpkg -r keeps state, configuration and user"
dpkg -r picket-agent
check "binary gone after remove" test ! -e /usr/bin/picket-agent
check "unit gone after remove" test ! -e "$unit"
check "keys kept after remove" is "$(sha256sum /var/lib/picket-agent/ed25519.key)" "$sum_before"
check "config kept after remove" test -e /etc/picket/agent.toml
check "user kept after remove" getent passwd picket-agent
# Reinstall over the removed package: the enrollment carries on.
dpkg -i "$agent_deb"
check "keys kept after reinstall over remove" is "$(sha256sum /var/lib/picket-agent/ed25519.key)" "$sum_before"
check "state dir 0700 after reinstall" is "$(mode_owner /var/lib/picket-agent)" "0700 picket-agent:picket-agent"

step "dpkg -P leaves nothing behind"
dpkg -P picket-agent
for p in /usr/bin/picket-agent "$unit" /var/lib/picket-agent /etc/picket/agent.toml \
  /etc/picket/policy.toml /usr/share/doc/picket-agent; do
  check "purged: $p" test ! -e "$p"
done
check "purged: no user picket-agent" sh -c '! getent passwd picket-agent'
check "purged: no group picket-agent" sh -c '! getent group picket-agent'
check "purged: dpkg forgets picket-agent" sh -c '! dpkg-query -W picket-agent 2>/dev/null'

step "install the server (dpkg -i)"
dpkg -i "$server_deb"
check "picket-server --version" is "$(/usr/bin/picket-server --version)" "picket-server $crate_version"
check "user picket is a system user with no login shell" \
  is "$(getent passwd picket | cut -d: -f6,7)" "/var/lib/picket:/usr/sbin/nologin"
check "/var/lib/picket is 0700 picket" is "$(mode_owner /var/lib/picket)" "0700 picket:picket"
check "/etc/picket/server.toml is 0640 root:picket" \
  is "$(mode_owner /etc/picket/server.toml)" "0640 root:picket"
sunit=/usr/lib/systemd/system/picket-server.service
check "systemd-analyze verify $sunit" systemd-analyze verify "$sunit"
ssecurity="$(systemd-analyze security --offline=true "$sunit" 2>&1 | tail -n 1)"
echo "systemd-analyze security: $ssecurity"
# gen-secret as root into the path the unit loads; purge must remove it.
sh -c 'umask 077; /usr/bin/picket-server gen-secret > /etc/picket/master.secret'
check "master.secret is 0600 root" is "$(mode_owner /etc/picket/master.secret)" "0600 root:root"
runuser -u picket -- sh -c 'echo db > /var/lib/picket/picket.db'
dpkg -r picket-server
check "server data kept after remove" test -e /var/lib/picket/picket.db
dpkg -P picket-server
for p in /usr/bin/picket-server "$sunit" /var/lib/picket /etc/picket/server.toml \
  /etc/picket/master.secret; do
  check "purged: $p" test ! -e "$p"
done
check "purged: no user picket" sh -c '! getent passwd picket'
check "purged: /etc/picket gone (both packages purged)" test ! -e /etc/picket

purge_all
printf '\n%d passed, %d failed\n' "$((checks - fails))" "$fails"
[ "$fails" = 0 ]
