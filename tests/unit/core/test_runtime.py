"""``prodcat.core.runtime.free_port``: ports for servers started next, outside the range outgoing
connections take theirs from."""

from __future__ import annotations

import socket

import pytest

from prodcat.core import runtime
from prodcat.core.runtime import FREE_PORT_FLOOR, ephemeral_range, free_port

pytestmark = pytest.mark.unit


def test_free_port_is_below_the_ephemeral_range_and_can_be_bound():
    low, _ = ephemeral_range()
    ports = {free_port() for _ in range(20)}
    assert all(FREE_PORT_FLOOR <= p < low for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_something_listens_on(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        seen = []

        class Draw:
            def randrange(self, a, b):      # the taken port twice, then ports bind(0) finds free
                if len(seen) < 2:
                    seen.append(taken)
                    return taken
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    seen.append(s.getsockname()[1])
                return seen[-1]

        monkeypatch.setattr(runtime.random, "SystemRandom", Draw)
        monkeypatch.setattr(runtime, "ephemeral_range", lambda: (65535, 65535))
        monkeypatch.setattr(runtime, "FREE_PORT_FLOOR", 1024)
        port = free_port()
        assert port != taken and port == seen[-1] and seen[:2] == [taken, taken]


def test_free_port_says_when_nothing_is_free(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]

        class Draw:
            def randrange(self, a, b):
                return taken

        monkeypatch.setattr(runtime.random, "SystemRandom", Draw)
        monkeypatch.setattr(runtime, "ephemeral_range", lambda: (65535, 65535))
        monkeypatch.setattr(runtime, "FREE_PORT_FLOOR", 1024)
        with pytest.raises(RuntimeError, match="no free TCP port"):
            free_port(tries=5)


def test_ephemeral_range_reads_the_kernel_setting_and_falls_back(tmp_path):
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t50000\n")
    assert ephemeral_range(str(setting)) == (40000, 50000)
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)


def test_autocast_lowers_to_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch):
    """``runtime.autocast``: bf16 on the CPU when it computes bf16 natively, float32 on other
    CPUs (bf16 emulated would be slower) and for fp16 or fp32; ``compute_precision`` says which."""
    import torch

    x = torch.randn(4, 8)
    w = torch.randn(8, 3)
    for native in (True, False):
        monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda native=native: native)
        with runtime.autocast("cpu", "bf16"):
            y = x @ w
        assert y.dtype == (torch.bfloat16 if native else torch.float32)
        assert runtime.compute_precision("cpu", "bf16") == ("bf16" if native else "fp32")
        for precision in ("fp32", "fp16"):
            with runtime.autocast(torch.device("cpu"), precision):
                assert (x @ w).dtype == torch.float32
            assert runtime.compute_precision("cpu", precision) == "fp32"
    assert runtime.compute_precision("cuda:0", "fp16") == "fp16"


def test_cpu_computes_bf16_reads_the_cpu_flags():
    """True exactly when /proc/cpuinfo lists AVX512-BF16 or AMX (Linux x86; skipped elsewhere)."""
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if not info.exists() or "flags" not in info.read_text():
        pytest.skip("no /proc/cpuinfo flags here")
    flags = set(next(line for line in info.read_text().splitlines() if line.startswith("flags")).split())
    assert runtime.cpu_computes_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


def test_precision_note_says_what_runs(monkeypatch):
    """The log lines' words: nothing for fp32, the precision computed, or why float32 runs."""
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: False)
    assert runtime.precision_note("cpu", "fp32") == ""
    assert runtime.precision_note("cpu", "bf16") == "fp32 (this CPU has no bf16 instructions)"
    assert runtime.precision_note("cpu", "fp16") == "fp32 (fp16 runs on GPUs only)"
    assert runtime.precision_note("cuda", "fp16") == "fp16"
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: True)
    assert runtime.precision_note("cpu", "bf16") == "bf16"


def test_free_ports_are_distinct_even_when_draws_repeat(monkeypatch):
    """Two draws of free_port can name the same port (stop 63: a Ray node started with one port for
    its metrics exporter and its agent's gRPC server refused to start); free_ports draws again."""
    draws = iter([20001, 20002, 20001, 20002, 20003])
    monkeypatch.setattr(runtime, "free_port", lambda host="127.0.0.1": next(draws))
    assert runtime.free_ports(3) == [20001, 20002, 20003]
    monkeypatch.setattr(runtime, "free_port", lambda host="127.0.0.1": 20001)
    with pytest.raises(RuntimeError, match="1 distinct free TCP ports of the 2"):
        runtime.free_ports(2)


def test_free_ports_can_be_bound_together():
    ports = runtime.free_ports(12)
    assert len(set(ports)) == 12
    sockets = [socket.socket() for _ in ports]
    try:
        for s, port in zip(sockets, ports):
            s.bind(("127.0.0.1", port))
    finally:
        for s in sockets:
            s.close()
