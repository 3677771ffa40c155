# Sourced by scripts/install-deps and scripts/install-suricata (bash): `hold_service_starts NAME` keeps Debian's
# package scripts from starting daemons on the host while packages install — a /usr/sbin/policy-rc.d answering 101
# tells invoke-rc.d "not allowed" — and removes that file again when the calling script exits, however it exits.
# A policy-rc.d that is already there (the host's own, or one a calling script put in place) is left as it is.
# `release_service_starts` removes it earlier.

policy_rc_d=${PACKETCLIP_POLICY_RC_D:-/usr/sbin/policy-rc.d}  # another path only for its tests
own_policy=false

release_service_starts() {
    if $own_policy; then
        rm -f "$policy_rc_d"
        own_policy=false
    fi
}

hold_service_starts() {
    trap release_service_starts EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ ! -e "$policy_rc_d" ]; then
        printf '#!/bin/sh\n# packetclip scripts/%s: no service starts while it installs packages\nexit 101\n' "$1" \
            >"$policy_rc_d"
        chmod +x "$policy_rc_d"
        own_policy=true
    fi
}
