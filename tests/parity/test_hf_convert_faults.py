"""`weft convert --from hf:DIR` faults against transformers: a GPT-2 (and Llama) with an untied
head (tie_word_embeddings false) evaluates to transformers' loss and round-trips bit for bit; a
tensor the converter would not use is refused by name; and every config.json value is validated
(zero, negative, wrong JSON type, missing, NaN, huge, non-divisible heads) with one error line
naming the file and key, never a signal or a LibTorch message."""
import copy
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import BUILD, check, tmpdir, weft  # noqa: E402

DATASET_TOOL = os.path.join(BUILD, "tests", "weft_dataset_tool")
V, T, WINDOWS = 257, 32, 6


def gpt2_untied():
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      tie_word_embeddings=False, bos_token_id=V - 1, eos_token_id=V - 1))


def llama(tied):
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64,
                                        rms_norm_eps=1e-5, tie_word_embeddings=tied))


def save(model, path):
    torch.manual_seed(0)
    model = model.float().eval()
    with torch.no_grad():  # distinct random weights; an untied head must differ from the embedding
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path, safe_serialization=True)
    return model


def dataset(work):
    """One document of WINDOWS * T + 1 tokens: `weft eval` reads exactly WINDOWS windows of T + 1."""
    tokens = torch.randint(0, V, (WINDOWS * T + 1,), generator=torch.Generator().manual_seed(3))
    prefix = os.path.join(work, "tokens")
    subprocess.run([DATASET_TOOL, "write", prefix, "8"], input=" ".join(map(str, tokens.tolist())) + "\n",
                   text=True, check=True)
    return prefix, tokens


def eval_parity(name, model, work, prefix, tokens):
    hf_dir, ckpt, back = (os.path.join(work, name + s) for s in ("_hf", "_ckpt", "_back"))
    model = save(model, hf_dir)
    weft("convert", "--from", "hf:" + hf_dir, "--to", "ckpt:" + ckpt)
    p = weft("eval", "--checkpoint", ckpt, "--data", prefix, "--set", f"train.seq_len={T}")
    got = float([l for l in p.stdout.splitlines() if l.startswith("eval_loss=")][0].split("=")[1])
    windows = torch.stack([tokens[i * T:i * T + T + 1] for i in range(WINDOWS)])  # (W, T+1)
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, V).double(), windows[:, 1:].reshape(-1)).item()
    rel = abs(got - ref) / ref
    check(rel < 1e-5, f"{name}: weft eval loss {got:.6f} equals transformers' {ref:.6f} (rel {rel:.1e})")

    weft("convert", "--from", "ckpt:" + ckpt, "--to", "hf:" + back)
    a = load_file(os.path.join(hf_dir, "model.safetensors"))
    b = load_file(os.path.join(back, "model.safetensors"))
    same = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    check(same, f"{name}: hf -> weft -> hf gives the same {len(a)} tensors bit for bit "
                f"(only in source: {sorted(set(a) - set(b))}, only in export: {sorted(set(b) - set(a))})")
    with open(os.path.join(hf_dir, "config.json")) as f1, open(os.path.join(back, "config.json")) as f2:
        t1, t2 = json.load(f1).get("tie_word_embeddings"), json.load(f2).get("tie_word_embeddings")
    check(t1 == t2, f"{name}: exported tie_word_embeddings {t2} as in the source ({t1})")
    return hf_dir


def expect_refusal(what, hf_dir, work, *needles):
    p = weft("convert", "--from", "hf:" + hf_dir, "--to", "ckpt:" + os.path.join(work, "refused"), check=False)
    lines = p.stderr.strip().splitlines()
    ok = (0 < p.returncode < 128 and len(lines) == 1 and lines[0].startswith("weft convert: error:")
          and all(n in lines[0] for n in needles))
    check(ok, f"{what}: exit {p.returncode}, one line naming {needles}: {p.stderr.strip()!r}")


def extra_tensor(src, work):
    bad = os.path.join(work, "extra_tensor_hf")
    shutil.copytree(src, bad)
    path = os.path.join(bad, "model.safetensors")
    tensors = load_file(path)
    tensors["transformer.h.0.attn.mystery.weight"] = torch.zeros(3)
    save_file(tensors, path, metadata={"format": "pt"})
    expect_refusal("unknown tensor", bad, work, "transformer.h.0.attn.mystery.weight", "model.safetensors")
    # A head saved with a config that says tied would be dropped (or replaced by wte) silently.
    tied = os.path.join(work, "tied_but_head_differs_hf")
    shutil.copytree(src, tied)
    with open(os.path.join(tied, "config.json")) as f:
        cfg = json.load(f)
    cfg["tie_word_embeddings"] = True
    with open(os.path.join(tied, "config.json"), "w") as f:
        json.dump(cfg, f)
    expect_refusal("tied config with a different head", tied, work, "lm_head.weight", "tie_word_embeddings")


