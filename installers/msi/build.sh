#!/usr/bin/env bash
# Builds picket-agent.msi on Linux and checks it:
#   1. cross-compiles the agent for x86_64-pc-windows-gnu (rustup target +
#      Debian's gcc-mingw-w64-x86-64 as the linker, its windmc/windres for the
#      Event Log message table), release profile;
#   2. writes Windows versions of the example agent.toml / policy.toml
#      (state and policy under C:\ProgramData\Picket);
#   3. builds the MSI from installers/msi/picket-agent.wxs with wixl (msitools);
#   4. checks the File, Component, ServiceInstall, ServiceControl, Registry
#      (the Event Log source), CustomAction, InstallExecuteSequence and Upgrade
#      tables with msiinfo;
#   5. under wine (Debian's 64-bit wine64; see docs/install.md for why not
#      wine32): `picket-agent.exe --version`, `check-config` on the Windows
#      configuration, a broken policy refused; with --wine-msi also the MSI
#      itself: `msiexec /i` (files, PrepareData, the service, the Event Log
#      registry key), the service's events reaching wine's ReportEventW
#      (WINEDEBUG=+eventlog), an upgrade and `msiexec /x` (not reliable under
#      wine 8 in a fresh prefix, so not in CI: see the end of this script).
# Prints `ok:` / `FAIL:` per check and `N passed, N failed` at the end.
# Output: $CARGO_TARGET_DIR/msi/picket-agent-<version>-x64.msi
# Installs what it needs when run as root (apt-get, rustup). Safe to re-run.
set -euo pipefail
# --wine-msi: also install, upgrade and uninstall the MSI under wine (see the end).
wine_msi=0
[ "${1:-}" = "--wine-msi" ] && wine_msi=1
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/picket-target}"
target=x86_64-pc-windows-gnu
out="$CARGO_TARGET_DIR/msi"
fails=0
checks=0
ok() { checks=$((checks + 1)); printf 'ok: %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf 'FAIL: %s\n' "$*" >&2; }
check() {
  local what="$1"
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
step() { printf '\n--> %s\n' "$*"; }

step "tools: rustup target $target, mingw-w64, wixl, msiinfo, wine64"
need=()
# gcc-mingw-w64-x86-64 brings binutils-mingw-w64-x86-64 (windmc, windres: the eventlog crate's build script).
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
command -v x86_64-w64-mingw32-windmc >/dev/null 2>&1 || need+=(binutils-mingw-w64-x86-64)
command -v wixl >/dev/null 2>&1 || need+=(wixl)
command -v msiinfo >/dev/null 2>&1 || need+=(msitools)
# wine64 only (no recommends: fonts, gstreamer...): it runs the 64-bit exe and
# msiexec; wine32 needs the i386 architecture (see docs/install.md).
command -v wine >/dev/null 2>&1 || need+=(wine wine64)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "missing ${need[*]}: install them (apt-get install --no-install-recommends ${need[*]})" >&2
    exit 1
  fi
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

step "cross-compile picket-agent for $target (release)"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
build_start=$SECONDS
cargo build --release --target "$target" -p picket-agent
echo "cross build: $((SECONDS - build_start)) s"
exe="$CARGO_TARGET_DIR/$target/release/picket-agent.exe"
check "built $exe" test -s "$exe"
version="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="picket-agent"))')"

step "Windows configuration examples"
rm -rf "$out"
mkdir -p "$out"
# The Linux defaults (/var/lib/picket-agent, /etc/picket/policy.toml) made Windows paths;
# literal TOML strings so the backslashes stay as they are.
sed -e "s|^state_dir = .*|state_dir = 'C:\\\\ProgramData\\\\Picket\\\\state'|" \
  -e "s|^# policy_file = .*|policy_file = 'C:\\\\ProgramData\\\\Picket\\\\policy.toml'|" \
  config-examples/agent.toml >"$out/agent.toml"
cp config-examples/policy.toml "$out/policy.toml"
grep -E "^(state_dir|policy_file) =" "$out/agent.toml"
check "Windows agent.toml: state_dir" grep -qxF "state_dir = 'C:\\ProgramData\\Picket\\state'" "$out/agent.toml"
check "Windows agent.toml: policy_file" grep -qxF "policy_file = 'C:\\ProgramData\\Picket\\policy.toml'" "$out/agent.toml"

step "wixl"
msi="$out/picket-agent-$version-x64.msi"
# wixl resolves Source= relative to the working directory and refuses absolute paths.
cp "$exe" "$out/picket-agent.exe"
wxs="$PWD/installers/msi/picket-agent.wxs"
(cd "$out" && wixl -a x64 -D Version="$version" -D Exe=picket-agent.exe -D AgentToml=agent.toml \
  -D PolicyToml=policy.toml -o "$msi" "$wxs")
ls -l "$msi"

step "msiinfo: tables"
table() { msiinfo export "$msi" "$1" | tail -n +4 | tr -d '\r'; }
for t in File Component ServiceInstall ServiceControl Registry CustomAction Upgrade; do
  echo "== $t"
  table "$t"
done
tab=$'\t'
check "File: picket-agent.exe in component AgentExe" \
  grep -q "^PicketAgentExe${tab}AgentExe${tab}picket-agent.exe${tab}$(stat -c %s "$exe")${tab}" <<<"$(table File)"
check "File: agent.toml.example" grep -q "${tab}agent.toml.example${tab}" <<<"$(table File)"
check "File: policy.toml.example" grep -q "${tab}policy.toml.example${tab}" <<<"$(table File)"
check "Component: AgentExe in INSTALLDIR, 64-bit, keyed on the exe" \
  grep -q "^AgentExe${tab}{9D3E2B8C-1A47-4C5E-8F60-7B2D4E1C9A05}${tab}INSTALLDIR${tab}256${tab}${tab}PicketAgentExe$" <<<"$(table Component)"
si="$(table ServiceInstall)"
# 16 own process, 2 auto start, 1 normal error control.
check "ServiceInstall: picket-agent, own process, auto start" \
  grep -q "^PicketAgentService${tab}picket-agent${tab}Picket agent${tab}16${tab}2${tab}1${tab}" <<<"$si"
check "ServiceInstall: runs as LocalService" grep -q "${tab}NT AUTHORITY\\\\LocalService${tab}" <<<"$si"
check "ServiceInstall: service run with the ProgramData config (logs to the Event Log, no log file)" \
  grep -qF -- "${tab}--config \"[CommonAppDataFolder]Picket\\agent.toml\" service run${tab}" <<<"$si"
sc="$(table ServiceControl)"
# 1 = start on install, not waited for (an agent not enrolled yet stops at once).
check "ServiceControl: start on install, no wait" \
  grep -q "^PicketAgentServiceStart${tab}picket-agent${tab}1${tab}${tab}0${tab}AgentExe$" <<<"$sc"
# 162 = stop on install (2) + stop on uninstall (32) + delete on uninstall (128), waited for.
check "ServiceControl: stop both, remove on uninstall, wait" \
  grep -q "^PicketAgentServiceControl${tab}picket-agent${tab}162${tab}${tab}1${tab}AgentExe$" <<<"$sc"
# Without the generated row id; root 2 = HKLM; all three rows in the exe's component, so they go with it.
reg="$(table Registry | cut -f2-)"
evkey='SYSTEM\CurrentControlSet\Services\EventLog\Application\Picket Agent'
check "Registry: Event Log source, EventMessageFile = the installed exe (its message table)" \
  grep -qxF "2${tab}${evkey}${tab}EventMessageFile${tab}[#PicketAgentExe]${tab}AgentExe" <<<"$reg"
check "Registry: TypesSupported = 7 (error, warning, information)" \
  grep -qxF "2${tab}${evkey}${tab}TypesSupported${tab}#7${tab}AgentExe" <<<"$reg"
check "Registry: the source key is deleted on uninstall (Name -)" \
  grep -qxF "2${tab}${evkey}${tab}-${tab}${tab}AgentExe" <<<"$reg"
check "Registry: nothing else" test "$(wc -l <<<"$reg")" = 3
ca="$(table CustomAction)"
# 3090 = exe from the installed file (18) + deferred (1024) + no impersonation (2048).
check "CustomAction: PrepareData deferred as SYSTEM" \
  grep -qF "PrepareData${tab}3090${tab}PicketAgentExe${tab}service prepare --data-dir \"[CommonAppDataFolder]Picket\"" <<<"$ca"
check "CustomAction: Enroll with SERVER_URL and ENROLL_TOKEN_FILE" \
  grep -qF 'enroll --server "[SERVER_URL]" --token-file "[ENROLL_TOKEN_FILE]"' <<<"$ca"
seq="$(table InstallExecuteSequence)"
prep_at="$(awk -F'\t' '$1=="PrepareData"{print $3}' <<<"$seq")"
enroll_at="$(awk -F'\t' '$1=="Enroll"{print $3}' <<<"$seq")"
files_at="$(awk -F'\t' '$1=="InstallFiles"{print $3}' <<<"$seq")"
start_at="$(awk -F'\t' '$1=="StartServices"{print $3}' <<<"$seq")"
check "sequence: InstallFiles < PrepareData < Enroll < StartServices ($files_at < $prep_at < $enroll_at < $start_at)" \
  test "$files_at" -lt "$prep_at" -a "$prep_at" -lt "$enroll_at" -a "$enroll_at" -lt "$start_at"
check "sequence: Enroll only on a first install with both properties" \
  grep -qF "Enroll${tab}SERVER_URL AND ENROLL_TOKEN_FILE AND NOT Installed AND NOT WIX_UPGRADE_DETECTED" <<<"$seq"
check "Upgrade: MajorUpgrade of earlier versions" \
  grep -q "^{6B0C5E1A-4F7D-4E63-9E0B-2C1F7A9D3B41}${tab}${tab}$version${tab}${tab}1${tab}${tab}WIX_UPGRADE_DETECTED$" <<<"$(table Upgrade)"

step "under wine: picket-agent.exe --version, check-config"
# Debian's wine64 alone (no i386 wine32): prefix creation notes a missing
# syswow64\rundll32.exe, which only 32-bit programs need. A fresh prefix per run;
# +eventlog makes wine's ReportEventW print each event (wine has no Event Log
# to write to), so the service's events can be read back from $wlog.
WINEPREFIX="$(mktemp -d)"
export WINEPREFIX WINEDEBUG=-all,+eventlog,err+msi WINEDLLOVERRIDES="mscoree,mshtml="
wlog="$out/wine.log"
: >"$wlog"
cleanup_wine() {
  wineserver -k 2>/dev/null || true
  rm -rf "$WINEPREFIX"
}
trap cleanup_wine EXIT
# wineboot starts the prefix's services.exe; it and every service it starts
# keep this command's stderr, i.e. $wlog.
timeout 300 wine wineboot --init >>"$wlog" 2>&1 || true
drive_c="$WINEPREFIX/drive_c"
check "wine prefix created" test -d "$drive_c/windows/system32"
# Rust's std loads ProcessPrng from bcryptprimitives.dll (Windows 10+), which
# wine 8 lacks: a test-only shim over wine's BCryptGenRandom, never in the MSI.
x86_64-w64-mingw32-gcc -shared -O2 -Wl,--kill-at -o "$drive_c/windows/system32/bcryptprimitives.dll" \
  installers/msi/wine/bcryptprimitives.c -lbcrypt
run_exe() { timeout 120 wine "$@" 2>>"$wlog" | tr -d '\r'; }
got="$(run_exe "$exe" --version)" || true
echo "picket-agent.exe --version: $got"
check "picket-agent.exe --version under wine" test "$got" = "picket-agent $version"
# The Windows configuration at the MSI's paths, as PrepareData would leave it.
mkdir -p "$drive_c/ProgramData/Picket"
cp "$out/agent.toml" "$out/policy.toml" "$drive_c/ProgramData/Picket/"
cc="$(run_exe "$exe" --config 'C:\ProgramData\Picket\agent.toml' check-config)" || true
echo "$cc"
check "check-config: the Windows agent.toml" grep -qxF 'config file: C:\ProgramData\Picket\agent.toml (ok)' <<<"$cc"
check "check-config: state under ProgramData" grep -qF 'state_dir: C:\ProgramData\Picket\state (' <<<"$cc"
check "check-config: the Windows policy.toml" grep -qxF 'policy file: C:\ProgramData\Picket\policy.toml (ok)' <<<"$cc"
check "check-config: configuration ok" grep -qxF 'configuration ok' <<<"$cc"
printf 'allow_kinds = "deploy_rule"\n' >"$drive_c/ProgramData/Picket/policy.toml"
if timeout 120 wine "$exe" --config 'C:\ProgramData\Picket\agent.toml' check-config >"$out/bad.txt" 2>&1; then
  fail "check-config accepted a broken policy.toml"
else
  tr -d '\r' <"$out/bad.txt" | grep -v '^[0-9a-f]\{4\}:' | tee "$out/bad.err"
  check "check-config refuses a broken policy.toml, naming it" grep -qF 'C:\ProgramData\Picket\policy.toml' "$out/bad.err"
fi
rm -rf "$drive_c/ProgramData/Picket"

if [ "$wine_msi" = 1 ]; then
step "under wine: msiexec /i (no enrollment), the service, the Event Log, msiexec /x"
msi_w="$(winepath -w "$msi" 2>/dev/null)"
pf="$drive_c/Program Files/Picket"
data="$drive_c/ProgramData/Picket"
svckey='HKLM\SYSTEM\CurrentControlSet\Services\picket-agent'
evkey_w="HKLM\\$evkey"
regq() { timeout 60 wine reg query "$@" 2>>"$wlog" | tr -d '\r'; }
# Wine 8's first msiexec in a fresh prefix creates the service but then cannot
# open it to start it (1060, err:msi in $wlog) and rolls back; the same MSI
# installs on the second try (seen every time here). Retried once, and said.
if timeout 600 wine msiexec /i "$msi_w" /qn >>"$wlog" 2>&1; then
  ok "msiexec /i /qn succeeded"
elif echo "wine: first msiexec in a fresh prefix failed (wine quirk, see $wlog); retrying once" &&
  timeout 600 wine msiexec /i "$msi_w" /qn >>"$wlog" 2>&1; then
  ok "msiexec /i /qn succeeded (second try)"
else
  fail "msiexec /i /qn failed (see $wlog)"
fi
check "installed: C:\\Program Files\\Picket\\picket-agent.exe (same bytes)" cmp -s "$exe" "$pf/picket-agent.exe"
check "installed: agent.toml.example, policy.toml.example" test -f "$pf/agent.toml.example" -a -f "$pf/policy.toml.example"
check "PrepareData: C:\\ProgramData\\Picket\\agent.toml from the example" cmp -s "$out/agent.toml" "$data/agent.toml"
check "PrepareData: C:\\ProgramData\\Picket\\policy.toml from the example" cmp -s "$out/policy.toml" "$data/policy.toml"
svc="$(regq "$svckey")" || true
echo "$svc"
# (wine's msi writes the exe path unquoted, Windows Installer quoted.)
check "service: ImagePath runs service run with the ProgramData config" \
  grep -qE '^\s+ImagePath\s+REG_SZ\s+"?C:\\Program Files\\Picket\\picket-agent\.exe"? --config "C:\\ProgramData\\Picket\\agent\.toml" service run$' <<<"$svc"
check "service: automatic start (Start 2)" grep -qE '^\s+Start\s+REG_DWORD\s+0x2$' <<<"$svc"
check "service: account NT AUTHORITY\\LocalService" grep -qE '^\s+ObjectName\s+REG_SZ\s+NT AUTHORITY\\LocalService$' <<<"$svc"
ev="$(regq "$evkey_w")" || true
echo "$ev"
check "Event Log source: EventMessageFile is the installed exe" \
  grep -qE '^\s+EventMessageFile\s+REG_SZ\s+C:\\Program Files\\Picket\\picket-agent.exe$' <<<"$ev"
check "Event Log source: TypesSupported 7" grep -qE '^\s+TypesSupported\s+REG_DWORD\s+0x7$' <<<"$ev"
# Not enrolled: StartServices started the service, which logged its start and
# the error to the Event Log and stopped. Wait for both events (generous: a loaded machine).
for _ in $(seq 1 120); do
  grep -q 'ReportEventW.*the service stopped with an error' "$wlog" && break
  sleep 1
done
grep -a 'eventlog' "$wlog" | head -n 20
check "Event Log: information event at start (picket-agent $version, the ProgramData config)" \
  grep -aqE "trace:eventlog:ReportEventW L\".*INFO.*the service is starting.*version=.*$version" "$wlog"
check "Event Log: error event naming the cause (not enrolled) as the service stops" \
  grep -aqE 'err:eventlog:ReportEventW L".*ERROR.*the service stopped with an error.*enroll' "$wlog"
# Upgrade: the same exe as a higher version (MajorUpgrade: the old product is
# removed, the new one installed); the customer's edits and state must survive.
up_version="${version%.*}.$((${version##*.} + 1))"
up_msi="$out/upgrade/picket-agent-$up_version-x64.msi"
mkdir -p "$out/upgrade"
(cd "$out" && wixl -a x64 -D Version="$up_version" -D Exe=picket-agent.exe -D AgentToml=agent.toml \
  -D PolicyToml=policy.toml -o "$up_msi" "$wxs")
mkdir -p "$data/state"
echo "# edited by the customer" >>"$data/agent.toml"
echo "stand-in for the agent's keys" >"$data/state/marker"
if timeout 600 wine msiexec /i "$(winepath -w "$up_msi" 2>/dev/null)" /qn >>"$wlog" 2>&1; then
  ok "upgrade to $up_version: msiexec /i /qn succeeded"
else
  fail "upgrade to $up_version: msiexec /i /qn failed (see $wlog)"
fi
check "upgrade: picket-agent.exe in place" cmp -s "$exe" "$pf/picket-agent.exe"
check "upgrade: the edited agent.toml kept" grep -qxF "# edited by the customer" "$data/agent.toml"
check "upgrade: the state directory kept" test -f "$data/state/marker"
check "upgrade: the service is still installed" bash -c "timeout 60 wine reg query '$svckey' >/dev/null 2>&1"
check "upgrade: the Event Log source is still registered" \
  bash -c "timeout 60 wine reg query '$evkey_w' /v EventMessageFile >/dev/null 2>&1"
msi_w="$(winepath -w "$up_msi" 2>/dev/null)"
if timeout 600 wine msiexec /x "$msi_w" /qn >>"$wlog" 2>&1; then
  ok "msiexec /x /qn succeeded"
else
  fail "msiexec /x /qn failed (see $wlog)"
fi
check "uninstalled: picket-agent.exe removed" test ! -e "$pf/picket-agent.exe"
check "uninstalled: the service is deleted" bash -c "! timeout 60 wine reg query '$svckey' >/dev/null 2>&1"
check "uninstalled: the Event Log source key is deleted" bash -c "! timeout 60 wine reg query '$evkey_w' >/dev/null 2>&1"
check "uninstalled: C:\\ProgramData\\Picket (edited agent.toml, state) kept" \
  test -f "$data/state/marker" -a -f "$data/agent.toml"
else
  # Not in CI: in a fresh prefix wine 8's msiexec creates the service, then
  # cannot open it to start it (ITERATE_StartService ... 1060) and rolls the
  # install back; in a prefix that has seen an install before, the same MSI
  # installs, starts the service and its events reach ReportEventW. Not
  # reliable enough for CI; run it by hand with --wine-msi.
  echo "NOT RUN: msiexec under wine (opt-in: installers/msi/build.sh --wine-msi; see docs/install.md)"
fi

printf '\n%d passed, %d failed\n' "$((checks - fails))" "$fails"
[ "$fails" = 0 ]
