"""``bluegreen serve``: wire config, logging, the proxy and signals together.

SIGTERM or SIGINT starts a drain: stop accepting, close idle keep-alive
connections, let in-flight requests finish (their responses say
``Connection: close``) for up to ``timeouts.drain``, then exit 0. A second
signal during the drain cuts what is left and exits 1.

Every replica also runs a rollout controller
(:class:`~bluegreen.controller.runner.RolloutController`): its admin routes
take operator commands, and the one replica that wins the leadership drives
the rollout. A draining replica steps down first, so another takes over.

The control plane (:class:`~bluegreen.replica.ControlPlane`) opens the state
store before the proxy starts, pushes the stored weights and flags into it
before the first request, heartbeats, and serves the admin API; it stops
after the drain, so ``/readyz`` answers 503 while draining and the replica is
marked stopped in the store at exit.

uvloop is used when it is installed (``pip install bluegreen[fast]``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import IO

import structlog

from bluegreen.admin_rollout import rollout_routes
from bluegreen.config import Config
from bluegreen.controller.executors import ControllerSettings
from bluegreen.controller.runner import RolloutController
from bluegreen.logs import AccessLog, ThreadedWriter, configure_logging
from bluegreen.proxy import ProxyServer
from bluegreen.replica import ControlPlane, ControlPlaneSettings
from bluegreen.runtime import data_plane_build, freeze_startup_objects, loop_factory
from bluegreen.shutdown import CutAfterDrain, DrainSignals
from bluegreen.workers import serve_workers, worker_count

EXIT_OK = 0
EXIT_FORCED = 1

log = structlog.get_logger("bluegreen.serve")


def run(config: Config, *, control: ControlPlaneSettings | None = None) -> int:
    """Serve until SIGTERM/SIGINT and a drain; return the process exit code."""
    configure_logging()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(config, control=control))


def _open_access_log(config: Config) -> tuple[IO[bytes] | None, ThreadedWriter | None]:
    if not config.access_log.enabled:
        return None, None
    path = config.access_log.path
    stream: IO[bytes] = (
        sys.stdout.buffer if path == "-" else open(path, "ab")  # noqa: SIM115  # closed in serve()
    )
    return (None if path == "-" else stream), ThreadedWriter(stream)


async def serve(
    config: Config,
    *,
    ready: Callable[[ProxyServer], None] | None = None,
    control: ControlPlaneSettings | None = None,
) -> int:
    """Run the proxy in the current loop until a signal; drain; return the exit code."""
    settings = control if control is not None else ControlPlaneSettings.from_config(config)
    routing = config.routing
    plane = await ControlPlane.open(
        settings, green_bp=routing.green_weight_bp, salt=routing.salt, mirror_bp=routing.mirror_bp
    )
    cut = CutAfterDrain()
    try:
        try:
            count = worker_count(config)
            if count > 1:  # a control process and `count` data-plane workers
                return await serve_workers(config, plane, count, cut)
            return await _serve(config, plane, ready, cut)
        finally:
            await plane.close()
    except asyncio.CancelledError:
        if not cut.fired:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we run in a task
        return EXIT_FORCED
    finally:
        cut.disarm()


async def _serve(
    config: Config,
    plane: ControlPlane,
    ready: Callable[[ProxyServer], None] | None,
    cut: CutAfterDrain,
) -> int:
    loop = asyncio.get_running_loop()
    own_stream, writer = _open_access_log(config)
    access_log = AccessLog(writer.write, loop=loop) if writer is not None else None
    proxy = ProxyServer(config, access_log=access_log, request_header_hook=plane.header_hook)
    if writer is not None:
        proxy.metrics.access_log_dropped = lambda: writer.dropped
    signals = DrainSignals()
    controller = RolloutController(
        plane.store, ControllerSettings.from_config(config), actor=f"controller@{plane.actor}"
    )
    routes, schemas = rollout_routes(controller)
    try:
        await proxy.start()
        try:
            # Its first step, before any await, pushes the stored weights into the proxy.
            admin = await plane.start(proxy, extra_routes=routes, extra_schemas=schemas)
            replica = plane.replica
            controller.attach(
                proxy=proxy,
                prober=plane.health,
                replica_id=replica.id if replica is not None else None,
                replica_extra=replica.extra if replica is not None else None,
                metrics_url=f"{admin.url}/metrics",
            )
            proxy.metrics.register(controller.metrics)
            await controller.start()
        except BaseException:
            await controller.stop()
            await proxy.stop()
            raise
        signals.install()
        host, port = proxy.address
        log.info(
            "proxy_listening",
            address=f"{host}:{port}",
            blue=[str(a) for a in config.upstreams["blue"].servers],
            green=[str(a) for a in config.upstreams["green"].servers],
            green_weight_percent=proxy.router.green_bp / 100,
            state_version=plane.store.current.version,
            admin=admin.url,
            event_loop=type(loop).__module__.split(".")[0],
            data_plane=data_plane_build(),
        )
        if ready is not None:
            ready(proxy)
        freeze_startup_objects()
        signal_name = await signals.first()
        # Step down first, so another replica takes over the rollout while this one drains.
        await controller.step_down()
        log.info(
            "drain_started",
            signal=signal_name,
            timeout_s=config.timeouts.drain,
            connections=len(proxy.connections),
        )
        drained = await signals.drain(proxy.drain(config.timeouts.drain), proxy.stop)
        if drained is None:
            log.warning("drain_forced", connections=len(proxy.connections))
            return EXIT_FORCED
        log.info("proxy_stopped", drained=drained)
        return EXIT_OK
    finally:
        cut.arm()  # replaces on_signal for the clean-up that is left
        await controller.stop()
        if writer is not None:
            writer.close()
        if own_stream is not None:
            own_stream.close()
