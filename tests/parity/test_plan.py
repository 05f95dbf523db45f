"""`weft plan` gives the published parameter count of every model-zoo config, and the same count
as Hugging Face transformers' own model classes built from the same dimensions on the meta
device (no memory allocated on either side)."""
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import REPO, check, weft  # noqa: E402

PUBLISHED = {  # the released checkpoints' counts
    "gpt2-124m": 124_439_808, "gpt2-355m": 354_823_168, "gpt2-774m": 774_030_080,
    "gpt2-1.5b": 1_557_611_200, "llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192, "llama3-8b": 8_030_261_248, "llama3-70b": 70_553_706_496,
    "llama3.1-405b": 405_853_388_800,
}


def hf_count(m):
    if m["family"] == "gpt2":
        cfg = GPT2Config(vocab_size=m["vocab_size"], n_embd=m["hidden_size"], n_layer=m["num_layers"],
                         n_head=m["num_heads"], n_inner=m["ffn_hidden_size"], n_positions=m["max_seq_len"])
        cls = GPT2LMHeadModel
    else:
        cfg = LlamaConfig(vocab_size=m["vocab_size"], hidden_size=m["hidden_size"],
                          num_hidden_layers=m["num_layers"], num_attention_heads=m["num_heads"],
                          num_key_value_heads=m.get("num_kv_heads") or m["num_heads"],
                          intermediate_size=m["ffn_hidden_size"], max_position_embeddings=m["max_seq_len"],
                          tie_word_embeddings=m.get("tie_embeddings", False))
        cls = LlamaForCausalLM
    with torch.device("meta"):
        model = cls(cfg)
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once


def main():
    configs = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    zoo = [c for c in configs if os.path.basename(c)[:-5] in PUBLISHED or "gpt3" in c]
    check(len(zoo) == 11, f"11 model-zoo configs found")
    for path in zoo:
        name = os.path.basename(path)[:-5]
        out = weft("plan", "--config", path).stdout
        n = int([l for l in out.splitlines() if l.startswith("parameters=")][0].split("=")[1])
        with open(path) as f:
            model = yaml.safe_load(f)["model"]
        ref = hf_count(model)
        check(n == ref, f"{name}: weft plan {n:,} == transformers {ref:,}")
        if name in PUBLISHED:
            check(n == PUBLISHED[name], f"{name}: equals the published {PUBLISHED[name]:,}")
        else:  # GPT-3 175B: the paper gives 175.0B, rounded
            check(round(n / 1e9) == 175, f"{name}: {n:,} rounds to the published 175B")


if __name__ == "__main__":
    main()
