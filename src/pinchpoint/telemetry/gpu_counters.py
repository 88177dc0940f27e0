"""Per-GPU counters read with the system sampler's tick: NVML (``nvidia-ml-py``, imported as
``pynvml``) on NVIDIA, ``amdsmi`` on AMD, where either imports and finds a GPU.

Each GPU ``i`` gets its own counter tracks on the timeline, ``gpu<i>/<metric>``:

    gpu<i>/utilization %   gpu (SM busy) and memory (memory-controller busy)
                           NVML nvmlDeviceGetUtilizationRates (percent over NVML's last sample
                           period); AMD amdsmi_get_gpu_activity gfx_activity / umc_activity
    gpu<i>/memory used MB  NVML nvmlDeviceGetMemoryInfo().used (bytes); AMD vram_used (MB)
    gpu<i>/power W         NVML nvmlDeviceGetPowerUsage (milliwatts); AMD current_socket_power
                           (or average_socket_power, watts)
    gpu<i>/sm clock MHz    NVML nvmlDeviceGetClockInfo(NVML_CLOCK_SM) (MHz); AMD GFX clock
    gpu<i>/pcie MB/s       NVML nvmlDeviceGetPcieThroughput TX/RX: KB/s over a 20 ms window
                           (NVML's own sampling, not the tick's)
    gpu<i>/nvlink MB/s     NVML field values NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX/RX with
                           scopeId UINT_MAX (all links summed): cumulative KiB, turned into a
                           rate between ticks on the fields' own microsecond timestamps

A metric a device does not support (NVMLError_NotSupported, or any NVML error for it) is dropped
for that device after its first failure, silently; the others go on. Where no GPU is visible --
no library, no driver, no device, ``telemetry.gpu_counters=false`` -- ``open_gpu_counters``
returns None and nothing GPU-shaped reaches the timeline or MLflow.

``summary()`` names the run's per-GPU means and peaks for MLflow (``gpu_<i>_<metric>``, charted
as ``gpu/<i>/<metric>``, see pinchpoint.metric_names).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)
MB = 1e6
KB = 1e3            # NVML's PCIe throughput unit, "KB/s" in nvml.h
KIB = 1024.0        # NVML's NVLink throughput counters, "KiB" in nvml.h
UINT_MAX = 0xFFFFFFFF   # an NVML field's scopeId for "summed over all links"

# (track, series) -> summary key stem and how it is summarised
_SUMMARY = {("utilization %", "gpu"): ("utilization_percent", "mean"),
            ("utilization %", "memory"): ("memory_utilization_percent", "mean"),
            ("memory used MB", "used"): ("memory_used_MB", "max"),
            ("power W", "power"): ("power_watts", "mean"),
            ("sm clock MHz", "sm"): ("sm_clock_MHz", "mean"),
            ("pcie MB/s", "tx"): ("pcie_tx_MB_per_s", "mean"),
            ("pcie MB/s", "rx"): ("pcie_rx_MB_per_s", "mean"),
            ("nvlink MB/s", "tx"): ("nvlink_tx_MB_per_s", "mean"),
            ("nvlink MB/s", "rx"): ("nvlink_rx_MB_per_s", "mean")}


class _Stats:
    def __init__(self):
        self.n, self.sum, self.max = 0, 0.0, float("-inf")

    def add(self, v: float) -> None:
        self.n, self.sum, self.max = self.n + 1, self.sum + v, max(self.max, v)


class GpuCounters:
    """A backend's readings per GPU, drawn as ``gpu<i>/...`` counter tracks and summarised."""

    def __init__(self, backend):
        self.backend = backend
        self.stats: dict[tuple[int, str, str], _Stats] = {}
        self.samples = 0

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def count(self) -> int:
        return self.backend.count

    def sample(self, timeline=None, t: Optional[float] = None) -> dict[int, dict[str, dict]]:
        """One reading of every GPU: {gpu: {track: {series: value}}}; drawn on ``timeline``."""
        readings = self.backend.read()
        self.samples += 1
        for i, tracks in readings.items():
            for track, series in tracks.items():
                if timeline is not None:
                    timeline.counter(f"gpu{i}/{track}", series, t)
                for key, value in series.items():
                    self.stats.setdefault((i, track, key), _Stats()).add(value)
        return readings

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (i, track, key), s in sorted(self.stats.items()):
            stem, how = _SUMMARY.get((track, key), (None, None))
            if stem is None or not s.n:
                continue
            if how == "mean":
                out[f"gpu_{i}_{stem}_mean"] = s.sum / s.n
            out[f"gpu_{i}_{stem}_max"] = s.max
        return out

    def close(self) -> None:
        try:
            self.backend.close()
        except Exception as err:   # telemetry never takes the run down
            log.debug("closing %s: %s", self.backend.name, err)


