"""LoRA parity with Hugging Face peft: a random tiny LlamaForCausalLM (grouped-query attention) is
imported, trained for a few LoRA steps (targets include o_proj and MLP projections, so the row-
and column-split paths both run; lr high enough that every B is far from zero), then
- the peft adapter export, loaded by peft.PeftModel.from_pretrained onto the original HF model,
  gives `weft eval --logits-out`'s logits within 1e-4 (relative to the largest logit);
- the merged export, loaded by transformers, gives the same logits within 1e-4, and every tensor
  LoRA does not target is byte-identical to the original;
- the LoRA checkpoint holds adapter tensors only (no base tensor), optimizer state only for
  them, and the base checkpoint's files are byte-identical after training."""
import glob
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import check, make_dataset, tmpdir, weft  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]  # up_proj left out on purpose
RANK, ALPHA = 4, 8


def files_digest(directory):
    h = hashlib.sha256()
    for f in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        if os.path.isfile(f):
            h.update(f.encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def tensors(step_dir, kind):
    out = {}
    for f in sorted(glob.glob(os.path.join(step_dir, f"{kind}.rank*.safetensors"))):
        out.update(load_file(f))
    return out


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main():
    work = tmpdir("lora_peft")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=257, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, intermediate_size=176, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=False)
    base_model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for p in base_model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf_dir, base_ckpt = os.path.join(work, "base_hf"), os.path.join(work, "base_ckpt")
    base_model.save_pretrained(hf_dir, safe_serialization=True)
    weft("convert", "--from", "hf:" + hf_dir, "--to", "ckpt:" + base_ckpt)
    base_digest = files_digest(base_ckpt)
    prefix = make_dataset(work, documents=40)

    run = os.path.join(work, "lora_run")
    base_cfg = os.path.join(base_ckpt, "step_00000000", "config.yaml")
    weft("train", "--config", base_cfg, "--set", "run.dir=" + run, "--set", "data.prefix=" + prefix,
         "--set", "checkpoint.init_from=" + base_ckpt, "--set", f"lora.rank={RANK}", "--set", f"lora.alpha={ALPHA}",
         "--set", "lora.dropout=0.05", "--set", "lora.target_modules=[" + ",".join(TARGETS) + "]",
         "--set", "train.steps=6", "--set", "train.seq_len=32", "--set", "train.global_batch_size=4",
         "--set", "train.micro_batch_size=2", "--set", "train.threads=1", "--set", "run.peak_tflops=1",
         "--set", "optim.lr=2e-2", "--set", "optim.weight_decay=0", "--set", "optim.warmup_steps=0",
         "--set", "run.tensorboard=false")
    step = os.path.join(run, "checkpoints", "step_00000006")

    model_t, optim_t = tensors(step, "model"), tensors(step, "optim")
    non_lora = [n for n in model_t if ".adapter.lora_" not in n]
    check(not non_lora and len(model_t) == 2 * len(TARGETS) * 2,
          f"the LoRA checkpoint holds the {len(model_t)} adapter tensors only (base tensors: {non_lora[:3]})")
    leaked = [n for n in optim_t if ".adapter.lora_" not in n]
    check(not leaked and len(optim_t) == 2 * len(model_t),
          f"optimizer state only for LoRA parameters ({len(optim_t)} tensors, others: {leaked[:3]})")
    smallest_b = min(t.abs().max().item() for n, t in model_t.items() if n.endswith("lora_B"))
    check(smallest_b > 1e-3, f"training moved every B away from zero (smallest max |B| {smallest_b:.2e})")
    check(files_digest(base_ckpt) == base_digest, "the base checkpoint's files are byte-identical after training")

    logits_file = os.path.join(work, "weft_logits.safetensors")
    weft("eval", "--checkpoint", run, "--data", prefix, "--max-batches", "1", "--logits-out", logits_file)
    got = load_file(logits_file)
    ids, weft_logits = got["input_ids"], got["logits"]
    check(ids.dtype == torch.int64 and ids.dim() == 2 and weft_logits.shape == (*ids.shape, 257),
          f"--logits-out holds input_ids {tuple(ids.shape)} int64 and logits {tuple(weft_logits.shape)} fp32")

    # The adapter, loaded by peft onto the original HF model.
    adapter_dir = os.path.join(work, "adapter")
    weft("convert", "--from", "ckpt:" + run, "--to", "hf:" + adapter_dir, "--lora-export", "adapter")
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    check(acfg["r"] == RANK and acfg["lora_alpha"] == ALPHA and sorted(acfg["target_modules"]) == sorted(TARGETS)
          and acfg["peft_type"] == "LORA" and acfg["task_type"] == "CAUSAL_LM"
          and os.path.samefile(acfg["base_model_name_or_path"], hf_dir),
          f"adapter_config.json: r, lora_alpha, target_modules, base model ({acfg['base_model_name_or_path']})")
    peft_model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(hf_dir).float(), adapter_dir).eval()
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids).logits.float()
    d = rel_diff(weft_logits, peft_logits)
    check(d < 1e-4, f"peft + adapter export reproduces weft eval's logits (max relative diff {d:.2e})")
    with torch.no_grad():
        plain = base_model(input_ids=ids).logits
    check(rel_diff(plain, peft_logits) > 1e-3, "the adapter changes the logits (the test has teeth)")

    # The merged export, loaded by transformers.
    merged_dir = os.path.join(work, "merged")
    weft("convert", "--from", "ckpt:" + run, "--to", "hf:" + merged_dir)
    merged = LlamaForCausalLM.from_pretrained(merged_dir).float().eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    d = rel_diff(weft_logits, merged_logits)
    check(d < 1e-4, f"transformers on the merged export reproduces weft eval's logits (max relative diff {d:.2e})")
    orig = load_file(os.path.join(hf_dir, "model.safetensors"))
    out = load_file(os.path.join(merged_dir, "model.safetensors"))
    untouched = [k for k in orig if not any(f".{t}." in k for t in TARGETS)]
    changed = [k for k in untouched if not torch.equal(orig[k], out[k])]
    check(untouched and not changed, f"{len(untouched)} tensors LoRA does not target are byte-identical ({changed[:3]})")


if __name__ == "__main__":
    main()
