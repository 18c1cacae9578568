"""Weights as flat bytes: flatten, zero-copy views, copy into parameters, publish.

A policy version is described by a manifest ``((name, dtype, shape, offset, nbytes), ...)``
and travels as the tensors' raw bytes: ONE contiguous uint8 numpy buffer (``flatten``; local
mode, checkpoints, tests) or, through the object store, a dict ``name -> uint8 bytes`` put as
one object (``Publisher``). numpy arrays cross Ray's object store zero-copy (a torch
state_dict is pickled and copied), so a receiver maps each tensor as a view of the bytes and
copies it once, into its parameters (``load_into``; ``unflatten_views`` reads either form).

Publishing costs one copy on the learner's side when a tensor's bytes already are what
travels (CPU, contiguous, the workers' dtype: ``ray.put`` copies them straight out of the
parameter) and two otherwise (cast or device-to-host into a staging buffer reused across
versions, then the put); the receiver's copy-in is the third or second. bfloat16 has no numpy dtype: it is stored as its raw 16 bits
(an int16 view) and viewed back as bfloat16 on receipt. Offsets are 64-byte aligned so
every view is aligned for any dtype and for vectorised copies.

Versions only go forward (``VersionedWeights``): a worker never goes back to an older
policy, and a re-sent version is ignored.

``ray`` is imported only inside ``publish``/``fetch``; the rest is numpy + torch.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch

from actors.types import WeightsRef

log = logging.getLogger(__name__)

Wire = np.ndarray | dict[str, np.ndarray]
"""A version's bytes: one flat uint8 buffer, or a dict ``name -> uint8 bytes`` (published)."""

ALIGN = 64
"""Byte alignment of every tensor's offset in the flat buffer."""

UNSYNCED = -1
"""Version of a worker's weights before it has loaded any published version."""

# dtype name -> (torch dtype, numpy dtype of the stored bits). bfloat16 ships as int16 bits.
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float32": (torch.float32, np.dtype(np.float32)),
    "float64": (torch.float64, np.dtype(np.float64)),
    "float16": (torch.float16, np.dtype(np.float16)),
    "bfloat16": (torch.bfloat16, np.dtype(np.int16)),
    "int64": (torch.int64, np.dtype(np.int64)),
    "int32": (torch.int32, np.dtype(np.int32)),
    "int8": (torch.int8, np.dtype(np.int8)),
    "uint8": (torch.uint8, np.dtype(np.uint8)),
    "bool": (torch.bool, np.dtype(np.bool_)),
}
_NAME_OF = {t: name for name, (t, _) in DTYPES.items()}
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class ManifestError(ValueError):
    """A flat buffer and its manifest do not describe each other (or the receiver)."""


class StaleWeightsError(ValueError):
    """A weights version that is not newer than the one already held."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16 -> 'bfloat16'``; an unsupported dtype lists the supported ones."""
    if dtype not in _NAME_OF:
        raise ManifestError(
            f"dtype {dtype} cannot travel in a flat buffer; supported: {sorted(DTYPES)}"
        )
    return _NAME_OF[dtype]


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layout(
    named_tensors: dict[str, torch.Tensor], dtype: torch.dtype | None = None
) -> tuple[tuple, int]:
    """The manifest of ``named_tensors`` in a flat buffer and the buffer's size in bytes.

    Entries keep the dict's order; each starts at a multiple of ``ALIGN`` bytes. With
    ``dtype`` set, floating tensors travel in it (e.g. an fp32 master copy shipped to
    bfloat16 rollout workers)."""
    if not named_tensors:
        raise ManifestError("flatten: no tensors given; pass the trainable parameters")
    entries, offset = [], 0
    for name, t in named_tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ManifestError(f"flatten: {name!r} is a {type(t).__name__}, not a tensor")
        out = dtype if dtype is not None and t.is_floating_point() else t.dtype
        nbytes = t.numel() * torch.empty((), dtype=out).element_size()
        entries.append((name, dtype_name(out), tuple(t.shape), offset, nbytes))
        offset = _aligned(offset + nbytes)
    return tuple(entries), offset


def _wire_bytes(t: torch.Tensor, dt: str) -> np.ndarray | None:
    """``t``'s bytes as a uint8 numpy view when they already are what travels (on the CPU,
    contiguous, in the wire dtype ``dt``); None when they need a staging copy."""
    t = t.detach()
    if t.device.type != "cpu" or t.dtype != DTYPES[dt][0] or not t.is_contiguous():
        return None
    return t.reshape(-1).view(torch.uint8).numpy()


