#!/usr/bin/env bash
# Placeholder: the on-prem agent installer is being written.
echo "install-agent.sh: not available yet" >&2
exit 1
