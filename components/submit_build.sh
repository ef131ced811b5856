#!/bin/sh
# Runs `gcloud builds submit "$@"` for components/registry.py (ImageBuild), retrying a build
# that is refused a permission: IAM grants the stack has just made typically take 2 minutes
# and can take 7 or longer to apply (components/iam_wait.py waits the first 2). Any other
# failure, or a refusal that outlasts the retries, exits with gcloud's status and message.
set -u

attempts=5
# Cloud Storage, Cloud Build and Artifact Registry each word a missing grant differently.
refused='PERMISSION_DENIED|permission .*denied|does not have [^ ]+ access|AccessDenied'

log=$(mktemp) || exit 1
status_file=$(mktemp) || exit 1
trap 'rm -f "$log" "$status_file"' EXIT

attempt=1
while :; do
  # Streams gcloud's output as it comes and keeps a copy to look for a refusal.
  { gcloud builds submit "$@" 2>&1; echo $? >"$status_file"; } | tee "$log"
  status=$(cat "$status_file")
  if [ "$status" -eq 0 ]; then
    exit 0
  fi
  if [ "$attempt" -ge "$attempts" ] || ! grep -Eqi "$refused" "$log"; then
    exit "$status"
  fi
  delay=$((attempt * 30))
  echo "gemma-stack: the build was refused a permission; IAM grants can take minutes to" \
    "apply, so retrying in ${delay}s (attempt $((attempt + 1)) of $attempts)." >&2
  sleep "$delay"
  attempt=$((attempt + 1))
done
