#!/usr/bin/env bash
# Make a private CA and a certificate for Redis at ADDRESS, in DIR (for /etc/dupwatch/tls on the daemon host;
# copy only ca.crt to the worker hosts). Keys are 0640: chgrp them to dupwatch where Redis reads them.
set -euo pipefail
dir=${1:?usage: make-tls.sh DIR ADDRESS}
address=${2:?usage: make-tls.sh DIR ADDRESS}
mkdir -p "$dir"
cd "$dir"
umask 027
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dupwatch fleet CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=dupwatch-redis" -keyout redis.key -out redis.csr 2>/dev/null
openssl x509 -req -in redis.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -out redis.crt \
    -extfile <(printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$address") 2>/dev/null
rm -f redis.csr ca.srl
chmod 0640 ca.key redis.key redis.crt
chmod 0644 ca.crt
