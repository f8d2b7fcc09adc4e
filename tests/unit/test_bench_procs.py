"""bench/procs.py, bench/idle.py, bench/nginx.py, bench/bluegreen_target.py: the pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import bluegreen_target, nginx, proxy
from bench.idle import parse_response_head, request_bytes
from bench.procs import (
    CpuSnapshot,
    CpuUsage,
    Placement,
    parse_cpu_busy,
    parse_stat,
    parse_vmrss,
    pinned,
)
from bluegreen.config import Address, parse_config

# /proc/PID/stat of an nginx worker (fields 14 and 15: utime 4373, stime 8620).
NGINX_WORKER_STAT = (
    "21571 (nginx) S 21570 21570 21570 0 -1 4194624 1266 0 0 0 4373 8620 0 0 20 0 1 0 "
    "100917 13451264 1412 18446744073709551615 1 1 0 0 0 0 0 4096 1073808503 0 0 0 17 1 0 0 "
    "0 0 0 0 0 0 0 0 0 0 0\n"
)


def test_parse_stat_reads_ppid_and_cpu_ticks() -> None:
    assert parse_stat(NGINX_WORKER_STAT) == (21570, 4373 + 8620)


def test_parse_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    text = NGINX_WORKER_STAT.replace("(nginx)", "(we(ird) name)")
    assert parse_stat(text) == (21570, 12993)


def test_parse_vmrss() -> None:
    status = "Name:\tnginx\nVmPeak:\t   13136 kB\nVmRSS:\t    5648 kB\nThreads:\t1\n"
    assert parse_vmrss(status) == 5648 * 1024


def test_parse_vmrss_of_a_zombie_says_why() -> None:
    with pytest.raises(ValueError, match="no VmRSS"):
        parse_vmrss("Name:\tnginx\nState:\tZ (zombie)\n")


def test_parse_cpu_busy_counts_all_but_idle_and_iowait() -> None:
    text = "cpu  100 2 30 9000 50 4 6 8 0 0\ncpu0 50 1 15 4500 25 2 3 4 0 0\nintr 12345\n"
    assert parse_cpu_busy(text) == 100 + 2 + 30 + 4 + 6 + 8


def test_cpu_usage_attributes_the_rest_to_others() -> None:
    a = CpuSnapshot(wall=0.0, machine=100.0, own=1.0, proxy=10.0, upstream=5.0)
    b = CpuSnapshot(wall=10.0, machine=118.0, own=5.0, proxy=20.0, upstream=8.0)
    usage = CpuUsage.between(a, b)
    assert usage == CpuUsage(wall_s=10.0, proxy_s=10.0, upstream_s=3.0, other_s=1.0)


def test_cpu_usage_never_reports_negative_noise() -> None:
    a = CpuSnapshot(wall=0.0, machine=100.0, own=0.0, proxy=0.0, upstream=0.0)
    b = CpuSnapshot(wall=1.0, machine=100.9, own=0.0, proxy=1.0, upstream=0.0)
    assert CpuUsage.between(a, b).other_s == 0.0


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        ([0, 1], Placement((1,), (0,))),
        ([1, 0, 3, 2], Placement((3,), (0, 1, 2))),
        ([0], Placement(None, None)),
    ],
    ids=["two-cpus", "four-cpus-unsorted", "one-cpu"],
)
def test_placement_gives_the_proxy_the_last_cpu(cpus: list[int], expected: Placement) -> None:
    assert Placement.split(cpus) == expected


def test_placement_description() -> None:
    assert Placement((1,), (0,)).describe() == (
        "proxy under test on CPU 1; wrk, upstream nginx and harness on CPU 0"
    )
    assert "not pinned" in Placement(None, None).describe()


def test_pinned_prefixes_taskset() -> None:
    assert pinned(["wrk", "-t1"], (0, 2)) == ["taskset", "-c", "0,2", "wrk", "-t1"]
    assert pinned(["wrk"], None) == ["wrk"]


def test_response_head() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 1024\r\nConnection: keep-alive"
    assert parse_response_head(head) == (200, 1024)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", "no Content-Length"),
        (b"SSH-2.0-OpenSSH_9.2", "not an HTTP/1.x status line"),
    ],
    ids=["chunked", "not-http"],
)
def test_response_head_refusals(head: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_response_head(head)


def test_idle_request_is_keep_alive() -> None:
    assert request_bytes(8080, "/1k") == b"GET /1k HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def test_payloads_have_their_exact_sizes() -> None:
    assert {k: len(nginx.payload_bytes(v)) for k, v in nginx.PAYLOADS.items()} == {
        "1k": 1024,
        "1m": 1024 * 1024,
    }


def test_upstream_conf_serves_files_on_loopback_without_access_log() -> None:
    conf = nginx.render_upstream_conf(Path("/x/up"), 9001, run_as_root=False)
    assert "listen 127.0.0.1:9001" in conf
    assert "root /x/up/www;" in conf
    assert "access_log off;" in conf
    assert "daemon off;" in conf
    assert "worker_processes 1;" in conf
    assert "user " not in conf


def test_proxy_conf_keeps_upstream_connections_alive() -> None:
    conf = nginx.render_proxy_conf(Path("/x/px"), 8080, 9001, workers=1, run_as_root=True)
    for directive in (
        "server 127.0.0.1:9001;",
        "keepalive 64;",
        "proxy_pass http://app;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "access_log off;",
        "listen 127.0.0.1:8080",
        "worker_processes 1;",
        "user root root;",
        "proxy_temp_path /x/px/temp/proxy;",
    ):
        assert directive in conf


def test_proxy_conf_sizes_response_buffers() -> None:
    conf = nginx.render_proxy_conf(Path("/x"), 1, 2, workers=1, run_as_root=False, buffer_kib=64)
    assert "proxy_buffer_size 64k;" in conf
    assert "proxy_buffers 8 64k;" in conf
    assert "proxy_busy_buffers_size 128k;" in conf


def test_proxy_conf_stock_buffers() -> None:
    conf = nginx.render_proxy_conf(Path("/x"), 1, 2, workers=2, run_as_root=False, buffer_kib=None)
    assert "proxy_buffer" not in conf
    assert "worker_processes 2;" in conf


def test_temp_file_warnings_are_counted() -> None:
    log = (
        "2026/01/01 [warn] 1#1: *5 an upstream response is buffered to a temporary file "
        "/x/temp/proxy/1/00/0000000001 while reading upstream\n"
        "2026/01/01 [notice] 1#1: signal process started\n"
    )
    assert nginx.count_temp_file_warnings(log) == 1


def test_bluegreen_config_is_valid_and_sends_everything_to_the_upstream() -> None:
    text = bluegreen_target.render_config(port=8080, admin_port=8081, upstream_port=9001)
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.listeners.proxy == Address("127.0.0.1", 8080)
    assert cfg.listeners.admin == Address("127.0.0.1", 8081)
    assert cfg.upstreams["blue"].servers == (Address("127.0.0.1", 9001),)
    assert cfg.upstreams["green"].servers == (Address("127.0.0.1", 9001),)
    assert cfg.routing.green_weight_bp == 0
    assert cfg.access_log.enabled is False


def test_bluegreen_command_passes_workers_only_when_asked() -> None:
    argv = bluegreen_target.serve_command(Path("c.yaml"), port=1, upstream_port=2, workers=None)
    assert argv[1:4] == ["-m", "bluegreen", "serve"]
    assert "--workers" not in argv
    assert argv[-2:] == ["--green-weight", "0"]
    argv = bluegreen_target.serve_command(Path("c.yaml"), port=1, upstream_port=2, workers=2)
    assert argv[-2:] == ["--workers", "2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "2k"], "comma-separated subset of 1k, 1m"),
        (["--fixed-rate", "fast"], "auto, off or requests per second"),
        (["--duration", "0"], "must be greater than 0"),
        (["--nginx-buffers", "2"], "expected stock or 4..1024"),
    ],
    ids=["payload", "fixed-rate", "duration", "nginx-buffers"],
)
def test_bad_options_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        proxy.build_parser().parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_options() -> None:
    args = proxy.build_parser().parse_args(["--only", "1k", "--fixed-rate", "20000"])
    assert args.only == ["1k"]
    assert args.fixed_rate == 20000.0
    assert args.targets == ["direct", "nginx", "bluegreen"]
    assert args.nginx_buffers == 64
    assert proxy.build_parser().parse_args(["--nginx-buffers", "stock"]).nginx_buffers is None


def test_missing_tools_name_the_packages_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(proxy, "missing_tools", lambda tools: ["wrk", "nginx", "cc"])
    assert proxy.main(["--quick"]) == 2
    err = capsys.readouterr().err
    assert "sudo apt-get install gcc nginx wrk" in err
    assert "nothing was installed" in err
    assert "--fixed-rate off" in err
