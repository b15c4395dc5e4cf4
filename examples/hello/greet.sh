#!/bin/sh
echo "$GREETING, $1: running on $(uname -m) as uid $(id -u)"
cat /app/build-info
