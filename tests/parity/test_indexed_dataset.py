"""Parity: Weft's indexed dataset reader/writer vs megatron-core's own implementation.

Forward: datasets written by megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder (every
dtype, documents of several sequences, empty sequences) are read with `weft_dataset_tool dump`
and must match token for token, with identical document indices. Reverse: files written by
Weft's IndexedDatasetWriter (`weft_dataset_tool write`) and by run_preprocess
(`weft_dataset_tool preprocess`) are read by megatron-core's IndexedDataset.
"""
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy  # noqa: E402
import torch  # noqa: E402
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder  # noqa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_dataset_tool")

# Megatron dtype codes and the token values each can hold in these tests.
DTYPES = {
    1: (numpy.uint8, 0, 255),
    2: (numpy.int8, -128, 127),
    3: (numpy.int16, -32768, 32767),
    4: (numpy.int32, -(2 ** 31), 2 ** 31 - 1),
    5: (numpy.int64, -(2 ** 40), 2 ** 40),
    6: (numpy.float64, -(2 ** 40), 2 ** 40),
    7: (numpy.float32, -(2 ** 24), 2 ** 24),
    8: (numpy.uint16, 0, 65535),
}


def tool(*args, stdin=b""):
    res = subprocess.run([TOOL, *args], input=stdin, capture_output=True)
    assert res.returncode == 0, f"weft_dataset_tool {' '.join(args)}: {res.stderr.decode()}"
    return res.stdout.decode()


def weft_dump(prefix):
    lines = tool("dump", prefix).splitlines()
    assert lines[-2].startswith("documents:") and lines[-1].startswith("dtype: ")
    seqs = [[int(x) for x in line.split()] for line in lines[:-2]]
    docs = [int(x) for x in lines[-2].split()[1:]]
    return seqs, docs, int(lines[-1].split()[1])


def random_documents(rng, lo, hi, n_docs):
    """Documents as lists of sequences (some empty), with the dtype's extreme values included."""
    docs = []
    for d in range(n_docs):
        seqs = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(0, 40))
            seqs.append([int(v) for v in rng.integers(lo, hi, size=n, endpoint=True)])
        docs.append(seqs)
    docs[0][0] = [lo, hi, 0, 1] + docs[0][0]
    return docs


def megatron_to_weft(tmp, rng):
    checked = 0
    for code, (dtype, lo, hi) in DTYPES.items():
        prefix = os.path.join(tmp, f"mega_{numpy.dtype(dtype).name}")
        docs = random_documents(rng, lo, hi, 25)
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
        for i, seqs in enumerate(docs):
            if i % 2:  # both of Megatron's ways to add a document
                flat = [t for s in seqs for t in s]
                builder.add_document(torch.tensor(flat, dtype=torch.int64), [len(s) for s in seqs])
            else:
                for s in seqs:
                    builder.add_item(torch.tensor(s, dtype=torch.int64))
                builder.end_document()
        builder.finalize(prefix + ".idx")

        want_seqs = [s for seqs in docs for s in seqs]
        want_docs = [0]
        for seqs in docs:
            want_docs.append(want_docs[-1] + len(seqs))
        got_seqs, got_docs, got_code = weft_dump(prefix)
        assert got_code == code, f"{prefix}: dtype code {got_code} != {code}"
        assert got_docs == want_docs, f"{prefix}: document indices differ"
        assert got_seqs == want_seqs, f"{prefix}: tokens differ"
        # And megatron's reader agrees with the data we fed it (guards the test itself).
        ds = IndexedDataset(prefix)
        assert [ds[i].tolist() for i in range(len(ds))] == want_seqs
        checked += sum(map(len, want_seqs))
    print(f"megatron-core IndexedDatasetBuilder -> weft reader: {len(DTYPES)} dtypes, "
          f"{checked} tokens, document indices identical")


def weft_to_megatron(tmp, rng):
    checked = 0
    for code, (dtype, lo, hi) in DTYPES.items():
        prefix = os.path.join(tmp, f"weft_{numpy.dtype(dtype).name}")
        docs = [[int(v) for v in rng.integers(lo, hi, size=int(rng.integers(0, 50)),
                                               endpoint=True)] for _ in range(30)]
        docs[0] = [lo, hi] + docs[0]
        tool("write", prefix, str(code), stdin="".join(
            " ".join(map(str, d)) + "\n" for d in docs).encode())
        ds = IndexedDataset(prefix)
        assert DTYPES[code][0] == ds.index.dtype, f"{prefix}: megatron sees {ds.index.dtype}"
        assert len(ds) == len(docs), f"{prefix}: {len(ds)} sequences, want {len(docs)}"
        assert ds.document_indices.tolist() == list(range(len(docs) + 1))
        for i, d in enumerate(docs):
            assert ds[i].tolist() == d, f"{prefix}: sequence {i} differs"
            if len(d) > 3:  # partial reads through megatron's offset arithmetic
                assert ds.get(i, offset=1, length=2).tolist() == d[1:3]
        checked += sum(map(len, docs))
    print(f"weft IndexedDatasetWriter -> megatron-core reader: {len(DTYPES)} dtypes, "
          f"{checked} tokens identical")


def preprocess_to_megatron(tmp):
    texts = ["Hello, world!", "", "naïve café 日本語 🙂", "line\nbreak\n\nparagraph",
             "x" * 3000]
    src = os.path.join(tmp, "docs.jsonl")
    with open(src, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "id": 1}) + "\n")
    prefix = os.path.join(tmp, "out", "pre")
    out = tool("preprocess", src, "byte", prefix)
    kept = [t for t in texts if t]
    want = [list(t.encode("utf-8")) + [256] for t in kept]
    ds = IndexedDataset(prefix)
    assert ds.index.dtype == numpy.uint16, f"byte vocab (257) should give uint16: {ds.index.dtype}"
    assert [ds[i].tolist() for i in range(len(ds))] == want, "preprocess output differs"
    assert ds.document_indices.tolist() == list(range(len(kept) + 1))
    assert f"documents={len(kept)} " in out, out
    print(f"weft preprocess -> megatron-core reader: {len(kept)} documents, "
          f"{sum(map(len, want))} tokens identical")


def main():
    assert os.path.exists(TOOL), f"{TOOL} not built (ninja weft_dataset_tool)"
    rng = numpy.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        megatron_to_weft(tmp, rng)
        weft_to_megatron(tmp, rng)
        preprocess_to_megatron(tmp)
    print("parity_indexed_dataset: OK")


if __name__ == "__main__":
    main()
