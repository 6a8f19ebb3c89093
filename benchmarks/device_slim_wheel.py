"""Shrink a wheel so that it fits the GPU machine's carry limit (64 MiB for the whole tree).

    python benchmarks/device_slim_wheel.py WHEEL OUT_DIR --keep-sm 90 --strip
    python benchmarks/device_slim_wheel.py WHEEL OUT_DIR --drop perth/perth_net/pretrained/

``mlx_cuda_13``'s 90 MB wheel is mostly ``libmlx.so``: 67 MB of CUDA fat binaries (one
machine-code image for each of sm_75, 80, 90, 100, 120, 121, and PTX for compute_120, in
each of 99 fat binaries) and 26 MB of static symbols. ``--keep-sm 90`` rewrites every fat
binary in place to its sm_90 images alone (an H100's and an H200's: machine code runs only on
its own major version, and the PTX is for a newer one), as ``nvcc -gencode
arch=compute_90,code=sm_90`` would have built it: the header stays where the library's
registration points, its size field shrinks, the kept images follow it unchanged and the rest
of the old bytes become zeros. ``--strip`` runs ``strip --strip-unneeded`` first (the dynamic
symbols stay). ``--drop`` leaves out files under a prefix (resemble-perth's watermark
weights: the benchmarks' reference runs perth's DummyWatermarker). Every file is stored
with LZMA, which Python's ``zipfile`` (and so pip) reads; ``RECORD`` gets the new hashes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
FATBIN_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries
ENTRY_HEADER = struct.Struct("<HHIIIIIII")  # kind, version, header size, padded size, ..., sm
ELF_SECTION = struct.Struct("<IIQQQQIIQQ")  # ELF64 section header


def elf_section(data: bytes, name: str) -> tuple[int, int] | None:
    """(file offset, size) of section ``name`` of an ELF64 little-endian file, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    sections = [ELF_SECTION.unpack_from(data, shoff + i * entsize) for i in range(count)]
    names_offset = sections[names_index][4]
    for sh_name, _type, _flags, _addr, offset, size, *_ in sections:
        start = names_offset + sh_name
        if data[start : data.index(b"\0", start)].decode() == name:
            return offset, size
    return None


def fatbin_entries(data: bytes | bytearray, start: int) -> list[tuple[int, int, int, int]]:
    """(offset, length, kind, sm) of each image of the fat binary whose header is at
    ``start``; kind 1 is PTX, 2 machine code."""
    _magic, _version, header_size, entries_size = FATBIN_HEADER.unpack_from(data, start)
    entries, position, end = [], start + header_size, start + header_size + entries_size
    while position < end:
        kind, _v, size, padded, *_unused, sm = ENTRY_HEADER.unpack_from(data, position)
        entries.append((position, size + padded, kind, sm))
        position += size + padded
    if position != end:
        raise ValueError(f"fat binary at {start}: entries overrun its size")
    return entries


def fatbin_starts(section: bytes | bytearray) -> list[int]:
    """Offsets of the fat binaries packed one after another (8-aligned) in a section."""
    starts, position = [], 0
    while position + FATBIN_HEADER.size <= len(section):
        magic, _version, header_size, entries_size = FATBIN_HEADER.unpack_from(section, position)
        if magic == FATBIN_MAGIC:
            starts.append(position)
            position += header_size + entries_size
        else:
            position += 8
    return starts


def keep_architectures(section: bytearray, keep_sm: set[int]) -> dict[str, int]:
    """Rewrite each fat binary of ``section`` in place to its machine-code images for
    ``keep_sm``; refuses a fat binary that has none (it could not run at all)."""
    counts = {"fatbins": 0, "kept": 0, "dropped": 0, "bytes_zeroed": 0}
    for start in fatbin_starts(section):
        entries = fatbin_entries(section, start)
        kept = [(o, n) for o, n, kind, sm in entries if kind == 2 and sm in keep_sm]
        if not kept:
            found = sorted({sm for _o, _n, _k, sm in entries})
            raise ValueError(f"fat binary at {start} has no image for sm {sorted(keep_sm)} "
                             f"(it has {found}); choose --keep-sm from those")  # fmt: skip
        _magic, _version, header_size, entries_size = FATBIN_HEADER.unpack_from(section, start)
        body = b"".join(bytes(section[o : o + n]) for o, n in kept)
        first, end = start + header_size, start + header_size + entries_size
        section[first : first + len(body)] = body
        section[first + len(body) : end] = bytes(end - first - len(body))
        struct.pack_into("<Q", section, start + 8, len(body))
        counts["fatbins"] += 1
        counts["kept"] += len(kept)
        counts["dropped"] += len(entries) - len(kept)
        counts["bytes_zeroed"] += entries_size - len(body)
    return counts


