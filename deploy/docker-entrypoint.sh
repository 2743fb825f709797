#!/bin/sh
# The image's entry point: `web` or `worker` runs that line of the Procfile (the same commands
# `make run` and the tests run), as PID 1 so it gets SIGTERM itself and drains; anything else
# runs as given (e.g. `parley-entrypoint rq info -u "$REDIS_URL"`).
set -eu
procfile=${PARLEY_PROCFILE:-/app/Procfile}
if [ "$#" -eq 1 ] && [ -f "$procfile" ]; then
  command=$(sed -n "s/^$1:[[:space:]]*//p" "$procfile")
  if [ -n "$command" ]; then
    exec /bin/sh -c "exec $command"
  fi
fi
exec "$@"
