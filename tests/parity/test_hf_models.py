"""Parity with Hugging Face transformers: random-weight Llama (grouped-query attention, rope
theta 50000) and GPT-2 models built by transformers, converted by `weft convert`, give
transformers' logits and loss within 1e-4 relative in fp32; the reverse conversion gives back
the same tensors. On the converted checkpoints `weft eval` prints transformers' mean loss over
the dataset's windows (1e-5 relative), greedy `weft generate` emits exactly the tokens of
transformers' `generate(do_sample=False)`, and sampling (--temperature/--top-k/--seed) is
reproducible per seed, differs across seeds, only draws from the top k of transformers' logits,
and with --top-k 1 equals greedy."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

from weft_test import MODEL_TOOL, WEFT, check, make_dataset, run, tmpdir, weft  # noqa: E402


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


PROMPT = "The fox"
EOS = 256  # the byte tokenizer's end-of-document id


def generate_ids(ckpt, *flags, new_tokens=20):
    """Token ids `weft generate` emits after the prompt. The byte tokenizer prints token t < 256
    as the byte t and nothing for end-of-document (where generation stops), so stdout's bytes
    after the prompt, less the final newline, are the ids."""
    p = subprocess.run([WEFT, "generate", "--checkpoint", ckpt, "--prompt", PROMPT, "--max-new-tokens",
                        str(new_tokens), "--tokenizer", "byte", *flags], capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: weft generate {flags}: {p.stderr.decode(errors='replace')}")
    out = p.stdout
    if not (out.startswith(PROMPT.encode()) and out.endswith(b"\n")):
        check(False, f"generate prints the prompt, then the tokens, then a newline: {out!r}")
    return list(out[len(PROMPT):-1])


def hf_greedy(model, new_tokens=20):
    ids = torch.tensor([list(PROMPT.encode())])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=EOS, pad_token_id=EOS,
                             attention_mask=torch.ones_like(ids))
    gen = out[0, ids.size(1):].tolist()
    return gen[:gen.index(EOS)] if EOS in gen else gen, EOS in gen


def top_k_sets(model, ids, k):
    """For each generated position, the ids among transformers' k largest logits given the
    prompt and the tokens before it."""
    seq = torch.tensor([list(PROMPT.encode()) + ids])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0]
    start = len(PROMPT)
    return [set(logits[start - 1 + i].topk(k).indices.tolist()) for i in range(len(ids))]


def hf_windows_loss(model, text_path, seq_len):
    """transformers' mean next-token loss over the dataset's consecutive windows of seq_len + 1
    tokens (every document's UTF-8 bytes followed by end-of-document), all of them."""
    with open(text_path, encoding="utf-8") as f:
        docs = [d.strip() for d in f.read().split("\n\n") if d.strip()]
    stream = [t for d in docs for t in list(d.encode()) + [EOS]]
    n = (len(stream) - 1) // seq_len
    windows = torch.tensor([stream[k * seq_len:k * seq_len + seq_len + 1] for k in range(n)])
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1)).item()


def main():
    work = tmpdir("hf")
    torch.manual_seed(1234)  # the models' initial weights, so every check (sampling included) is reproducible
    models = {n: m() for n, m in (("llama", llama), ("llama31", llama31_scaled), ("gpt2", gpt2))}
    ckpts = {n: compare(n, m, work) for n, m in models.items()}
    prefix = make_dataset(work, documents=20)
    for name, ckpt in ckpts.items():
        model = models[name]
        p = weft("eval", "--checkpoint", ckpt, "--data", prefix, "--set", "train.seq_len=64")
        lines = [l for l in p.stdout.splitlines() if l.startswith("eval_loss=")]
        ref = hf_windows_loss(model, os.path.join(work, "corpus.txt"), 64)
        got = float(lines[0].split("=")[1]) if len(lines) == 1 else float("nan")
        check(abs(got - ref) / ref < 1e-5, f"{name}: weft eval {lines} equals transformers' {ref:.6f}")

        want, stopped = hf_greedy(model)
        got = generate_ids(ckpt)
        check(got == want, f"{name}: greedy generate emits transformers' tokens {want}"
                           f"{' then end-of-document' if stopped else ''} (weft: {got})")
        check(generate_ids(ckpt, "--temperature", "0.7", "--top-k", "1", "--seed", "5") == got,
              f"{name}: --top-k 1 samples the greedy tokens")
        a = generate_ids(ckpt, "--temperature", "1.5", "--top-k", "40", "--seed", "1")
        b = generate_ids(ckpt, "--temperature", "1.5", "--top-k", "40", "--seed", "1")
        c = generate_ids(ckpt, "--temperature", "1.5", "--top-k", "40", "--seed", "2")
        check(a == b and a != c, f"{name}: same --seed, same tokens; another seed, other tokens ({a[:6]} / {c[:6]})")
        for ids, seed in ((a, 1), (c, 2)):
            allowed = top_k_sets(model, ids, 40)
            outside = [i for i, t in enumerate(ids) if t not in allowed[i]]
            check(not outside, f"{name}: seed {seed}: every sampled token is among transformers' top 40 "
                               f"({len(ids)} tokens; outside at {outside})")
        # A draw may be end-of-document, which ends generation: pool several seeds' tokens.
        beyond, drawn = 0, 0
        for seed in (1, 2, 3):
            wide = generate_ids(ckpt, "--temperature", "1.5", "--seed", str(seed), new_tokens=40)
            narrow = top_k_sets(model, wide, 3)
            beyond += sum(t not in narrow[i] for i, t in enumerate(wide))
            drawn += len(wide)
        check(beyond > 0, f"{name}: without --top-k, sampling at temperature 1.5 also draws beyond the top 3 "
                          f"({beyond} of {drawn} tokens)")
    bad = os.path.join(work, "bad_hf")
    os.makedirs(bad)
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write('{"model_type": "t5", "vocab_size": 10}')
    p = weft("convert", "--from", "hf:" + bad, "--to", "ckpt:" + os.path.join(work, "x"), check=False)
    check(p.returncode != 0 and "t5" in p.stderr and "config.json" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
          f"unsupported architecture refused in one line: {p.stderr.strip()}")


if __name__ == "__main__":
    main()
