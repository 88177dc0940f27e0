"""Accelerator and system presets for the planner: peak rates per precision, memory, the
two-level network (an NVLink domain, then one NIC per GPU). Presets live in conf/gpu/*.yaml
with their sources; this module reads them (planner tools run without Hydra) and turns any
``gpu`` config (dataclass, DictConfig or dict) into a frozen ``System``."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from pinchpoint.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[3] / "conf" / "gpu"
# Precision names as the submissions spell them -> the peak field that serves them.
# plan.precision -> the tensor-core rate it runs at (MXFP8: FP8 with a shared scale per 32
# values, at the FP8 rate)
PRECISIONS = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "mxfp8": "fp8", "nvfp4": "fp4",
              "mxfp4": "fp4", "fp32": "tf32"}   # fp32 matmuls run as TF32: half the BF16 rate


@dataclass(frozen=True)
class System:
    name: str
    architecture: str
    memory_gib: float
    peak_tflops: float                 # dense BF16
    peak_tflops_fp8: Optional[float]
    peak_tflops_fp4: Optional[float]
    memory_tb_per_s: float
    intra_node_gb_per_s: float         # per GPU per direction inside the NVLink domain
    nvlink_domain: int
    inter_node_gb_per_s: float         # per NIC
    gpus_per_node: int = 8
    nvlink_links: Optional[int] = None  # NVLink (xGMI) links per GPU; null = unknown
    # Ranks whose inter-node traffic shares one NIC: 1 on HGX / NVL72 (a NIC per GPU); every
    # rank of a node where the node has one link (the emulated cluster, many cloud VMs).
    gpus_per_nic: int = 1
    # Whose algorithms move the bytes (plan/network.py): nccl (hierarchical: reduce inside
    # the NVLink domain first, 1/inside of the buffer per NIC) or gloo (flat rings over the
    # group's rank order, reduce-scatter as a whole all-reduce, direct all-to-all).
    collectives: str = "nccl"
    # Seconds per sequential step of a collective on each level; null = NCCL's typical figures
    # (network.NVLINK_HOP_S, NIC_HOP_S). Measured for gloo by benchmarks/emulated_links.py.
    intra_node_hop_s: Optional[float] = None
    inter_node_hop_s: Optional[float] = None
    # Exponentials per second of the special function units (MUFU.EX2), in units of 1e12:
    # softmax's exp in fused attention runs there, beside the tensor cores (plan/compute.py
    # attention_s). null = not modelled (attention bound by its matmuls only).
    sfu_texp_per_s: Optional[float] = None
    reserved_gib: float = 6.0
    mfu: Optional[float] = None        # user override of the calibrated achieved fraction
    # Tensor-core and SFU rate sustained relative to the parts the architecture's achieved
    # fraction is fitted on, at the same datasheet peak (plan/compute.py achieved_fraction):
    # clocks under a power budget the datasheet peak does not show. 1.0 unless measured.
    sustained_rate: float = 1.0

    def peak_flops(self, precision: str) -> float:
        """Dense FLOP/s of the tensor cores at ``precision`` (bf16 | fp8 | nvfp4 | mxfp4)."""
        kind = PRECISIONS.get(precision)
        if kind is None:
            raise ConfigError("plan.precision", precision, "one of " + ", ".join(PRECISIONS))
        tflops = {"bf16": self.peak_tflops, "fp8": self.peak_tflops_fp8,
                  "fp4": self.peak_tflops_fp4, "tf32": self.peak_tflops / 2}[kind]
        if not tflops:
            have = [p for p in ("bf16", "fp8", "nvfp4") if
                    {"bf16": self.peak_tflops, "fp8": self.peak_tflops_fp8,
                     "nvfp4": self.peak_tflops_fp4}[p]]
            raise ConfigError("plan.precision", precision,
                              f"a precision {self.name} has tensor cores for: {', '.join(have)}")
        return tflops * 1e12

    @property
    def sfu_exp_per_s(self) -> Optional[float]:
        return self.sfu_texp_per_s * 1e12 if self.sfu_texp_per_s else None

    @property
    def nvlink_bytes_per_s(self) -> float:
        return self.intra_node_gb_per_s * 1e9

    @property
    def nic_bytes_per_s(self) -> float:
        return self.inter_node_gb_per_s * 1e9

    @property
    def memory_bytes_per_s(self) -> float:
        return self.memory_tb_per_s * 1e12

    @property
    def usable_bytes(self) -> float:
        return (self.memory_gib - self.reserved_gib) * 2 ** 30


_FIELDS = {f.name for f in fields(System)}


def system_from(gpu: Any) -> System:
    """A System from a ``gpu`` config node, a dict, or a preset name ("gb200")."""
    if isinstance(gpu, System):
        return gpu
    if isinstance(gpu, str):
        return preset(gpu)
    if hasattr(gpu, "items"):
        values = dict(gpu.items())
    else:
        values = {k: getattr(gpu, k) for k in _FIELDS if hasattr(gpu, k)}
    missing = {"name", "peak_tflops", "memory_gib"} - set(values)
    if missing:
        raise ConfigError("gpu", sorted(missing), "a GPU preset (+gpu=h100|h200|b200|b300|"
                          "gb200|gb300|mi300x|mi325x|mi350x|mi355x) or all of its fields")
    values.setdefault("architecture", "hopper")
    values.setdefault("peak_tflops_fp8", None)
    values.setdefault("peak_tflops_fp4", None)
    values.setdefault("memory_tb_per_s", 3.35)
    values.setdefault("intra_node_gb_per_s", 450.0)
    values.setdefault("nvlink_domain", values.get("gpus_per_node", 8))
    values.setdefault("inter_node_gb_per_s", 50.0)
    domain, per_node = int(values["nvlink_domain"]), int(values.get("gpus_per_node", 8))
    if domain < 1 or (domain % per_node and per_node % domain):
        raise ConfigError("gpu.nvlink_domain", values["nvlink_domain"],
                          f"GPUs per NVLink domain, a multiple or divisor of gpus_per_node="
                          f"{per_node} (HGX 8, NVL72 72; an NVL72 rack used as 64-GPU "
                          "segments: 64)")
    rate = values.get("sustained_rate", 1.0)
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise ConfigError("gpu.sustained_rate", values["sustained_rate"],
                          "a positive factor on the calibrated achieved fraction (1.0: the "
                          "architecture's calibration parts; GB300's: conf/gpu/gb300.yaml)")
    return System(**{k: v for k, v in values.items() if k in _FIELDS})


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_for_device(device_name: str) -> Optional[str]:
    """The conf/gpu preset a device name names, or None: torch's ``get_device_name()`` ("NVIDIA
    H100 80GB HBM3" -> h100, "NVIDIA H200 NVL" -> h200_nvl, "AMD Instinct MI300X" -> mi300x) or
    an MLPerf system's accelerator_model_name ("NVIDIA Blackwell Ultra GPU (GB300)" -> gb300,
    "NVIDIA H200-NVL-141GB" -> h200_nvl). A variant without a preset of its own (H100 PCIe or
    NVL: lower clocks, other peaks) gets none."""
    names = set(preset_names())
    words = [w for w in re.split(r"[^a-z0-9]+", device_name.lower()) if w]
    if "pcie" in words:
        return None
    for w in words:
        if w in names:
            key = f"{w}_nvl" if "nvl" in words else w
            return key if key in names else None
    return None


@lru_cache(maxsize=None)
def preset(name: str) -> System:
    """The preset conf/gpu/<name>.yaml (its comments name the datasheets)."""
    import yaml

    path = PRESET_DIR / f"{name.lower()}.yaml"
    if not path.exists():
        raise ConfigError("gpu", name, "one of " + ", ".join(preset_names()))
    return system_from(yaml.safe_load(path.read_text()))
