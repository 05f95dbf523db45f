"""`weft plan` gives the published parameter count of every model-zoo config, and the same count
as Hugging Face transformers' own model classes built from the same dimensions on the meta
device (no memory allocated on either side); the memory lines are 4 and 16 bytes per parameter,
flops_per_token is 6 x (matmul parameters) + 12 x layers x hidden x seq_len; with --nproc, each
pipeline rank's parameter count is the sum of transformers' tensors of the layers it holds (the
embedding on the first stage, final norm and head on the last, a tied embedding on both), and
the ideal bubble is (p - 1) / (v m + p - 1)."""
import glob
import os
import re
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


def plan_values(out):
    return {l.split("=")[0]: l.split("=", 1)[1] for l in out.splitlines() if "=" in l and " " not in l.split("=")[0]}


def stage_counts(model, family, pp, vpp):
    """Parameters held by each pipeline rank: layers balanced over pp * vpp virtual stages,
    virtual stage c * pp + r on rank r, counted from transformers' own tensors."""
    L, S = model.config.num_hidden_layers, pp * vpp
    names = dict(model.named_parameters())  # a tied head is listed once, as the embedding
    counts = [0] * pp
    for n, p in names.items():
        parts = n.split(".")
        if "layers" in parts or "h" in parts:
            layer = int(parts[parts.index("layers" if "layers" in parts else "h") + 1])
            stage = layer * S // L if L % S == 0 else None
            counts[stage % pp] += p.numel()
        elif any(k in n for k in ("embed_tokens", "wte", "wpe")):
            counts[0] += p.numel()
            if "wpe" not in n and family == "gpt2" and pp > 1:  # tied head on the last stage too
                counts[(S - 1) % pp] += p.numel()
        else:  # final norm, untied head
            counts[(S - 1) % pp] += p.numel()
    return counts


def check_layouts():
    tiny = os.path.join(REPO, "configs", "parallel-tiny.yaml")
    tiny_gpt2 = os.path.join(REPO, "configs", "parallel-tiny-gpt2.yaml")
    for path, pp, vpp in ((tiny, 4, 2), (tiny, 8, 1), (tiny_gpt2, 2, 1), (tiny_gpt2, 4, 2)):
        with open(path) as f:
            c = yaml.safe_load(f)
        m, t = c["model"], c["train"]
        dp = 8 // pp
        micro = t["global_batch_size"] // (t["micro_batch_size"] * dp)
        out = weft("plan", "--config", path, "--set", f"parallel.pp={pp}", "--set", f"parallel.vpp={vpp}",
                   "--nproc", "8").stdout
        got = [int(x) for x in re.findall(r"^rank_parameters pp=\d+ .*: (\d+) \(", out, re.M)]
        if m["family"] == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(vocab_size=m["vocab_size"], n_embd=m["hidden_size"],
                                               n_layer=m["num_layers"], n_head=m["num_heads"],
                                               n_inner=m["ffn_hidden_size"], n_positions=m["max_seq_len"]))
        else:
            model = LlamaForCausalLM(LlamaConfig(vocab_size=m["vocab_size"], hidden_size=m["hidden_size"],
                                                 num_hidden_layers=m["num_layers"], num_attention_heads=m["num_heads"],
                                                 num_key_value_heads=m["num_kv_heads"],
                                                 intermediate_size=m["ffn_hidden_size"], tie_word_embeddings=False))
        want = stage_counts(model, m["family"], pp, vpp)
        name = f"{os.path.basename(path)} pp={pp} vpp={vpp}"
        check(got == want, f"{name}: per-rank parameters {got} = transformers' tensors of each rank's layers {want}")
        v = plan_values(out)
        check(int(v["max_rank_parameters"]) == max(want), f"{name}: max_rank_parameters={v['max_rank_parameters']}")
        bubble = float(re.search(r"ideal bubble ([0-9.]+)%", out).group(1))
        ideal = 100 * (pp - 1) / (vpp * micro + pp - 1)
        check(abs(bubble - ideal) < 0.05 and f"{micro} micro-batches per step" in out,
              f"{name}, {micro} micro-batches (dp={dp}): ideal bubble {bubble}% = (p-1)/(vm+p-1) = {ideal:.2f}%")


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
        v = plan_values(out)
        gib = 1024 ** 3
        check(v["weights_gib"] == f"{n * 4 / gib:.2f}" and v["training_state_gib"] == f"{n * 16 / gib:.2f}",
              f"{name}: weights {v['weights_gib']} GiB (4 B/param), training state {v['training_state_gib']} GiB (16 B/param)")
        with open(path) as f:
            t = yaml.safe_load(f).get("train", {})
        seq = t.get("seq_len", 1024)
        matmul = ref - model["vocab_size"] * model["hidden_size"]  # the input lookup is no matmul
        if model["family"] == "gpt2":
            matmul -= model["max_seq_len"] * model["hidden_size"]  # nor the position lookup
        if model.get("tie_embeddings", model["family"] == "gpt2"):
            matmul += model["vocab_size"] * model["hidden_size"]  # the head multiplies by it
        flops = 6 * matmul + 12 * model["num_layers"] * model["hidden_size"] * seq
        check(f"{flops:.4g}" == v["flops_per_token"], f"{name}: flops_per_token={v['flops_per_token']} "
              f"= 6 x matmul parameters + 12 L C T = {flops:.4g}")
    check_layouts()


if __name__ == "__main__":
    main()