def slim_library(path: Path, keep_sm: set[int]) -> dict[str, int]:
    """``keep_architectures`` on the ``.nv_fatbin`` section of the shared library at
    ``path`` (rewritten in place); an empty dict when it has no such section."""
    data = bytearray(path.read_bytes())
    found = elf_section(data, ".nv_fatbin")
    if found is None:
        return {}
    offset, size = found
    section = data[offset : offset + size]
    counts = keep_architectures(section, keep_sm)
    data[offset : offset + size] = section
    path.write_bytes(data)
    return counts


def record_line(name: str, payload: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(payload)}"


def slim_wheel(
    wheel: Path, out_dir: Path, keep_sm: set[int] | None, strip: bool, drop: tuple[str, ...]
) -> dict:
    """Write the slimmed copy of ``wheel`` (same file name) into ``out_dir``; returns what
    was done."""
    from chatterbox_mlx.files import atomic_write

    report = {"wheel": wheel.name, "size_before": wheel.stat().st_size, "dropped_files": 0,
              "libraries": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(wheel) as source:
        names = [n for n in source.namelist() if not n.endswith("/")]
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        kept = [n for n in names if n != record_name and not n.startswith(drop)]
        report["dropped_files"] = len(names) - 1 - len(kept)
        out_dir.mkdir(parents=True, exist_ok=True)
        with (
            atomic_write(out_dir / wheel.name) as f,
            zipfile.ZipFile(f, "w", zipfile.ZIP_LZMA) as target,
        ):
            records = []
            for name in kept:
                payload = source.read(name)
                if keep_sm is not None and ".so" in Path(name).name and name.startswith("mlx/"):
                    payload, counts = _slim_payload(payload, Path(scratch), keep_sm, strip)
                    report["libraries"][name] = counts
                info = zipfile.ZipInfo(name, source.getinfo(name).date_time)
                info.external_attr = source.getinfo(name).external_attr
                info.compress_type = zipfile.ZIP_LZMA
                target.writestr(info, payload)
                records.append(record_line(name, payload))
            records.append(f"{record_name},,")
            target.writestr(record_name, "\n".join(records) + "\n")
    report["size_after"] = (out_dir / wheel.name).stat().st_size
    return report


def _slim_payload(payload: bytes, scratch: Path, keep_sm: set[int], strip: bool):
    library = scratch / "library.so"
    library.write_bytes(payload)
    if strip:
        tool = shutil.which("strip")
        if tool is None:
            raise RuntimeError("--strip: no `strip` on PATH; install binutils or leave --strip off")
        subprocess.run([tool, "--strip-unneeded", str(library)], check=True)
    counts = slim_library(library, keep_sm)
    counts["stripped"] = int(strip)
    return library.read_bytes(), counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("out_dir", type=Path, help="where the slimmed wheel goes (same name)")
    parser.add_argument("--keep-sm", help="comma list of CUDA architectures to keep, e.g. 90")
    parser.add_argument("--strip", action="store_true", help="strip static symbols first")
    parser.add_argument("--drop", action="append", default=[], help="path prefix to leave out")
    args = parser.parse_args(argv)
    if not args.wheel.is_file() or args.wheel.suffix != ".whl":
        parser.error(f"{args.wheel}: not a wheel file; give the path of a downloaded .whl")
    if args.wheel.resolve().parent == args.out_dir.resolve():
        parser.error("out_dir is the wheel's own folder; give another one")
    keep_sm = None
    if args.keep_sm:
        try:
            keep_sm = {int(sm) for sm in args.keep_sm.split(",")}
        except ValueError:
            parser.error(f"--keep-sm {args.keep_sm!r}: give numbers such as 90 or 80,90")
    if args.strip and keep_sm is None:
        parser.error("--strip works on the libraries --keep-sm rewrites; give --keep-sm too")
    report = slim_wheel(args.wheel, args.out_dir, keep_sm, args.strip, tuple(args.drop))
    before, after = report["size_before"] / 2**20, report["size_after"] / 2**20
    print(f"{report['wheel']}: {before:.1f} -> {after:.1f} MiB, "
          f"{report['dropped_files']} files left out", file=sys.stderr)  # fmt: skip
    for name, counts in report["libraries"].items():
        print(f"  {name}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
