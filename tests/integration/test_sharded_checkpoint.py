"""A checkpoint saved in pieces by several ranks is one model to `weft convert` and `weft
generate`: a tp=2 x pp=2 run and a one-process run of the same seed start from the same model, so
after one step at lr = 0 (the weights stay as initialised) the sharded checkpoint converts to
exactly the one-process checkpoint's Hugging Face tensors, and greedy `weft generate` from it
emits the tokens transformers' `generate(do_sample=False)` gives on that export.
metrics.jsonl carries pipeline_bubble only with pp > 1 and dp_wait_ms only with dp > 1."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from weft_test import WEFT, check, config, make_dataset, read_metrics, tmpdir, weft  # noqa: E402

PROMPT = "The quick"
EOS = 256
# vocab 258 divides by tp = 2; lr = 0 keeps the initial weights.
SETS = ["model.vocab_size=258", "train.steps=1", "optim.lr=0", "optim.min_lr=0", "train.global_batch_size=4",
        "train.micro_batch_size=1"]


def train(run_dir, prefix, nproc, *sets):
    args = ["train", "--config", config("llama-tiny.yaml"), "--set", "run.dir=" + run_dir, "--set",
            "data.prefix=" + prefix]
    for kv in [*SETS, *sets]:
        args += ["--set", kv]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    weft(*args)
    return [r for r in read_metrics(run_dir) if "event" not in r]


def generate_ids(ckpt):
    """Token ids after the prompt (byte tokenizer: one byte per token; end-of-document prints
    nothing and stops)."""
    p = subprocess.run([WEFT, "generate", "--checkpoint", ckpt, "--prompt", PROMPT, "--max-new-tokens", "16",
                        "--tokenizer", "byte"], capture_output=True)
    check(p.returncode == 0 and p.stdout.startswith(PROMPT.encode()),
          f"weft generate runs on {os.path.basename(ckpt)}: {p.stderr.decode(errors='replace')[-300:]}")
    return list(p.stdout[len(PROMPT):-1])


def main():
    work = tmpdir("sharded")
    prefix = make_dataset(work, documents=40)
    single = os.path.join(work, "single")
    sharded = os.path.join(work, "tp2_pp2")
    one = train(single, prefix, 1)
    four = train(sharded, prefix, 4, "parallel.tp=2", "parallel.pp=2")
    dp2 = train(os.path.join(work, "dp2"), prefix, 2)

    pieces = sorted(f for f in os.listdir(os.path.join(sharded, "checkpoints", "step_00000001"))
                    if f.startswith("model.rank"))
    check(len(pieces) == 4, f"the tp=2 x pp=2 checkpoint is in pieces by rank: {pieces}")
    check("pipeline_bubble" in four[0] and "dp_wait_ms" not in four[0] and
          "dp_wait_ms" in dp2[0] and "pipeline_bubble" not in dp2[0] and
          not {"dp_wait_ms", "pipeline_bubble"} & one[0].keys(),
          "metrics.jsonl: pipeline_bubble only with pp > 1, dp_wait_ms only with dp > 1")
    check(0 <= four[0]["pipeline_bubble"] < 1 and dp2[0]["dp_wait_ms"] >= 0,
          f"pipeline_bubble {four[0]['pipeline_bubble']:.3f} is a fraction, dp_wait_ms {dp2[0]['dp_wait_ms']:.2f} a duration")

    hf = {}
    for name, run_dir in (("single", single), ("sharded", sharded)):
        hf[name] = os.path.join(work, name + "_hf")
        weft("convert", "--from", "ckpt:" + run_dir, "--to", "hf:" + hf[name])
    a, b = (load_file(os.path.join(hf[n], "model.safetensors")) for n in ("single", "sharded"))
    differ = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
    check(sorted(a) == sorted(b) and not differ,
          f"convert of the sharded checkpoint equals the one-process checkpoint's export ({len(a)} tensors; differ: {differ[:3]})")

    model = LlamaForCausalLM.from_pretrained(hf["sharded"], dtype=torch.float32).eval()
    ids = torch.tensor([list(PROMPT.encode())])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                             eos_token_id=EOS, pad_token_id=EOS)[0, ids.size(1):].tolist()
    want = out[:out.index(EOS)] if EOS in out else out
    got = generate_ids(sharded)
    check(got == want, f"greedy generate from the sharded checkpoint emits transformers' tokens {want} (weft: {got})")
    print("test_sharded_checkpoint: all passed")


if __name__ == "__main__":
    main()
