#!/bin/sh
# The compose cluster's one-shot helper (image berth/bootstrap). Two modes,
# both idempotent, both run again on every `docker compose up`:
#
#   berth-bootstrap pki
#       The cluster CA in $CA_DIR (once), and each server's certificate in
#       $DATA_ROOT/ID/pki (its data dir's default --pki-dir) for every
#       ID=HOST in $SERVERS. Existing files are kept; a server whose CA is
#       not $CA_DIR's is an error (volumes from two different clusters).
#
#   berth-bootstrap join-token
#       Waits (at most $WAIT seconds) for the cluster to have a leader, then
#       makes sure $JOIN_DIR/token holds a usable join token for $CLUSTER:
#       the one from an earlier run while its activation is ACTIVE, else a
#       fresh activation ($MAX_REGISTRATIONS registrations, $EXPIRES).
#       Also copies the CA certificate to $JOIN_DIR/ca.crt. When $LB_DIR
#       is mounted, also makes sure $LB_DIR/readonly.token holds a readonly
#       API token the cluster accepts (for berth-lb: it only watches
#       endpoints), with the CA beside it in $LB_DIR/ca.crt.
set -eu
log() { echo "berth-bootstrap: $*" >&2; }
die() { echo "berth-bootstrap: error: $*" >&2; exit 1; }

CA_DIR=${CA_DIR:-/ca}
DATA_ROOT=${DATA_ROOT:-/data}
SERVERS=${SERVERS:-1=berthd-1 2=berthd-2 3=berthd-3}
EXTRA_HOSTS=${EXTRA_HOSTS:-localhost 127.0.0.1}
JOIN_DIR=${JOIN_DIR:-/join}
LB_DIR=${LB_DIR:-/lb}
CLUSTER=${CLUSTER:-default}
MAX_REGISTRATIONS=${MAX_REGISTRATIONS:-10}
EXPIRES=${EXPIRES:-24h}
WAIT=${WAIT:-180}

