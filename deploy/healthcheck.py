#!/usr/bin/env python
"""Container health check for the image's two process types (Docker HEALTHCHECK, Kubernetes exec probe).

    parley-healthcheck web [PATH]   exit 0 when this container's web answers PATH (default /readyz) with 200
    parley-healthcheck worker       exit 1 only when Redis answers and no RQ worker of this host is registered

A worker registers in Redis (`rq:workers`, a key that expires unless its heartbeat renews it), so
"Redis answers but my registration is gone" means the worker is stuck or dead. When Redis itself
is down the worker waits for it by design (see worker/__main__.py): that is not this container's
fault, so the check passes and restarting it would not help.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request


def check_web(path: str) -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"web: {url}: {error}")
        return 1
    print(f"web: {url}: {status}")
    return 0 if status == 200 else 1


def check_worker() -> int:
    import redis
    from rq import Worker

    from parley.shared.settings import get_settings

    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    host = socket.gethostname()
    try:
        mine = [worker.name for worker in Worker.all(connection=client) if worker.hostname == host]
    except (redis.ConnectionError, redis.TimeoutError) as error:
        print(f"worker: Redis does not answer ({error}); the worker waits for it")
        return 0
    print(f"worker: registered on {host}: {', '.join(mine) or 'none'}")
    return 0 if mine else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["web"] and len(argv) <= 2:
        return check_web(argv[1] if len(argv) == 2 else "/readyz")
    if argv == ["worker"]:
        return check_worker()
    print("usage: parley-healthcheck web [PATH] | parley-healthcheck worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
