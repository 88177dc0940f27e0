"""Per-GPU counters (telemetry/gpu_counters.py): nothing on a machine without GPUs; NVML's units
turned into the tracks' (mW -> W, bytes -> MB, PCIe KB/s -> MB/s, NVLink cumulative KiB -> MB/s);
a metric a GPU does not support dropped for that GPU only; telemetry.gpu_counters=false off."""
from __future__ import annotations

import os
import types

import pytest

from pinchpoint.metric_names import flat_name, metric_name
from pinchpoint.telemetry import gpu_counters as gc
from pinchpoint.telemetry.system_sampler import SystemSampler
from pinchpoint.telemetry.timeline import Timeline


def _has_gpu() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/kfd"))


def _gpu_events(tl: Timeline) -> list[dict]:
    return [e for e in tl.events if e["name"].startswith("gpu")]


# --- a fake pynvml: the calls gpu_counters makes, answering in NVML's own types and units ------
class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def fake_nvml(nvlink_gpus=(0,), power_gpus=(0,)):
    """Two GPUs. GPU 0 has everything; GPU 1 has no power reading and no NVLink (NVML answers
    NotSupported / a field with nvmlReturn NOT_SUPPORTED, as on a PCIe card)."""
    calls = {"power": 0, "nvlink": 0}
    clock = {"t_us": 1_000_000, "tx_kib": 5_000_000, "rx_kib": 7_000_000}

    def field(fid, value, ok):
        return types.SimpleNamespace(
            fieldId=fid, scopeId=gc.UINT_MAX, timestamp=clock["t_us"], latencyUsec=0,
            valueType=m.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
            nvmlReturn=m.NVML_SUCCESS if ok else m.NVML_ERROR_NOT_SUPPORTED,
            value=types.SimpleNamespace(ullVal=value, dVal=0.0, uiVal=0, ulVal=0, sllVal=0))

    def power(h):
        calls["power"] += 1
        if h not in power_gpus:
            raise NVMLError_NotSupported("Not Supported")
        return 350_123                                         # milliwatts

    def fields(h, ids):
        calls["nvlink"] += 1
        assert [i[1] for i in ids] == [gc.UINT_MAX, gc.UINT_MAX]   # summed over links
        ok = h in nvlink_gpus
        return [field(m.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, clock["tx_kib"], ok),
                field(m.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, clock["rx_kib"], ok)]

    m = types.SimpleNamespace(
        NVML_CLOCK_SM=1, NVML_PCIE_UTIL_TX_BYTES=0, NVML_PCIE_UTIL_RX_BYTES=1,
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX=138, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX=139,
        NVML_SUCCESS=0, NVML_ERROR_NOT_SUPPORTED=3, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG=3,
        NVMLError=NVMLError, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=41),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(
            total=80 * 2**30, free=40 * 2**30, used=40 * 2**30),        # bytes
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetClockInfo=lambda h, kind: 1980 if kind == 1 else 0,   # MHz
        nvmlDeviceGetPcieThroughput=lambda h, c: 2_000_000 if c == 0 else 500_000,   # KB/s
        nvmlDeviceGetFieldValues=fields)
    return m, calls, clock


# --- no GPU here ---------------------------------------------------------------------------------
@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_no_gpu_nothing_is_opened_with_the_real_libraries():
    assert gc.open_gpu_counters() is None
    assert gc.NvmlBackend.open() is None     # pynvml: NVMLError_LibraryNotFound, or no pynvml
    assert gc.AmdSmiBackend.open() is None


def test_real_pynvml_without_driver_raises_inside_open_only():
    pynvml = pytest.importorskip("pynvml")
    if _has_gpu():
        pytest.skip("this machine has a GPU")
    with pytest.raises(pynvml.NVMLError):
        pynvml.nvmlInit()
    assert gc.NvmlBackend.open(pynvml) is None


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_no_gpu_sampler_logs_nothing_gpu_shaped():
    tl = Timeline()
    sampler = SystemSampler(tl, interval_s=60, gpu_counters=True).start()
    sampler.sample()
    summary = sampler.stop()
    assert sampler.gpus is None
    assert _gpu_events(tl) == []
    assert not [k for k in summary if k.startswith("gpu")]
    assert any(e["name"] == "cpu %" for e in tl.events)      # the rest as before


