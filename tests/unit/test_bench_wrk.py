"""bench/wrk.py: parsing wrk 4.1's --latency report (samples captured on this machine)."""

from __future__ import annotations

import pytest

from bench.wrk import WrkOutputError, describe_errors, parse_wrk_output, wrk_command

# wrk debian/4.1.0-3+b2 against nginx serving /1k directly.
DIRECT_1K = """\
Running 3s test @ http://127.0.0.1:46099/1k
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.95ms  428.77us   6.28ms   73.07%
    Req/Sec    49.13k     7.12k   57.92k    60.00%
  Latency Distribution
     50%    0.97ms
     75%    1.15ms
     90%    1.45ms
     99%    2.28ms
  146608 requests in 3.00s, 178.69MB read
Requests/sec:  48813.77
Transfer/sec:     59.49MB
"""

# Through nginx proxy_pass, /1m.
PROXY_1M = """\
Running 3s test @ http://127.0.0.1:37973/1m
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    64.05ms   39.80ms 440.35ms   92.04%
    Req/Sec   821.57    198.40     1.00k    80.00%
  Latency Distribution
     50%   55.34ms
     75%   71.19ms
     90%   93.55ms
     99%  268.87ms
  2459 requests in 3.01s, 2.41GB read
Requests/sec:    818.00
Transfer/sec:    820.78MB
"""

# A path nginx does not have: every response is a 404.
NOT_FOUND = """\
Running 2s test @ http://127.0.0.1:37973/nope
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.03ms    1.81ms  23.27ms   89.27%
    Req/Sec    27.23k    10.24k   51.56k    80.00%
  Latency Distribution
     50%    1.42ms
     75%    2.36ms
     90%    3.98ms
     99%    8.44ms
  54625 requests in 2.02s, 16.05MB read
  Non-2xx or 3xx responses: 54625
Requests/sec:  26976.81
Transfer/sec:      7.92MB
"""

# A server that answers 503 and closes, sometimes without answering.
SOCKET_ERRORS = """\
Running 1s test @ http://127.0.0.1:38995/
  1 threads and 5 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   147.02us   85.69us   1.55ms   80.60%
    Req/Sec    10.83k     0.97k   12.44k    63.64%
  Latency Distribution
     50%  140.00us
     75%  170.00us
     90%  223.00us
     99%  466.00us
  11847 requests in 1.10s, 462.77KB read
  Socket errors: connect 0, read 17766, write 0, timeout 0
  Non-2xx or 3xx responses: 11847
Requests/sec:  10773.39
Transfer/sec:    420.84KB
"""


def test_direct_1k_totals_and_quantiles() -> None:
    r = parse_wrk_output(DIRECT_1K)
    assert r.requests == 146608
    assert r.elapsed_s == pytest.approx(3.0)
    assert r.rps == pytest.approx(48813.77)
    assert r.bytes_read == round(178.69 * 1024**2)
    assert (r.p50_s, r.p75_s, r.p90_s, r.p99_s) == pytest.approx(
        (0.97e-3, 1.15e-3, 1.45e-3, 2.28e-3)
    )
    assert r.errors == 0
    assert describe_errors(r) == []


def test_gigabytes_and_hundreds_of_milliseconds() -> None:
    r = parse_wrk_output(PROXY_1M)
    assert r.requests == 2459
    assert r.bytes_read == round(2.41 * 1024**3)
    assert r.p99_s == pytest.approx(0.26887)
    assert r.rps == pytest.approx(818.0)


def test_non_2xx_responses_are_errors() -> None:
    r = parse_wrk_output(NOT_FOUND)
    assert r.non_2xx == 54625
    assert r.errors == 54625
    assert describe_errors(r) == ["54625 non-2xx/3xx"]


def test_socket_errors_and_microsecond_quantiles() -> None:
    r = parse_wrk_output(SOCKET_ERRORS)
    assert (r.connect_errors, r.read_errors, r.write_errors, r.timeouts) == (0, 17766, 0, 0)
    assert r.p50_s == pytest.approx(140e-6)
    assert r.p99_s == pytest.approx(466e-6)
    assert r.elapsed_s == pytest.approx(1.10)
    assert r.bytes_read == round(462.77 * 1024)
    assert describe_errors(r) == ["17766 read", "11847 non-2xx/3xx"]


def test_report_without_latency_distribution_names_the_flag() -> None:
    text = "\n".join(
        line for line in DIRECT_1K.splitlines() if "%" not in line or "Latency " in line
    )
    with pytest.raises(WrkOutputError, match="--latency"):
        parse_wrk_output(text)


@pytest.mark.parametrize(
    "text",
    ["", "unable to connect to 127.0.0.1:1 Connection refused\n"],
    ids=["empty", "connection-refused"],
)
def test_failed_run_is_an_error(text: str) -> None:
    with pytest.raises(WrkOutputError, match="requests in"):
        parse_wrk_output(text)


def test_command_rounds_durations_to_whole_seconds() -> None:
    cmd = wrk_command(
        "http://127.0.0.1:8080/1k", threads=1, connections=50, duration_s=2.6, wrk="/usr/bin/wrk"
    )
    assert cmd == [
        "/usr/bin/wrk",
        "--latency",
        "--threads=1",
        "--connections=50",
        "--duration=3s",
        "--timeout=5s",
        "http://127.0.0.1:8080/1k",
    ]


def test_command_never_asks_for_zero_seconds() -> None:
    cmd = wrk_command("http://127.0.0.1:1/", threads=1, connections=1, duration_s=0.2)
    assert "--duration=1s" in cmd
