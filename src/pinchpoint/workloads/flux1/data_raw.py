"""Raw FLUX.1 data: webdataset tar shards of image + caption (CC12M / COCO as the reference
stores them: ``KEY.jpg`` or ``KEY.png``, ``KEY.txt``, and for validation ``KEY.json`` with
``{"timestep": 0..7}``), decoded with PIL, resized (bicubic, shorter side) and randomly cropped
to the configured square, as the reference's _process_cc12m_image does.

Shards are indexed once (tar headers only) so every sample is a random-access read of its
members: each rank reads exactly its slice of each global batch, in any layout, and a resumed
run starts at any step. Reads go through the storage tier (bandwidth emulation, byte counts).
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from pinchpoint.errors import DataError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class RawSample:
    shard: int
    key: str
    members: tuple          # ((ext, offset, size), ...)


def split_name(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the basename."""
    folder, base = os.path.split(name)
    key, _, ext = base.partition(".")
    return os.path.join(folder, key), ext.lower()


def index_shard(path: str, shard: int) -> list[RawSample]:
    """Every sample of one tar shard, checked: an image member and a caption member each."""
    groups: dict[str, list] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if m.isfile():
                    key, ext = split_name(m.name)
                    groups.setdefault(key, []).append((ext, m.offset_data, m.size))
    except (tarfile.TarError, OSError) as err:
        raise DataError(path, f"not a readable (uncompressed) tar shard: {err}") from err
    if not groups:
        raise DataError(path, "tar shard holds no samples")
    samples = []
    for key, members in groups.items():
        exts = {e for e, _, _ in members}
        if "txt" not in exts:
            raise DataError(path, f"sample {key!r} has no caption: every sample needs a .txt "
                                  f"member beside its image (found {sorted(exts)})")
        if not exts & set(IMAGE_EXTS):
            raise DataError(path, f"sample {key!r} has no image: expected one of "
                                  f"{', '.join(IMAGE_EXTS)} (found {sorted(exts)})")
        samples.append(RawSample(shard, key, tuple(members)))
    return samples


def list_shards(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise DataError(folder, "raw dataset folder does not exist")
    shards = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".tar"))
    if not shards:
        raise DataError(folder, "no .tar shards (webdataset image + caption shards expected)")
    return shards


class RawShards:
    """Random access to the samples of a folder of tar shards."""

    def __init__(self, folder: str, tier=None, need_timestep: bool = False):
        self.paths = list_shards(folder)
        self.tier = tier
        self.samples = [s for i, p in enumerate(self.paths) for s in index_shard(p, i)]
        self._fds: dict[int, int] = {}
        self.delay_s = 0.0
        if need_timestep:
            self.timesteps = [self._timestep(i) for i in range(len(self.samples))]

    def __len__(self) -> int:
        return len(self.samples)

    def bytes_on_disk(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def read(self, index: int) -> tuple[dict, int, float]:
        """Members of sample ``index`` as {ext: bytes}; bytes read; seconds (tier-throttled:
        the emulated part is in ``self.delay_s``, for the training process to account)."""
        sample = self.samples[index]
        fd = self._fds.get(sample.shard)
        if fd is None:   # opened lazily so DataLoader workers get their own descriptors
            fd = self._fds[sample.shard] = os.open(self.paths[sample.shard], os.O_RDONLY)
        began = time.perf_counter()
        out = {ext: os.pread(fd, size, offset) for ext, offset, size in sample.members}
        nbytes = sum(size for _, _, size in sample.members)
        if self.tier is not None:
            charge = self.tier.throttle(nbytes, len(sample.members), began, write=False)
            self.delay_s += charge.emulated_delay_seconds
        return out, nbytes, time.perf_counter() - began

    def _timestep(self, index: int) -> int:
        members, _, _ = self.read(index)
        path = self.paths[self.samples[index].shard]
        key = self.samples[index].key
        try:
            step = json.loads(members["json"])["timestep"]
        except (KeyError, ValueError, TypeError) as err:
            raise DataError(path, f"validation sample {key!r} needs a .json member with an "
                                  f"integer 'timestep' (0..7): {err}") from err
        if not isinstance(step, int) or not 0 <= step <= 7:
            raise DataError(path, f"validation sample {key!r}: timestep index {step!r} is "
                                  "outside 0..7 (t = index / 8)")
        return step

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __getstate__(self):   # descriptors do not cross into worker processes
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state


def decode_image(data: bytes, size: int, generator: torch.Generator) -> torch.Tensor:
    """(3, size, size) float in [-1, 1]: shorter side resized to ``size`` (bicubic), then a
    random crop along the longer side, as the reference."""
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img.load()
    w, h = img.size
    if (w, h) != (size, size):
        if w >= h:
            nw, nh = math.ceil(size / h * w), size
        else:
            nw, nh = size, math.ceil(size / w * h)
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        off = int(torch.randint(0, max(nw, nh) - size + 1, (1,), generator=generator))
        box = (off, 0, off + size, size) if w >= h else (0, off, size, off + size)
        img = img.crop(box)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(arr.copy()).float() / 255.0 * 2.0 - 1.0


class RawFluxDataset(torch.utils.data.Dataset):
    """Map-style: index -> decoded image, caption, timestep index and the read/decode cost."""

    def __init__(self, shards: RawShards, image_size: int, seed: int):
        self.shards, self.image_size, self.seed = shards, image_size, seed

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int) -> dict:
        before = self.shards.delay_s
        members, nbytes, read_s = self.shards.read(index)
        delay = self.shards.delay_s - before
        began = time.perf_counter()
        ext = next(e for e in IMAGE_EXTS if e in members)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)   # crop per sample
        try:
            image = decode_image(members[ext], self.image_size, gen)
        except Exception as err:   # PIL raises many types for corrupt data
            raise DataError(self.shards.paths[self.shards.samples[index].shard],
                            f"sample {self.shards.samples[index].key!r}: cannot decode "
                            f"{ext}: {err}") from err
        caption = members["txt"].decode("utf-8")
        timestep = getattr(self.shards, "timesteps", None)
        return {"image": image, "caption": caption,
                "timestep": timestep[index] if timestep else -1,
                "read_bytes": nbytes, "read_s": read_s, "read_requests": 1,
                "read_delay_s": delay, "decode_s": time.perf_counter() - began}


def collate(items: list[dict]) -> dict:
    return {"image": torch.stack([i["image"] for i in items]),
            "caption": [i["caption"] for i in items],
            "timestep": torch.tensor([i["timestep"] for i in items]),
            "read_bytes": sum(i["read_bytes"] for i in items),
            "read_s": sum(i["read_s"] for i in items),
            "read_requests": len(items),
            "read_delay_s": sum(i["read_delay_s"] for i in items),
            "decode_s": sum(i["decode_s"] for i in items)}
