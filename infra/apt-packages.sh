# Sourced by the infra install scripts (which define `step`): install the Debian packages that
# are missing, and nothing when all are there, so a second run is near-instant.
# --no-install-recommends: the recommends pull bookworm's criu 3.17 and crun, both broken here.
install_missing_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  step "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
