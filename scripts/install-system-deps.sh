#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, and only those that are missing.
#
# Usage: scripts/install-system-deps.sh [demo|test]
#   demo  Java and the Firestore emulator (what `make demo` runs)
#   test  the same plus Chromium for the browser tests (the default)
#
# Safe to run again: when everything is present it changes nothing and skips `apt-get update`.
set -euo pipefail

purpose="${1:-test}"
case "$purpose" in
  demo | test) ;;
  *)
    echo "usage: $0 [demo|test]" >&2
    exit 2
    ;;
esac

say() { printf 'system deps: %s\n' "$*"; }

gcloud_install_help() {
  cat >&2 <<'EOF'
system deps: the Firestore emulator is missing and apt cannot install it here.
  Install the Google Cloud CLI and its Firestore emulator, then run this again:
    - Debian/Ubuntu: add Google Cloud's apt repository as described in
      https://cloud.google.com/sdk/docs/install#deb
      then: sudo apt-get install google-cloud-cli google-cloud-cli-firestore-emulator
    - Any other install of the CLI: gcloud components install cloud-firestore-emulator
EOF
}

# Java 11+ runs the emulator; the distribution's default JRE is installed when none is found.
java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
  [ -n "$major" ] && [ "$major" -ge 11 ]
}

gcloud_sdk_root() {
  local gcloud_bin
  gcloud_bin="$(command -v gcloud 2>/dev/null)" || return 1
  # bin/gcloud sits one level below the SDK root, whichever way the CLI was installed.
  dirname "$(dirname "$(readlink -f "$gcloud_bin")")"
}

firestore_emulator_ok() {
  local root
  root="$(gcloud_sdk_root)" || return 1
  [ -d "$root/platform/cloud-firestore-emulator" ]
}

chromium_ok() { command -v chromium >/dev/null 2>&1; }

apt_packages=()
# default-jre-headless: Java 17 on Debian 12, 21 on Debian 13 (which has no openjdk-17).
java_ok || apt_packages+=(default-jre-headless)
need_emulator=0
firestore_emulator_ok || need_emulator=1
if [ "$purpose" = test ] && ! chromium_ok; then
  apt_packages+=(chromium)
fi

missing=("${apt_packages[@]}")
[ "$need_emulator" -eq 1 ] && missing+=(firestore-emulator)

if [ "${#missing[@]}" -eq 0 ]; then
  if [ "$purpose" = test ]; then
    say "Java, the Firestore emulator and Chromium are present"
  else
    say "Java and the Firestore emulator are present"
  fi
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  say "missing: ${missing[*]}" >&2
  say "this script installs them with apt-get (Debian/Ubuntu); install them by hand here." >&2
  [ "$need_emulator" -eq 1 ] && gcloud_install_help
  exit 1
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    say "need root to install packages, and sudo is not available; run this script as root." >&2
    exit 1
  fi
  sudo_cmd=(sudo)
fi
apt_install() {
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

say "missing: ${missing[*]}; updating the package index"
"${sudo_cmd[@]}" apt-get update -qq

if [ "$need_emulator" -eq 1 ]; then
  # The emulator package needs Google Cloud's apt repository; without it, fall back to the CLI's own
  # component manager, which works for every install that is not managed by apt.
  if apt-cache policy google-cloud-cli-firestore-emulator 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_packages+=(google-cloud-cli-firestore-emulator)
  elif command -v gcloud >/dev/null 2>&1 \
    && gcloud components install cloud-firestore-emulator --quiet; then
    say "installed the Firestore emulator with gcloud components"
  fi
  # Otherwise the other packages are still installed, and the check below explains the rest.
fi

if [ "${#apt_packages[@]}" -gt 0 ]; then
  say "installing ${apt_packages[*]}"
  apt_install "${apt_packages[@]}"
fi

java_ok || { say "java still missing after install" >&2; exit 1; }
firestore_emulator_ok || { gcloud_install_help; exit 1; }
if [ "$purpose" = test ]; then
  chromium_ok || { say "chromium still missing after install" >&2; exit 1; }
fi
say "done"
