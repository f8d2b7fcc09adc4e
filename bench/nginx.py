"""nginx for the benchmark: the shared upstream (static files) and the reference proxy.

Each instance gets its own prefix under the run's temporary directory (config,
pid file, error log, temp paths), listens on 127.0.0.1 only, runs in the
foreground (``daemon off``) with a master and ``workers`` worker processes and
logs no access lines. The config renderers are pure; :func:`start` runs one.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from bench.procs import Supervisor, pinned, tool_path, wait_listening

# Payload name -> size in bytes; served by the upstream as /<name>.
PAYLOADS: dict[str, int] = {"1k": 1024, "1m": 1024 * 1024}

# Plenty of keep-alive requests per connection: nginx's default (1000) would
# make wrk and the proxies reconnect every 1000 requests, measuring connection
# set-up rather than proxying.
KEEPALIVE_REQUESTS = 10_000_000

# Response buffer size of the reference proxy (see render_proxy_conf).
DEFAULT_BUFFER_KIB = 64


def _common(prefix: Path, workers: int, run_as_root: bool) -> str:
    # A root master would switch its workers to "nobody", who cannot read our
    # private temporary directory; keep them as the user who runs the bench.
    user = "user root root;\n" if run_as_root else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/temp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
{user}daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
{temp}
    default_type application/octet-stream;
    keepalive_timeout 75s;
    keepalive_requests {KEEPALIVE_REQUESTS};
"""


def render_upstream_conf(prefix: Path, port: int, *, run_as_root: bool) -> str:
    """The upstream: one worker serving ``<prefix>/www/<payload>`` files from the page cache."""
    return (
        _common(prefix, 1, run_as_root)
        + f"""\
    sendfile on;
    tcp_nopush on;
    open_file_cache max=64 inactive=600s;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {prefix}/www;
        location / {{ }}
    }}
}}
"""
    )


def render_proxy_conf(
    prefix: Path,
    port: int,
    upstream_port: int,
    *,
    workers: int,
    run_as_root: bool,
    buffer_kib: int | None = DEFAULT_BUFFER_KIB,
) -> str:
    """The reference proxy: ``proxy_pass`` with upstream keep-alive.

    It sets the same forwarding headers bluegreen sets, so both do the same
    work. ``buffer_kib`` sizes nginx's response buffers; None keeps nginx's
    stock one-page (4 KiB) buffers, which move a 1 MiB body in 256 pieces and
    cost nginx about twice the CPU — not how nginx is deployed for large bodies.
    """
    buffers = (
        f"""\
            proxy_buffer_size {buffer_kib}k;
            proxy_buffers 8 {buffer_kib}k;
            proxy_busy_buffers_size {2 * buffer_kib}k;
"""
        if buffer_kib
        else ""
    )
    return (
        _common(prefix, workers, run_as_root)
        + f"""\
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests {KEEPALIVE_REQUESTS};
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
{buffers}        }}
    }}
}}
"""
    )


def payload_bytes(size: int) -> bytes:
    """Deterministic, printable content of ``size`` bytes."""
    line = b"bluegreen benchmark payload 0123456789abcdefghijklmnopqrstuvwxyz\n"
    return (line * (size // len(line) + 1))[:size]


_TEMP_FILE_WARNING = re.compile(r"buffered to a temporary file")


def count_temp_file_warnings(error_log: str) -> int:
    """How often nginx spilled an upstream response to disk (it logs a warning each time)."""
    return len(_TEMP_FILE_WARNING.findall(error_log))


class Nginx:
    """One running nginx instance (master pid = ``proc.pid``)."""

    def __init__(self, prefix: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.prefix = prefix
        self.port = port
        self.proc = proc

    def error_log(self) -> str:
        """The instance's error log so far."""
        try:
            return (self.prefix / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def prepare_prefix(prefix: Path) -> None:
    """Create the prefix tree (config, pid, logs, temp paths, web root)."""
    for sub in ("", "www", "temp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)


def start(
    sup: Supervisor,
    name: str,
    prefix: Path,
    conf: str,
    port: int,
    cpus: tuple[int, ...] | None,
    *,
    timeout: float = 10.0,
) -> Nginx:
    """Write ``conf`` to ``<prefix>/nginx.conf``, check it, run nginx and wait until it listens."""
    prepare_prefix(prefix)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    nginx = tool_path("nginx")
    base = [nginx, "-p", f"{prefix}/", "-c", str(conf_path), "-e", f"{prefix}/error.log"]
    check = sup.run(f"{name}-check", [*base, "-t", "-q"], timeout=timeout)
    if check.returncode != 0:
        raise RuntimeError(f"{name}: nginx rejected {conf_path}:\n{check.stderr.strip()}")
    proc = sup.start(name, pinned(base, cpus), cwd=prefix)
    wait_listening(port, deadline=time.monotonic() + timeout, proc=proc)
    return Nginx(prefix, port, proc)


def running_as_root() -> bool:
    """Whether nginx would start as root (and so switch its workers to another user)."""
    return os.geteuid() == 0
