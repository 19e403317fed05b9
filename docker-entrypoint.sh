#!/bin/sh
# The algorithm runs as the unprivileged user ppsdg. A vantage6 4.x node (root) creates the run's
# output file as root, mode 0644, in a root-owned folder: no other user can write it. So the
# container starts as root only to hand that file (and the job's temporary folder) to ppsdg, then
# drops root for good before any task input is read. Started as non-root already (docker run --user), it just runs.
set -eu

# The node passes its variables base32-encoded ('=' written as '!'); by hand they come plain.
plain() {
    if decoded=$(printf '%s' "$1" | tr '!' '=' | base32 -d 2>/dev/null); then
        printf '%s' "$decoded"
    else
        printf '%s' "$1"
    fi
}

if [ "$(id -u)" = 0 ]; then
    output=$(plain "${OUTPUT_FILE:-}")
    if [ -n "$output" ] && [ -f "$output" ]; then
        chown --no-dereference ppsdg:ppsdg "$output"
    fi
    # The job's temporary folder holds the node's privacy ledger (ppsdg/policy.py): ppsdg writes it.
    folder=$(plain "${TEMPORARY_FOLDER:-}")
    if [ -n "$folder" ] && [ -d "$folder" ]; then
        chown --no-dereference ppsdg:ppsdg "$folder"
    fi
    exec setpriv --reuid=ppsdg --regid=ppsdg --init-groups --no-new-privs --inh-caps=-all \
        --bounding-set=-all -- "$@"
fi
exec "$@"