def open_gpu_counters(enabled: bool = True) -> Optional[GpuCounters]:
    """NVML, else amdsmi, where it imports, initialises and sees at least one GPU; else None
    (said once at debug level: a CPU machine is not an error)."""
    if not enabled:
        return None
    for opener in (NvmlBackend.open, AmdSmiBackend.open):
        backend = opener()
        if backend is not None:
            log.info("GPU counters: %d GPU(s) through %s", backend.count, backend.name)
            return GpuCounters(backend)
    return None


class _Backend:
    """What both vendors' backends share: their device handles, and dropping a metric of a
    device after its first failure (NotSupported, NoPermission, GpuIsLost, amdsmi's errors)."""
    name = ""

    def __init__(self, handles: list):
        self.handles = handles
        self.count = len(handles)
        self.dropped: set[tuple[int, str]] = set()   # (gpu, metric) this device does not give

    def _try(self, i: int, metric: str, fn: Callable[[], Any]) -> Any:
        if (i, metric) in self.dropped:
            return None
        try:
            return fn()
        except Exception as err:
            self.dropped.add((i, metric))
            log.debug("GPU %d gives no %s: %s", i, metric, err)
            return None


# --- NVIDIA ----------------------------------------------------------------------------------------
class NvmlBackend(_Backend):
    name = "nvml"

    def __init__(self, nvml, handles: list):
        super().__init__(handles)
        self.nvml = nvml
        self.last_nvlink: dict[int, tuple[int, int, int]] = {}   # gpu -> (t_us, tx_kib, rx_kib)

    @classmethod
    def open(cls, nvml: Any = None) -> Optional["NvmlBackend"]:
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return None
        try:
            nvml.nvmlInit()
        except Exception as err:   # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU here
            log.debug("NVML not available: %s", err)
            return None
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(nvml.nvmlDeviceGetCount())]
        except Exception as err:
            log.debug("NVML lists no device: %s", err)
            handles = []
        if not handles:
            _quiet(nvml.nvmlShutdown)
            return None
        return cls(nvml, handles)

    def read(self) -> dict[int, dict[str, dict[str, float]]]:
        n = self.nvml
        out: dict[int, dict[str, dict[str, float]]] = {}
        for i, h in enumerate(self.handles):
            tracks: dict[str, dict[str, float]] = {}
            util = self._try(i, "utilization", lambda: n.nvmlDeviceGetUtilizationRates(h))
            if util is not None:
                tracks["utilization %"] = {"gpu": float(util.gpu), "memory": float(util.memory)}
            mem = self._try(i, "memory", lambda: n.nvmlDeviceGetMemoryInfo(h))
            if mem is not None:
                tracks["memory used MB"] = {"used": mem.used / MB}
            mw = self._try(i, "power", lambda: n.nvmlDeviceGetPowerUsage(h))
            if mw is not None:
                tracks["power W"] = {"power": mw / 1000.0}
            sm = self._try(i, "sm clock", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
            if sm is not None:
                tracks["sm clock MHz"] = {"sm": float(sm)}
            pcie = self._try(i, "pcie", lambda: (
                n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_TX_BYTES),
                n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_RX_BYTES)))
            if pcie is not None:
                tracks["pcie MB/s"] = {"tx": pcie[0] * KB / MB, "rx": pcie[1] * KB / MB}
            nvlink = self._nvlink(i, h)
            if nvlink is not None:
                tracks["nvlink MB/s"] = nvlink
            if tracks:
                out[i] = tracks
        return out

    def _nvlink(self, i: int, h) -> Optional[dict[str, float]]:
        n = self.nvml
        fields = self._try(i, "nvlink", lambda: n.nvmlDeviceGetFieldValues(
            h, [(n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, UINT_MAX),
                (n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, UINT_MAX)]))
        if fields is None:
            return None
        if any(f.nvmlReturn != n.NVML_SUCCESS for f in fields):   # no NVLink on this GPU
            self.dropped.add((i, "nvlink"))
            return None
        tx, rx = (_field_value(n, f) for f in fields)
        now = (int(fields[0].timestamp), tx, rx)
        prev, self.last_nvlink[i] = self.last_nvlink.get(i), now
        if prev is None or now[0] <= prev[0]:
            return None                      # a rate needs two readings
        seconds = (now[0] - prev[0]) / 1e6
        return {"tx": (tx - prev[1]) * KIB / MB / seconds,
                "rx": (rx - prev[2]) * KIB / MB / seconds}

    def close(self) -> None:
        self.nvml.nvmlShutdown()


