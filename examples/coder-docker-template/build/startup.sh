#!/bin/sh
# Workspace entry point: report who and what we are, then stay up like an agent would.
echo "workspace up: user=$(id -un) python=$(python3 --version 2>&1) kind=${WORKSPACE_KIND}"
if [ "$1" = "--once" ]; then exit 0; fi
exec sleep infinity