@torch.no_grad()
def flatten_into(buffer: np.ndarray, named_tensors: dict[str, torch.Tensor], manifest) -> None:
    """Copy each tensor straight into its place in ``buffer``: one copy per byte, no
    intermediate tensor (a cast or a device-to-host move happens in the same pass)."""
    for name, dt, shape, off, nbytes in manifest:
        src = named_tensors[name].detach()
        raw = _wire_bytes(src, dt)
        if raw is not None:
            # same bytes: one single-threaded memcpy (torch's threaded copy_ is no faster
            # at memory bandwidth and competes with the learner's threads)
            buffer[off : off + nbytes] = raw
        else:
            dst = torch.from_numpy(buffer[off : off + nbytes]).view(DTYPES[dt][0]).view(shape)
            dst.copy_(src)


def flatten(
    named_tensors: dict[str, torch.Tensor], dtype: torch.dtype | None = None
) -> tuple[np.ndarray, tuple]:
    """Pack tensors into one new uint8 buffer; returns ``(buffer [nbytes], manifest)``
    (``layout`` says where each goes; padding is zero)."""
    manifest, size = layout(named_tensors, dtype)
    buffer = np.zeros(size, dtype=np.uint8)  # [total bytes]
    flatten_into(buffer, named_tensors, manifest)
    return buffer, manifest


def _check_entry(i: int, entry, size: int | None) -> tuple:
    where = f"manifest[{i}]"
    if not isinstance(entry, (tuple, list)) or len(entry) != 5:
        raise ManifestError(
            f"{where}={entry!r}: expected (name, dtype, shape, offset, nbytes); "
            "build the manifest with actors.weights.flatten"
        )
    name, dt, shape, offset, nbytes = entry
    where = f"{where} ({name!r})"
    if dt not in DTYPES:
        raise ManifestError(f"{where}: dtype {dt!r} is not one of {sorted(DTYPES)}")
    itemsize = DTYPES[dt][1].itemsize
    if math.prod(shape) * itemsize != nbytes:
        raise ManifestError(
            f"{where}: nbytes={nbytes} but shape {tuple(shape)} of {dt} needs "
            f"{math.prod(shape) * itemsize}"
        )
    if offset % ALIGN:
        raise ManifestError(f"{where}: offset {offset} is not a multiple of {ALIGN}")
    if size is not None and (offset < 0 or offset + nbytes > size):
        raise ManifestError(
            f"{where}: bytes [{offset}, {offset + nbytes}) fall outside the {size}-byte buffer; "
            "the buffer and manifest come from different versions"
        )
    return name, dt, tuple(shape), offset, nbytes


