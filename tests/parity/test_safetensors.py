# Parity: safetensors files written by Weft are read by the Hugging Face `safetensors` package
# (load_file / safe_open) with equal bytes, dtypes, shapes and metadata, and files written by
# `safetensors.torch.save_file` are read by Weft equally. Also checks Weft's whole-file CRC-32C
# against TensorBoard's independent pure-Python CRC-32C, and that corrupt files are refused.
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as reference_crc32c

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_io_tool")

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32,
    "U64": torch.uint64, "C64": torch.complex64, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2, "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
}
CORE = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"]
NAME_OF = {v: k for k, v in DTYPES.items()}


def random_tensor(dtype, shape, gen):
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 4).to(dtype)
    if dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(2**62)), min(info.max, 2**62)
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


def raw_bytes(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def make_tensors():
    """Every dtype in several shapes (0-d, empty, odd sizes), plus special float values."""
    gen = torch.Generator().manual_seed(7)
    tensors = {}
    for name, dtype in DTYPES.items():
        for shape in [(), (0,), (3, 0, 2), (5,), (3, 7), (2, 3, 4)]:
            tensors[f"{name.lower()}.{'x'.join(map(str, shape)) or 'scalar'}"] = \
                random_tensor(dtype, shape, gen)
    tensors["model.layers.0.attn.wq.weight"] = torch.randn(384, 512, generator=gen).bfloat16()
    tensors["special.f32"] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"),
                                           1e-45, 3.4e38])
    tensors["special.bf16"] = tensors["special.f32"].bfloat16()
    return tensors


METADATA = {"format": "pt", "weft.step": "1200", "note": "ünïcode, \"quotes\" and\nnewlines"}


def tool(*args, stdin=None, check=True):
    res = subprocess.run([TOOL, *args], input=stdin, capture_output=True, text=True)
    if check:
        assert res.returncode == 0, f"weft_io_tool {' '.join(args)} failed: {res.stderr}"
    return res


def file_crc(path):
    with open(path, "rb") as f:
        return reference_crc32c(f.read())


def header_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def check_weft_to_python(tmp, tensors):
    path = os.path.join(tmp, "weft.safetensors")
    spec = {"metadata": METADATA, "tensors": []}
    expected = {}
    for name, t in tensors.items():
        spec["tensors"].append({"name": name, "dtype": NAME_OF[t.dtype], "shape": list(t.shape),
                                "hex": raw_bytes(t).hex()})
        expected[name] = t
    # Non-contiguous input: weft is handed a 2-D tensor and writes its transpose.
    base = torch.arange(35, dtype=torch.float32).reshape(5, 7)
    spec["tensors"].append({"name": "transposed", "dtype": "F32", "shape": [5, 7],
                            "hex": raw_bytes(base).hex(), "transpose": True})
    expected["transposed"] = base.t()
    result = json.loads(tool("st-write", path, stdin=json.dumps(spec)).stdout)

    assert result["bytes"] == os.path.getsize(path), (result, os.path.getsize(path))
    assert result["crc32c"] == file_crc(path), (result, file_crc(path))
    n, header = header_of(path)
    assert n % 8 == 0, n
    assert [k for k in header if k != "__metadata__"] == list(expected), "tensor order differs"

    loaded = load_file(path)
    assert set(loaded) == set(expected), set(loaded) ^ set(expected)
    for name, t in expected.items():
        got = loaded[name]
        assert got.dtype == t.dtype and got.shape == t.shape, (name, got.dtype, got.shape)
        assert raw_bytes(got) == raw_bytes(t), f"{name}: bytes differ"
        if t.dtype in (torch.float32, torch.int64, torch.bfloat16) and t.numel():
            assert torch.equal(got, t) or t.isnan().any(), name
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == METADATA, f.metadata()
        assert set(f.keys()) == set(expected)
        sl = f.get_slice("model.layers.0.attn.wq.weight")[10:20, 3:9]
        assert torch.equal(sl, expected["model.layers.0.attn.wq.weight"][10:20, 3:9])
    print(f"weft -> safetensors: {len(expected)} tensors ({len(DTYPES)} dtypes incl. BF16/F8, 0-d, "
          f"empty, non-contiguous) equal in bytes, dtype, shape; metadata equal; whole-file "
          f"CRC-32C matches a reference implementation ({result['crc32c']:#010x})")

    for meta in ({}, {"only": "metadata"}):
        p = os.path.join(tmp, "empty.safetensors")
        tool("st-write", p, stdin=json.dumps({"metadata": meta, "tensors": []}))
        assert load_file(p) == {}
        with safe_open(p, framework="pt") as f:
            assert (f.metadata() or {}) == meta, f.metadata()
    print("weft -> safetensors: files with no tensors (with and without metadata) load")


