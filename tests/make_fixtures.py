#!/usr/bin/env python3
"""Writes the small safetensors fixtures of tests/: the malformed files of tests/bad/ with
their list, and the well-formed inputs of tests/data/.

Each line of tests/bad/safetensors.list is: FILE<TAB>PHRASE, where PHRASE must appear in the
one-line error qlora prints for FILE (which also names the file). Regenerate with
    python3 tests/make_fixtures.py
Only the standard library is used; the fixtures are committed.
"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
cases = []


def header_file(name, header, data=b"", phrase="", raw_header=None, pad=True):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    while pad and len(h) % 8:
        h += b" "
    blob = struct.pack("<Q", len(h)) + h + data
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(blob)
    cases.append((name, phrase))


def raw_file(name, blob, phrase):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(blob)
    cases.append((name, phrase))


f32x2 = struct.pack("<2f", 1.0, 2.0)
good = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}

raw_file("empty.safetensors", b"", "shorter than the 8-byte header length")
raw_file("short.safetensors", b"\x10\x00\x00", "shorter than the 8-byte header length")
raw_file("huge_header.safetensors", struct.pack("<Q", 100_000_001) + b"{}      ",
         "exceeds the 100000000-byte limit")
raw_file("header_past_eof.safetensors", struct.pack("<Q", 4096) + b'{"a":1}',
         "header length 4096 exceeds")
header_file("truncated_data.safetensors", good, f32x2[:5], "run past the end")
header_file("bad_json.safetensors", None, f32x2, "invalid JSON",
            raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}')
header_file("not_object.safetensors", None, b"", "expected '{'", raw_header=b"[1,2,3] ")
header_file("bad_utf8.safetensors", None, b"", "not valid UTF-8", raw_header=b'{"\xff":1}')
header_file("unknown_dtype.safetensors",
            {"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, f32x2,
            "unknown dtype 'F33'")
header_file("size_mismatch.safetensors",
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, f32x2[:4],
            "need 8 bytes")
header_file("shape_not_array.safetensors",
            {"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, f32x2, "\"shape\"")
header_file("negative_dim.safetensors",
            {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, f32x2,
            "not a non-negative integer")
header_file("offsets_three.safetensors",
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}}, f32x2,
            "\"data_offsets\" must be two")
header_file("gap.safetensors",
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, f32x2 * 2 + b"\0" * 4,
            "gap before it")
header_file("overlap.safetensors",
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32x2 + f32x2[:4],
            "overlaps the previous tensor")
header_file("out_of_range.safetensors",
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [1000, 1008]}}, f32x2,
            "run past the end")
header_file("trailing_byte.safetensors", good, f32x2 + b"\0", "trailing bytes")
header_file("metadata_number.safetensors",
            {"__metadata__": {"format": 1}, **good}, f32x2, "must be a string")
header_file("duplicate.safetensors", None, f32x2 * 2, "appears twice",
            raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                       b'"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}')
header_file("overflow.safetensors",
            {"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 8]}},
            f32x2, "overflows")
header_file("nul_in_header.safetensors", None, f32x2, "is a NUL byte",
            raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}\0junk')
header_file("end_before_begin.safetensors",
            {"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, f32x2,
            "end before they begin")

# Well-formed files (not in the list): a NaN weight that quantize must refuse, and a small
# mixed-dtype input for the command-line tests.
cases_before = list(cases)
header_file("nan.safetensors", {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            struct.pack("<2f", 1.0, float("nan")))
os.makedirs(DATA, exist_ok=True)
vals = [((i * 37) % 101 - 50) / 64.0 for i in range(3 * 130)]  # deterministic, in [-0.79, 0.79]
f32 = struct.pack("<%df" % len(vals), *vals)
f16 = struct.pack("<4H", 0x3C00, 0xC000, 0x3800, 0x0000)  # 1, -2, 0.5, 0
i32 = struct.pack("<3i", 1, 2, 3)
hdr = {"__metadata__": {"format": "pt"},
       "layer.weight": {"dtype": "F32", "shape": [3, 130], "data_offsets": [0, len(f32)]},
       "layer.bias": {"dtype": "F16", "shape": [4], "data_offsets": [len(f32), len(f32) + 8]},
       "ids": {"dtype": "I32", "shape": [3], "data_offsets": [len(f32) + 8, len(f32) + 20]}}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(DATA, "small.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + f32 + f16 + i32)
cases = cases_before

with open(os.path.join(HERE, "safetensors.list"), "w") as f:
    for name, phrase in cases:
        f.write(f"{name}\t{phrase}\n")
print(f"wrote {len(cases)} fixtures")
