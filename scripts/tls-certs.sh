#!/usr/bin/env bash
# tls-certs.sh — throw-away TLS material for the test servers.
#
#   scripts/tls-certs.sh OUTDIR
#
# Makes in OUTDIR (created, mode 755):
#   ca.crt          a fresh self-signed CA (its key is deleted once used)
#   server.crt/key  a server certificate signed by it, for the names
#                   localhost and 127.0.0.1 (CN localhost)
#   other-ca.crt    another, unrelated CA: "the wrong CA" for tests
#   client.crt/key  a client certificate signed by the CA, its key
#                   encrypted with the passphrase dbpool-test-passphrase
#                   (for tests that a connect never asks for it)
# Used by pg-server.sh and mysql-server.sh when DBPOOL_TEST_TLS=1.
set -euo pipefail

[ $# -eq 1 ] || {
    echo "usage: $0 OUTDIR" >&2
    exit 2
}
out=$1
command -v openssl >/dev/null || {
    echo "tls-certs.sh: openssl not found (apt-get install -y openssl)" >&2
    exit 1
}
mkdir -p "$out"
chmod 755 "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# openssl prints progress on stderr: shown only when it fails.
ossl() { openssl "$@" 2>"$tmp/err" || {
    cat "$tmp/err" >&2
    exit 1
}; }

ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=dbpool test CA" \
    -keyout "$tmp/ca.key" -out "$out/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=dbpool other test CA" \
    -keyout "$tmp/other.key" -out "$out/other-ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
ossl req -new -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$out/server.key" -out "$tmp/server.csr"
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$tmp/ext"
ossl x509 -req -in "$tmp/server.csr" -CA "$out/ca.crt" -CAkey "$tmp/ca.key" -set_serial "0x$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" \
    -days 30 -extfile "$tmp/ext" -out "$out/server.crt"
ossl req -new -newkey rsa:2048 -subj "/CN=dbpool" -passout pass:dbpool-test-passphrase \
    -keyout "$out/client.key" -out "$tmp/client.csr"
printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth" >"$tmp/client-ext"
ossl x509 -req -in "$tmp/client.csr" -CA "$out/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "0x$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" -days 30 -extfile "$tmp/client-ext" \
    -out "$out/client.crt"
chmod 600 "$out/server.key" "$out/client.key"
chmod 644 "$out/ca.crt" "$out/other-ca.crt" "$out/server.crt" "$out/client.crt"