def check_python_to_weft(tmp, tensors):
    path = os.path.join(tmp, "hf.safetensors")
    save_file(tensors, path, metadata=METADATA)
    out = json.loads(tool("st-read", path).stdout)
    assert out["metadata"] == METADATA, out["metadata"]
    assert out["crc32c"] == file_crc(path)
    got = {t["name"]: t for t in out["tensors"]}
    assert set(got) == set(tensors), set(got) ^ set(tensors)
    for name, t in tensors.items():
        g = got[name]
        assert g["dtype"] == NAME_OF[t.dtype], (name, g["dtype"])
        assert g["shape"] == list(t.shape), (name, g["shape"])
        assert bytes.fromhex(g["hex"]) == raw_bytes(t), f"{name}: bytes differ"
    # weft lists names in the order of their data in the file.
    _, header = header_of(path)
    starts = [header[t["name"]]["data_offsets"][0] for t in out["tensors"]]
    assert starts == sorted(starts), "weft's names are not in file order"
    print(f"safetensors -> weft: {len(tensors)} tensors equal in bytes, dtype, shape; metadata "
          f"equal; names in file order")

    p = os.path.join(tmp, "core.safetensors")
    core = {k: v for k, v in tensors.items() if NAME_OF[v.dtype] in CORE}
    save_file(core, p)
    out = json.loads(tool("st-read", p).stdout)
    assert out["metadata"] == {} and len(out["tensors"]) == len(core)
    print(f"safetensors -> weft: file without metadata ({len(core)} tensors, core dtypes) reads")


def check_corrupt_files_refused(tmp):
    path = os.path.join(tmp, "good.safetensors")
    save_file({"w": torch.ones(16, 16), "b": torch.zeros(16)}, path)
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    cases = {
        "truncated": data[:-1],
        "extra_byte": data + b"\0",
        "header_len_huge": struct.pack("<Q", 2**40) + data[8:],
        "header_len_past_end": struct.pack("<Q", len(data)) + data[8:],
        "header_not_json": data[:8] + b"[" + data[9:],
        "header_cut": struct.pack("<Q", n - 4) + data[8:],
        "tiny": data[:5],
    }
    for name, blob in cases.items():
        p = os.path.join(tmp, f"{name}.safetensors")
        with open(p, "wb") as f:
            f.write(blob)
        res = tool("st-read", p, check=False)
        assert res.returncode == 1, (name, res.returncode, res.stdout)
        assert p in res.stderr, (name, res.stderr)
        try:
            load_file(p)
            accepted_by_reference = True
        except Exception:
            accepted_by_reference = False
        assert not accepted_by_reference, f"{name}: the reference reader accepts it, so should weft"
    print(f"corrupt files: {len(cases)} kinds refused by weft with the path in the message "
          f"(and refused by the safetensors package too)")


def main():
    assert os.path.exists(TOOL), f"{TOOL} not found: build it (ninja weft_io_tool) or set WEFT_BUILD_DIR"
    tensors = make_tensors()
    with tempfile.TemporaryDirectory() as tmp:
        check_weft_to_python(tmp, tensors)
        check_python_to_weft(tmp, tensors)
        check_corrupt_files_refused(tmp)
    print("parity_safetensors: OK")


if __name__ == "__main__":
    main()