def _field_value(nvml, field) -> float:
    """An nvmlFieldValue_t's value by its valueType (NVML_VALUE_TYPE_*)."""
    attr = {getattr(nvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
            getattr(nvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
            getattr(nvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal"}.get(field.valueType,
                                                                            "ullVal")
    return float(getattr(field.value, attr))


# --- AMD -------------------------------------------------------------------------------------------
class AmdSmiBackend(_Backend):
    name = "amdsmi"

    def __init__(self, amdsmi, handles: list):
        super().__init__(handles)
        self.amdsmi = amdsmi

    @classmethod
    def open(cls, amdsmi: Any = None) -> Optional["AmdSmiBackend"]:
        if amdsmi is None:
            try:
                import amdsmi
            except Exception:    # ImportError, or the wheel without its libamd_smi.so
                return None
        try:
            amdsmi.amdsmi_init()
            handles = list(amdsmi.amdsmi_get_processor_handles())
        except Exception as err:
            log.debug("amdsmi not available: %s", err)
            return None
        if not handles:
            _quiet(amdsmi.amdsmi_shut_down)
            return None
        return cls(amdsmi, handles)

    def read(self) -> dict[int, dict[str, dict[str, float]]]:
        a = self.amdsmi
        out: dict[int, dict[str, dict[str, float]]] = {}
        for i, h in enumerate(self.handles):
            tracks: dict[str, dict[str, float]] = {}
            act = self._try(i, "utilization", lambda: a.amdsmi_get_gpu_activity(h)) or {}
            util = _numbers({"gpu": act.get("gfx_activity"), "memory": act.get("umc_activity")})
            if util:
                tracks["utilization %"] = util
            vram = self._try(i, "memory", lambda: a.amdsmi_get_gpu_vram_usage(h)) or {}
            used = _numbers({"used": vram.get("vram_used")})          # MB
            if used:
                tracks["memory used MB"] = {"used": used["used"] * 2**20 / MB}
            power = self._try(i, "power", lambda: a.amdsmi_get_power_info(h)) or {}
            watts = _numbers({"power": power.get("current_socket_power")}) or \
                _numbers({"power": power.get("average_socket_power")})
            if watts:
                tracks["power W"] = watts
            clock = self._try(i, "sm clock", lambda: a.amdsmi_get_clock_info(
                h, a.AmdSmiClkType.GFX)) or {}
            mhz = _numbers({"sm": clock.get("clk")})
            if mhz:
                tracks["sm clock MHz"] = mhz
            if tracks:
                out[i] = tracks
        return out

    def close(self) -> None:
        self.amdsmi.amdsmi_shut_down()


def _numbers(series: dict[str, Any]) -> dict[str, float]:
    """The series that are numbers (amdsmi says "N/A" for what a GPU does not report)."""
    return {k: float(v) for k, v in series.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:
        pass
