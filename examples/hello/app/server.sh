#!/bin/sh
# Long-lived "service": says hello once, then stays up (serves nothing) until stopped.
echo "hello from envelope (version $(cat /srv/VERSION 2>/dev/null || echo unknown))"
trap 'echo "server stopping"; exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $!
done
