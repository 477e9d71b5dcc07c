#!/usr/bin/env bash
# Regenerates the test-only TLS files here: a CA, a server certificate for
# localhost / 127.0.0.1, a client certificate signed by the same CA, and a
# second CA that signed nothing here (a client trusting it must fail).
# Valid for 100 years; never use them outside tests.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -days $days -subj "/CN=hardneg test CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days $days -subj "/CN=other CA" \
  -keyout other-ca.key -out other-ca.pem 2>/dev/null
rm other-ca.key
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=hardneg test $who" \
    -keyout $who.key -out $who.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n' \
    "$([[ $who == server ]] && echo serverAuth || echo clientAuth)" > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days $days -extfile $who.ext -out $who.pem 2>/dev/null
  rm $who.csr $who.ext
done
rm -f ca.key ca.srl
