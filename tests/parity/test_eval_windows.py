"""Validation counts each window once. A run whose validation split holds exactly 3 windows is
validated with micro-batch 2 and train.eval_batches 4 (more micro-batches than the windows fill);
the logged validation loss, and `weft eval --max-batches 4` and `--max-batches 3` of the same
checkpoint on a dataset holding just the validation documents, all equal the mean next-token
loss over the 3 windows computed by transformers on the exported model, within 1e-5 relative
(a window counted twice would weight them 2:3:2 or 1:2:2)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from weft_test import check, config, make_text, read_metrics, tmpdir, weft  # noqa: E402


def main():
    work = tmpdir("evalwin")
    text = make_text(os.path.join(work, "all.txt"), documents=40, seed=3)
    docs = open(text).read().strip().split("\n\n")
    # data.split 90,10 of 40 documents: validation is documents 36..39; write them on their own too.
    with open(os.path.join(work, "valid.txt"), "w") as f:
        f.write("\n\n".join(docs[36:]) + "\n")
    prefix, valid = os.path.join(work, "all"), os.path.join(work, "valid")
    weft("preprocess", "--input", text, "--tokenizer", "byte", "--output", prefix)
    weft("preprocess", "--input", os.path.join(work, "valid.txt"), "--tokenizer", "byte", "--output", valid)
    stream = np.fromfile(valid + ".bin", dtype=np.uint16).astype(np.int64)
    T = (len(stream) - 1) // 3  # exactly 3 windows of T + 1 tokens
    run = os.path.join(work, "run")
    weft("train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix, "--set", "data.split=90,10",
         "--set", f"train.seq_len={T}", "--set", f"model.max_seq_len={T}", "--set", "train.steps=2",
         "--set", "train.global_batch_size=2", "--set", "train.micro_batch_size=2", "--set", "train.eval_interval=2",
         "--set", "train.eval_batches=4", "--set", "run.dir=" + run, "--set", "run.peak_tflops=1")
    logged = [r["loss"] for r in read_metrics(run) if r.get("event") == "eval"]
    ckpt = os.path.join(run, "checkpoints", "step_00000002")
    hf = os.path.join(work, "hf")
    weft("convert", "--from", "ckpt:" + ckpt, "--to", "hf:" + hf)
    model = LlamaForCausalLM.from_pretrained(hf).float().eval()
    with torch.no_grad():
        windows = torch.tensor(np.stack([stream[k * T:k * T + T + 1] for k in range(3)]))
        logits = model(input_ids=windows[:, :-1]).logits
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1)).item()
    check(len(logged) == 1 and abs(logged[0] - ref) / ref < 1e-5,
          f"in-training validation {logged} equals transformers' mean over the 3 windows {ref:.6f}")
    for n in (4, 3):
        out = weft("eval", "--checkpoint", ckpt, "--data", valid, "--max-batches", str(n)).stdout
        got = float([l for l in out.splitlines() if l.startswith("eval_loss=")][0].split("=")[1])
        check(abs(got - ref) / ref < 1e-5, f"weft eval --max-batches {n}: {got:.6f} equals {ref:.6f}")


if __name__ == "__main__":
    main()