pki() {
    if [ ! -f "$CA_DIR/ca.crt" ]; then
        log "creating the cluster CA in $CA_DIR"
        mkdir -p "$CA_DIR"
        berthd pki init --dir "$CA_DIR" >&2
    else
        log "cluster CA exists in $CA_DIR"
    fi
    for entry in $SERVERS; do
        id=${entry%%=*}
        host=${entry#*=}
        out=$DATA_ROOT/$id/pki
        [ -d "$DATA_ROOT/$id" ] || die "$DATA_ROOT/$id is not mounted (server $id's data volume)"
        if [ -f "$out/server.crt" ]; then
            if [ -f "$out/ca.crt" ] && ! cmp -s "$out/ca.crt" "$CA_DIR/ca.crt"; then
                die "server $id's certificate ($out) is from another CA than $CA_DIR: the volumes belong to different clusters; remove them all (docker compose down -v) or restore the matching CA volume"
            fi
            log "server $id ($host) has its certificate"
            # Volumes from before secrets: the same data key for every
            # server (docs/operations.md, "The data key").
            if [ ! -f "$out/data.key" ]; then
                if [ ! -f "$CA_DIR/data.key" ]; then
                    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$CA_DIR/data.key")
                fi
                (umask 077; cp "$CA_DIR/data.key" "$out/data.key")
                log "server $id gets the cluster data key (restart it to use secrets)"
            fi
            continue
        fi
        set -- --dir "$CA_DIR" --node-id "$id" --host "$host" --out "$out"
        for extra in $EXTRA_HOSTS; do set -- "$@" --host "$extra"; done
        log "issuing server $id's certificate for $host $EXTRA_HOSTS"
        berthd pki issue "$@" >&2
    done
    if [ -d "$JOIN_DIR" ]; then
        cp "$CA_DIR/ca.crt" "$JOIN_DIR/ca.crt"
    fi
}

join_token() {
    [ -f "$CA_DIR/admin.token" ] || die "no $CA_DIR/admin.token: run 'berth-bootstrap pki' first"
    BERTH_TOKEN=$(cat "$CA_DIR/admin.token")
    BERTH_CA_CERT=$CA_DIR/ca.crt
    export BERTH_TOKEN BERTH_CA_CERT
    [ -n "${BERTH_ENDPOINT:-}" ] || die "set BERTH_ENDPOINT (the servers, HOST:PORT,...)"
    log "waiting up to ${WAIT}s for a leader at $BERTH_ENDPOINT"
    start=$(date +%s)
    until out=$(berth cluster status -o json 2>&1) && echo "$out" | grep -q '"leaderId": *[0-9]'; do
        # Refused while a join token exists: the admin token in $CA_DIR was
        # rotated away. Agents that have joined need no join token, so keep
        # the existing one rather than block `up`; write the current admin
        # token to $CA_DIR/admin.token to let this renew it again. (On a
        # new cluster the bootstrap token is refused for a moment, until
        # the first leader installs it: that case just waits.)
        if [ -s "$JOIN_DIR/token" ] && echo "$out" | grep -qi 'unauthenticated'; then
            log "warning: $CA_DIR/admin.token is refused ($out); keeping the existing join token"
            exit 0
        fi
        if [ $(($(date +%s) - start)) -ge "$WAIT" ]; then
            die "no leader after ${WAIT}s; last answer: $out"
        fi
        sleep 2
    done
    log "cluster has a leader"
    mkdir -p "$JOIN_DIR"
    cp "$CA_DIR/ca.crt" "$JOIN_DIR/ca.crt"
    if [ -s "$JOIN_DIR/token" ]; then
        id=$(cut -d- -f2 "$JOIN_DIR/token")
        if status=$(berth activation describe "$id" -o json 2>&1); then
            if echo "$status" | grep -q '"status": *"ACTIVE"'; then
                log "join token of activation $id is still usable"
                return 0
            fi
            log "activation $id is no longer usable ($(echo "$status" | grep '"status"' | tr -d ' ,')); making a new one"
        else
            log "activation $id cannot be described ($status); making a new one"
        fi
    fi
    token=$(berth activation create --cluster "$CLUSTER" --max-registrations "$MAX_REGISTRATIONS" \
        --expires "$EXPIRES" --description "docker compose agents" 2>/tmp/create.err) \
        || die "berth activation create failed: $(tail -3 /tmp/create.err)"
    case "$token" in
        BERTH1-*) ;;
        *) die "unexpected answer from berth activation create: $token" ;;
    esac
    umask 077
    printf '%s\n' "$token" > "$JOIN_DIR/token.tmp"
    # The agents run as root and read it; nobody else mounts the volume.
    mv "$JOIN_DIR/token.tmp" "$JOIN_DIR/token"
    log "wrote a join token for cluster $CLUSTER (activation $(cut -d- -f2 "$JOIN_DIR/token"), up to $MAX_REGISTRATIONS registrations, expires in $EXPIRES)"
}

# A readonly API token for berth-lb in $LB_DIR (when that volume is
# mounted): the existing one while the cluster accepts it, else a new one.
# Readonly is all berth-lb needs (WatchEndpoints), so a leaked token
# changes nothing in the cluster.
lb_token() {
    [ -d "$LB_DIR" ] || return 0
    cp "$CA_DIR/ca.crt" "$LB_DIR/ca.crt"
    if [ -s "$LB_DIR/readonly.token" ]; then
        if out=$(BERTH_TOKEN=$(cat "$LB_DIR/readonly.token") berth service list -o json 2>&1); then
            log "berth-lb's readonly token is still accepted"
            return 0
        fi
        # Anything but a refused token (no leader for a moment, say) keeps
        # it: making tokens on every hiccup would pile them up.
        if ! echo "$out" | grep -qi -e 'unauthenticated' -e 'invalid API token'; then
            log "warning: cannot check berth-lb's readonly token ($out); keeping it"
            return 0
        fi
        log "berth-lb's readonly token is refused (revoked or expired); making a new one"
    fi
    token=$(berth auth token create --role readonly --description "docker compose berth-lb" \
        2>/tmp/lb-token.err) \
        || die "berth auth token create failed: $(tail -3 /tmp/lb-token.err)"
    [ -n "$token" ] || die "berth auth token create printed no token"
    umask 077
    printf '%s\n' "$token" > "$LB_DIR/readonly.token.tmp"
    # berth-lb runs as root and reads it; nobody else mounts the volume.
    mv "$LB_DIR/readonly.token.tmp" "$LB_DIR/readonly.token"
    log "wrote a readonly API token for berth-lb to $LB_DIR/readonly.token"
}

case "${1:-}" in
    pki) pki ;;
    join-token) join_token; lb_token ;;
    *) die "usage: berth-bootstrap pki|join-token" ;;
esac
