#!/usr/bin/env bash
# A development CA and a server certificate for Switchboard, with openssl:
#   deploy/tls/make-certs.sh DIR [NAME...]
# writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt and DIR/tls.key (ECDSA P-256, 90 days). The
# certificate names `switchboard`, `localhost`, 127.0.0.1 and any extra NAMEs (DNS names).
# For production, use your own CA or cert-manager and mount the files the same way.
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR [NAME...]}
shift
mkdir -p "$dir"
cd "$dir"
sans="DNS:switchboard,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do sans="$sans,DNS:$name"; done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
  -subj "/CN=Switchboard dev CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=switchboard" \
  -keyout tls.key -out tls.csr 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -out tls.crt \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$sans") \
  2>/dev/null
rm -f tls.csr ca.srl
# The container runs as user 10001 and must be able to read the key.
chmod 644 ca.crt tls.crt
chmod 644 tls.key   # dev only: readable by the container user; mount a Secret in production
chmod 600 ca.key
echo "wrote $dir/ca.crt $dir/tls.crt $dir/tls.key"
