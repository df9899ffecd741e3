"""bench.gpu_pack: keeping one GPU arch of a CUDA library's fatbin, on a synthetic ELF."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu_pack import FATBIN_MAGIC, keep_one_arch


def _entry(arch: int, payload: bytes) -> bytes:
    hdr = bytearray(64)
    struct.pack_into("<HHIQ", hdr, 0, 2, 0, len(hdr), len(payload))
    struct.pack_into("<I", hdr, 28, arch)
    return bytes(hdr) + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body


def _elf(section: bytes) -> bytearray:
    """A 64-bit ELF holding a null section, ``.nv_fatbin`` and ``.shstrtab``."""
    names = b"\0.nv_fatbin\0.shstrtab\0"
    data_off = 64
    str_off = data_off + len(section)
    sh_off = (str_off + len(names) + 7) // 8 * 8
    out = bytearray(sh_off + 3 * 64)
    out[:4] = b"\x7fELF"
    struct.pack_into("<Q", out, 0x28, sh_off)
    struct.pack_into("<HHH", out, 0x3A, 64, 3, 2)
    out[data_off:str_off] = section
    out[str_off : str_off + len(names)] = names
    struct.pack_into("<IIQQQQ", out, sh_off + 64, 1, 1, 0, 0, data_off, len(section))
    struct.pack_into("<IIQQQQ", out, sh_off + 128, 12, 3, 0, 0, str_off, len(names))
    return out


def test_only_the_wanted_arch_survives() -> None:
    sm90, sm80, sm120 = b"\x90" * 40, b"\x80" * 24, b"\x12" * 32
    fb = _fatbin(_entry(80, sm80), _entry(90, sm90)) + b"\0" * 8 + _fatbin(_entry(120, sm120))
    so = _elf(fb)
    before = len(so)
    assert keep_one_arch(so, 90) == (40, 56)
    assert len(so) == before  # nothing moves: offsets in the ELF stay valid
    assert sm90 in so and sm80 not in so and sm120 not in so
    assert so.count(FATBIN_MAGIC.to_bytes(4, "little")) == 2  # headers are kept


def test_missing_arch_or_fatbin_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no sm_90"):
        keep_one_arch(_elf(_fatbin(_entry(80, b"x" * 8))), 90)
    with pytest.raises(SystemExit, match=r"no \.nv_fatbin"):
        so = _elf(b"")
        so[so.index(b".nv_fatbin")] = ord("x")
        keep_one_arch(so, 90)
