#!/usr/bin/env bash
# announce-lan-ip: prints `LAN IPv4 address: <ip>` on the console once `lan` has an IPv4
# address, or says plainly that it has none after two minutes. Polls once a second inside the
# guest only. Run by the announce-lan-ip unit of the real image (nix/boot-image.nix) and of
# the systemd fixture; needs bash, coreutils, awk and iproute2.
for _ in $(seq 120); do
  ip=$(ip -4 -o addr show dev lan 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }')
  if [ -n "$ip" ]; then
    echo "LAN IPv4 address: $ip"
    exit 0
  fi
  sleep 1
done
if ip link show dev lan >/dev/null 2>&1; then
  echo 'LAN IPv4 address unavailable (interface "lan" has no IPv4 address after 120 s)'
else
  echo 'LAN IPv4 address unavailable (interface "lan" not found)'
fi
exit 1
