"""Parity with Hugging Face transformers: random-weight Llama (grouped-query attention, rope
theta 50000) and GPT-2 models built by transformers, converted by `weft convert`, give
transformers' logits and loss within 1e-4 relative in fp32; the reverse conversion gives back
the same tensors; `weft eval` and `weft generate` run on the converted checkpoints."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import MODEL_TOOL, check, make_dataset, run, tmpdir, weft  # noqa: E402


def llama():
    cfg = LlamaConfig(vocab_size=257, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                      num_key_value_heads=2, intermediate_size=176, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def llama31_scaled():
    cfg = LlamaConfig(vocab_size=257, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=128, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64})
    return LlamaForCausalLM(cfg)


def gpt2():
    cfg = GPT2Config(vocab_size=257, n_embd=64, n_layer=3, n_head=4, n_positions=128,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def compare(name, model, work):
    torch.manual_seed(0)
    model = model.float().eval()
    with torch.no_grad():  # larger than default init so differences would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf_dir, ckpt, back = (os.path.join(work, name + s) for s in ("_hf", "_ckpt", "_hf_back"))
    model.save_pretrained(hf_dir, safe_serialization=True)
    weft("convert", "--from", "hf:" + hf_dir, "--to", "ckpt:" + ckpt)

    tokens = torch.randint(0, 257, (2, 97), generator=torch.Generator().manual_seed(1))
    save_file({"tokens": tokens}, os.path.join(work, "tokens.safetensors"))
    out = os.path.join(work, name + "_out.safetensors")
    run([MODEL_TOOL, "logits", ckpt, os.path.join(work, "tokens.safetensors"), out])
    got = load_file(out)
    with torch.no_grad():
        ref = model(input_ids=tokens[:, :-1], labels=tokens[:, :-1].clone())
        ref_logits = ref.logits.float()
        ref_loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, 257), tokens[:, 1:].reshape(-1))
    rel = ((got["logits"] - ref_logits).abs().max() / ref_logits.abs().max()).item()
    check(rel < 1e-4, f"{name}: logits match transformers (max relative diff {rel:.2e})")
    lrel = abs(got["loss"].item() - ref_loss.item()) / abs(ref_loss.item())
    check(lrel < 1e-4, f"{name}: loss {got['loss'].item():.6f} vs transformers {ref_loss.item():.6f} (rel {lrel:.2e})")

    weft("convert", "--from", "ckpt:" + ckpt, "--to", "hf:" + back)
    a, b = load_file(os.path.join(hf_dir, "model.safetensors")), load_file(os.path.join(back, "model.safetensors"))
    for k in b:
        if not torch.equal(a[k], b[k]):
            check(False, f"{name}: {k} differs after hf -> weft -> hf")
    missing = [k for k in a if k not in b and not k.endswith("lm_head.weight")]
    check(not missing, f"{name}: every tensor round-trips ({len(b)} tensors)")
    reloaded = type(model).from_pretrained(back).float().eval()
    with torch.no_grad():
        again = reloaded(input_ids=tokens[:, :-1]).logits
    check(torch.equal(again, ref.logits), f"{name}: transformers loads weft's export with identical logits")
    return ckpt


def main():
    work = tmpdir("hf")
    ckpts = {n: compare(n, m(), work) for n, m in (("llama", llama), ("llama31", llama31_scaled), ("gpt2", gpt2))}
    prefix = make_dataset(work, documents=20)
    for name, ckpt in ckpts.items():
        p = weft("eval", "--checkpoint", ckpt, "--data", prefix, "--set", "train.seq_len=64")
        lines = [l for l in p.stdout.splitlines() if l.startswith("eval_loss=")]
        check(len(lines) == 1 and float(lines[0].split("=")[1]) > 0, f"{name}: weft eval prints {lines}")
        g = weft("generate", "--checkpoint", ckpt, "--prompt", "The fox", "--max-new-tokens", "8",
                 "--tokenizer", "byte")
        check(g.stdout.startswith("The fox"), f"{name}: weft generate continues the prompt")
    bad = os.path.join(work, "bad_hf")
    os.makedirs(bad)
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write('{"model_type": "t5", "vocab_size": 10}')
    p = weft("convert", "--from", "hf:" + bad, "--to", "ckpt:" + os.path.join(work, "x"), check=False)
    check(p.returncode != 0 and "t5" in p.stderr and "config.json" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
          f"unsupported architecture refused in one line: {p.stderr.strip()}")


if __name__ == "__main__":
    main()