def mutations(family):
    """(description, edit of the config dict, key the error must name)."""
    if family == "gpt2":
        heads, width, layers, vocab = "n_head", "n_embd", "n_layer", "vocab_size"
        extra = [("n_positions zero", lambda c: c.update(n_positions=0), "n_positions"),
                 ("n_inner negative", lambda c: c.update(n_inner=-4), "n_inner"),
                 ("layer_norm_epsilon NaN", lambda c: c.update(layer_norm_epsilon=float("nan")), "layer_norm_epsilon"),
                 ("layer_norm_epsilon zero", lambda c: c.update(layer_norm_epsilon=0.0), "layer_norm_epsilon"),
                 ("tie_word_embeddings a string", lambda c: c.update(tie_word_embeddings="no"), "tie_word_embeddings")]
    else:
        heads, width, layers, vocab = "num_attention_heads", "hidden_size", "num_hidden_layers", "vocab_size"
        extra = [("num_key_value_heads zero", lambda c: c.update(num_key_value_heads=0), "num_key_value_heads"),
                 ("num_key_value_heads not dividing heads", lambda c: c.update(num_key_value_heads=3), "num_key_value_heads"),
                 ("intermediate_size negative", lambda c: c.update(intermediate_size=-1), "intermediate_size"),
                 ("rms_norm_eps NaN", lambda c: c.update(rms_norm_eps=float("nan")), "rms_norm_eps"),
                 ("rms_norm_eps infinite", lambda c: c.update(rms_norm_eps=float("inf")), "rms_norm_eps"),
                 ("rms_norm_eps a string", lambda c: c.update(rms_norm_eps="1e-5"), "rms_norm_eps"),
                 ("max_position_embeddings zero", lambda c: c.update(max_position_embeddings=0), "max_position_embeddings"),
                 ("rope_theta negative", lambda c: c.setdefault("rope_parameters", {}).update(rope_theta=-1.0), "rope_theta"),
                 ("rope_scaling yarn beside rope_parameters", lambda c: c.update(rope_scaling={"rope_type": "yarn", "factor": 2.0}),
                  "rope_scaling.rope_type"),
                 ("rope_parameters yarn", lambda c: c.setdefault("rope_parameters", {}).update(rope_type="yarn"), "yarn"),
                 ("odd head dim", lambda c: c.update(**{width: 60, heads: 4, "head_dim": 15}), "must be even"),
                 ("head_dim disagrees", lambda c: c.update(head_dim=32), "head_dim")]
    return [
        (f"{heads} zero", lambda c: c.update({heads: 0}), heads),
        (f"{heads} negative", lambda c: c.update({heads: -2}), heads),
        (f"{heads} a string", lambda c: c.update({heads: "4"}), heads),
        (f"{heads} a float", lambda c: c.update({heads: 4.5}), heads),
        (f"{heads} null", lambda c: c.update({heads: None}), heads),
        (f"{heads} missing", lambda c: c.pop(heads), heads),
        (f"{width} not divisible by {heads}", lambda c: c.update({width: 66}), heads),
        (f"{width} zero", lambda c: c.update({width: 0}), width),
        (f"{width} huge", lambda c: c.update({width: 2**40}), width),
        (f"{width} beyond int64", lambda c: c.update({width: 2**70}), width),
        (f"{layers} zero", lambda c: c.update({layers: 0}), layers),
        (f"{layers} a list", lambda c: c.update({layers: [2]}), layers),
        (f"{vocab} negative", lambda c: c.update({vocab: -56}), vocab),
        (f"{vocab} zero", lambda c: c.update({vocab: 0}), vocab),
        (f"{vocab} missing", lambda c: c.pop(vocab), vocab),
        (f"{vocab} huge", lambda c: c.update({vocab: 2**62}), vocab),
        (f"{vocab} 1e30", lambda c: c.update({vocab: 1e30}), vocab),
        (f"{vocab} true", lambda c: c.update({vocab: True}), vocab),
    ] + extra


def config_fuzz(family, src, work):
    with open(os.path.join(src, "config.json")) as f:
        base = json.load(f)
    for what, edit, key in mutations(family):
        bad = os.path.join(work, "mutated_" + family)
        shutil.rmtree(bad, ignore_errors=True)
        os.makedirs(bad)
        os.symlink(os.path.join(src, "model.safetensors"), os.path.join(bad, "model.safetensors"))
        cfg = copy.deepcopy(base)
        edit(cfg)
        with open(os.path.join(bad, "config.json"), "w") as f:
            json.dump(cfg, f)  # NaN and Infinity as Python writes them
        expect_refusal(f"{family} config.json {what}", bad, work, os.path.join(bad, "config.json"), key)


def main():
    work = tmpdir("hf_faults")
    prefix, tokens = dataset(work)
    gpt2_dir = eval_parity("gpt2_untied", gpt2_untied(), work, prefix, tokens)
    llama_dir = eval_parity("llama_untied", llama(False), work, prefix, tokens)
    eval_parity("llama_tied", llama(True), work, prefix, tokens)
    extra_tensor(gpt2_dir, work)
    config_fuzz("gpt2", gpt2_dir, work)
    config_fuzz("llama", llama_dir, work)


if __name__ == "__main__":
    main()