def _is_bytes(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 1


def unflatten_views(buffer: Wire, manifest) -> dict[str, torch.Tensor]:
    """Tensors that are views of ``buffer`` (no copy), one per manifest entry.

    ``buffer`` is one flat uint8 buffer (entries at their offsets) or a dict ``name -> uint8
    bytes`` (what ``Publisher`` puts; offsets unused). The views alias it: read-only memory
    (as ``ray.get`` returns) gives read-only views, so copy out of them, never write into them.
    """
    parts = buffer if isinstance(buffer, dict) else None
    if parts is None and not _is_bytes(buffer):
        raise ManifestError(
            f"buffer must be a 1-D uint8 numpy array or a dict of them, got "
            f"{type(buffer).__name__} {getattr(buffer, 'dtype', '')} "
            f"{getattr(buffer, 'shape', '')}"
        )
    out, seen = {}, set()
    for i, entry in enumerate(manifest):
        name, dt, shape, offset, nbytes = _check_entry(i, entry, None if parts else buffer.size)
        if name in seen:
            raise ManifestError(f"manifest[{i}]: name {name!r} appears twice")
        seen.add(name)
        if parts is None:
            raw = buffer[offset : offset + nbytes]
        else:
            raw = parts.get(name)
            if not _is_bytes(raw) or raw.size != nbytes:
                got = (
                    "missing"
                    if raw is None
                    else f"{type(raw).__name__} {getattr(raw, 'shape', '')}"
                )
                raise ManifestError(
                    f"manifest[{i}] ({name!r}): needs {nbytes} uint8 bytes in the published "
                    f"dict, got {got}; the weights and manifest come from different versions"
                )
        arr = raw.view(DTYPES[dt][1]).reshape(shape)  # view, no copy
        with warnings.catch_warnings():
            # torch warns on read-only arrays (object-store buffers); the views are read only.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(arr)
        out[name] = t.view(torch.bfloat16) if dt == "bfloat16" else t
    return out


@torch.no_grad()
def load_into(params: dict[str, torch.nn.Parameter], buffer: Wire, manifest) -> int:
    """Copy every manifest tensor into the parameter of the same name; returns bytes copied.

    Names must match both ways, and shapes and dtypes exactly; a mismatch names the
    parameter and both sides.
    """
    views = unflatten_views(buffer, manifest)
    missing = sorted(set(params) - set(views))
    extra = sorted(set(views) - set(params))
    if missing or extra:
        raise ManifestError(
            f"weights do not match the receiver's parameters: {len(missing)} missing from the "
            f"manifest {missing[:5]}, {len(extra)} unknown to the receiver {extra[:5]}; "
            "publisher and receiver must use the same model and trainable-parameter split"
        )
    copied = 0
    for name, src in views.items():
        p = params[name]
        if tuple(p.shape) != tuple(src.shape):
            raise ManifestError(
                f"{name}: manifest shape {tuple(src.shape)} != parameter shape {tuple(p.shape)}"
            )
        if p.dtype != src.dtype:
            raise ManifestError(
                f"{name}: manifest dtype {src.dtype} != parameter dtype {p.dtype}; "
                "publish with flatten(..., dtype=<the workers' dtype>)"
            )
        # Same dtype: copy the raw bits through an integer view (CPU bf16 copy_ is ~5x slower).
        bits = _BITS[src.element_size()]
        p.view(bits).copy_(src.view(bits))
        copied += src.numel() * src.element_size()
    return copied


class Publisher:
    """Publishes versions as one object each, copying only what must be copied.

    A tensor whose bytes already are what travels (``_wire_bytes``: CPU, contiguous, the
    workers' dtype) goes to ``ray.put`` as a view of the parameter itself: the put is its one
    copy. Any other (a cast, a GPU tensor, a strided view) is first written into ONE staging
    buffer, allocated once and reused (``flatten_into``: cast and copy in one pass), and put
    from there. ``ray.put`` has copied everything when it returns, so the learner may change
    its parameters, and the next version may overwrite the staging buffer, while workers
    still read this one from the store. Without Ray (local mode) the ref holds a flat buffer
    of its own per version (``flatten``).
    """

    def __init__(self):
        self._buffer: np.ndarray | None = None
        self._manifest: tuple | None = None  # of the staged tensors, in the staging buffer

    def publish(
        self,
        named_tensors: dict[str, torch.Tensor],
        version: int,
        dtype: torch.dtype | None = None,
        use_ray: bool | None = None,
    ) -> WeightsRef:
        """Put ONE object per version (a dict ``name -> uint8 bytes``); returns the
        ``WeightsRef`` workers load.

        ``use_ray=None`` puts into the object store when Ray is initialised and keeps a flat
        buffer otherwise (local mode); ``True``/``False`` force either.
        """
        if not isinstance(version, int) or version < 0:
            raise StaleWeightsError(f"version={version!r}: published versions are integers >= 0")
        if use_ray is None:
            use_ray = _ray_initialised()
        if not use_ray:
            buffer, manifest = flatten(named_tensors, dtype)
            return WeightsRef(version, buffer, manifest)
        manifest, _ = layout(named_tensors, dtype)
        parts = {e[0]: _wire_bytes(named_tensors[e[0]], e[1]) for e in manifest}
        staged = {n: named_tensors[n] for n, b in parts.items() if b is None}
        if staged:
            staged_manifest, size = layout(staged, dtype)
            if self._buffer is None or self._manifest != staged_manifest:
                self._buffer = np.zeros(size, dtype=np.uint8)
                self._manifest = staged_manifest
            flatten_into(self._buffer, staged, staged_manifest)
            for name, _, _, off, nbytes in staged_manifest:
                parts[name] = self._buffer[off : off + nbytes]
        import ray

        return WeightsRef(version, ray.put(parts), manifest)


def publish(
    named_tensors: dict[str, torch.Tensor],
    version: int,
    dtype: torch.dtype | None = None,
    use_ray: bool | None = None,
) -> WeightsRef:
    """``Publisher().publish(...)`` with a buffer of its own (one-off publishing; a learner
    keeps one ``Publisher`` so that its staging buffer is reused)."""
    return Publisher().publish(named_tensors, version, dtype, use_ray)


def fetch(ref: WeightsRef) -> Wire:
    """The bytes of ``ref`` (``unflatten_views`` reads them): ``ray.get`` of the published
    dict (zero-copy, read-only) or the local flat buffer."""
    if isinstance(ref.ref, (np.ndarray, dict)):
        return ref.ref
    import ray

    return ray.get(ref.ref)


def _ray_initialised() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


class VersionedWeights:
    """The latest accepted ``WeightsRef``; versions strictly increase.

    ``offer`` ignores (and logs) an older or equal version; ``require_newer`` raises.
    """

    def __init__(self, owner: str = "weights"):
        self.owner = owner
        self.current: WeightsRef | None = None

    @property
    def version(self) -> int:
        return UNSYNCED if self.current is None else self.current.version

    def is_newer(self, version: int) -> bool:
        return version > self.version

    def stale_message(self, version: int) -> str:
        return (
            f"{self.owner}: refusing weights version {version}: already at version "
            f"{self.version} (versions must increase; a re-sent or late version is ignored)"
        )

    def require_newer(self, version: int) -> None:
        if not self.is_newer(version):
            raise StaleWeightsError(self.stale_message(version))

    def offer(self, ref: WeightsRef) -> bool:
        """Keep ``ref`` if it is newer than the current version; else log and return False."""
        if not self.is_newer(ref.version):
            log.warning(self.stale_message(ref.version))
            return False
        self.current = ref
        return True
