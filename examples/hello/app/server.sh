#!/bin/sh
# Long-lived "service": says hello once, then stays up (serves nothing) until stopped. The
# argument is the role it plays (the example's ECS services start it as `web` and `worker`).
role="${1:-web}"
echo "$role: hello from envelope (version $(cat /srv/VERSION 2>/dev/null || echo unknown))"
trap 'echo "$role: stopping"; exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $!
done