# --- fake NVML: units and track names --------------------------------------------------------------
def test_fake_nvml_tracks_and_units():
    nvml, calls, clock = fake_nvml()
    backend = gc.NvmlBackend.open(nvml)
    counters = gc.GpuCounters(backend)
    tl = Timeline()
    first = counters.sample(tl, 10.0)
    # GPU 0, first reading: NVLink needs two readings for a rate
    assert first[0] == {"utilization %": {"gpu": 87.0, "memory": 41.0},
                        "memory used MB": {"used": 40 * 2**30 / 1e6},
                        "power W": {"power": 350.123},
                        "sm clock MHz": {"sm": 1980.0},
                        "pcie MB/s": {"tx": 2000.0, "rx": 500.0}}
    # GPU 1: no power (NotSupported), no NVLink (field NOT_SUPPORTED); the rest is there
    assert "power W" not in first[1] and "nvlink MB/s" not in first[1]
    assert first[1]["sm clock MHz"] == {"sm": 1980.0}

    clock["t_us"] += 500_000                      # NVML's field timestamps: microseconds
    clock["tx_kib"] += 1_000_000                  # cumulative KiB
    clock["rx_kib"] += 250_000
    second = counters.sample(tl, 11.0)
    assert second[0]["nvlink MB/s"] == pytest.approx({"tx": 1_000_000 * 1024 / 1e6 / 0.5,
                                                      "rx": 250_000 * 1024 / 1e6 / 0.5})
    assert "nvlink MB/s" not in second[1]
    # a metric a GPU does not give is asked once, then left alone
    assert calls["power"] == 3                    # GPU 0 twice, GPU 1 once
    assert calls["nvlink"] == 3

    names = {e["name"] for e in _gpu_events(tl)}
    assert names == {"gpu0/utilization %", "gpu0/memory used MB", "gpu0/power W",
                     "gpu0/sm clock MHz", "gpu0/pcie MB/s", "gpu0/nvlink MB/s",
                     "gpu1/utilization %", "gpu1/memory used MB", "gpu1/sm clock MHz",
                     "gpu1/pcie MB/s"}
    assert all(e["ph"] == "C" for e in _gpu_events(tl))

    summary = counters.summary()
    assert summary["gpu_0_power_watts_mean"] == pytest.approx(350.123)
    assert summary["gpu_0_memory_used_MB_max"] == pytest.approx(40 * 2**30 / 1e6)
    assert summary["gpu_0_nvlink_tx_MB_per_s_mean"] == pytest.approx(2048.0)
    assert "gpu_1_power_watts_mean" not in summary
    # MLflow: grouped per GPU, and back to the flat key
    assert metric_name("gpu_0_power_watts_mean") == "gpu/0/power_watts_mean"
    assert flat_name("gpu/0/power_watts_mean") == "gpu_0_power_watts_mean"


def test_nvml_without_devices_is_nothing():
    nvml, _, _ = fake_nvml()
    nvml.nvmlDeviceGetCount = lambda: 0
    assert gc.NvmlBackend.open(nvml) is None


def _patched_open(monkeypatch):
    nvml, _, _ = fake_nvml()
    opened = []

    def open_counters(enabled=True):
        opened.append(enabled)
        return gc.GpuCounters(gc.NvmlBackend.open(nvml)) if enabled else None
    monkeypatch.setattr(gc, "open_gpu_counters", open_counters)
    return opened


def _one_tick(monkeypatch, gpu_counters: bool):
    """(the counters opened, the GPU events drawn, the summary) of one sampler tick."""
    opened = _patched_open(monkeypatch)
    tl = Timeline()
    sampler = SystemSampler(tl, interval_s=60, gpu_counters=gpu_counters).start()
    sampler.sample()
    summary = sampler.stop()
    return opened, _gpu_events(tl), summary


def test_sampler_draws_gpu_tracks_and_summary_when_on(monkeypatch):
    opened, events, summary = _one_tick(monkeypatch, True)
    assert opened == [True]
    assert {"gpu0/power W", "gpu1/pcie MB/s"} <= {e["name"] for e in events}
    assert summary["gpu_1_utilization_percent_mean"] == 87.0


def test_gpu_counters_false_is_off(monkeypatch):
    opened, events, summary = _one_tick(monkeypatch, False)
    assert opened == []                            # NVML not even initialised
    assert events == [] and not [k for k in summary if k.startswith("gpu")]


# --- AMD: amdsmi's dicts (percent, MB, W, MHz; "N/A" where a GPU does not say) --------------------
def test_fake_amdsmi():
    a = types.SimpleNamespace(
        AmdSmiClkType=types.SimpleNamespace(GFX=0),
        amdsmi_init=lambda: None, amdsmi_shut_down=lambda: None,
        amdsmi_get_processor_handles=lambda: ["h0"],
        amdsmi_get_gpu_activity=lambda h: {"gfx_activity": 95, "umc_activity": 30,
                                           "mm_activity": "N/A"},
        amdsmi_get_gpu_vram_usage=lambda h: {"vram_total": 196592, "vram_used": 1024},
        amdsmi_get_power_info=lambda h: {"current_socket_power": "N/A",
                                         "average_socket_power": 612},
        amdsmi_get_clock_info=lambda h, kind: {"clk": 2100, "min_clk": 500, "max_clk": 2100})
    counters = gc.GpuCounters(gc.AmdSmiBackend.open(a))
    tl = Timeline()
    got = counters.sample(tl, 1.0)[0]
    assert got == {"utilization %": {"gpu": 95.0, "memory": 30.0},
                   "memory used MB": {"used": 1024 * 2**20 / 1e6},
                   "power W": {"power": 612.0}, "sm clock MHz": {"sm": 2100.0}}
