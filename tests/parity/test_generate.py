"""`weft generate` against a greedy decode in transformers on the same GPT-2 weights, with the
byte tokenizer (ids 0..255 are bytes, 256 is end of document):

1. A model whose vocabulary is padded past the tokenizer's (264 > 257), with weights that make
   the padded ids the most likely everywhere: Weft's output must be transformers' greedy
   decode restricted to ids < 257, and sampling (several seeds, with and without top-k) must
   only ever produce decodable ids.
2. A model whose greedy continuation is byte 0 every step: the output must carry the NUL bytes.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from weft_test import WEFT, check, tmpdir, weft  # noqa: E402

TOKENIZER_VOCAB, EOS = 257, 256
PROMPT = "Hi there"
NEW = 12


def build(vocab, boosted_rows, seed):
    """Random tied GPT-2 whose final LayerNorm adds 2 to every hidden unit. Boosted rows of the
    head are all ones, the others random with zero sum: a boosted logit is 2 * 32 (the normalised
    part sums to 0), the others small and input-dependent."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOS,
                     eos_token_id=EOS)
    model = GPT2LMHeadModel(cfg).float().eval()
    with torch.no_grad():
        model.transformer.ln_f.bias.fill_(2.0)
        wte = model.transformer.wte.weight
        wte.sub_(wte.mean(1, keepdim=True)).mul_(5.0)
        for r in boosted_rows:
            wte[r].fill_(1.0)
    return model


def reference_greedy(model, prompt_ids):
    """transformers' logits, argmax over the tokenizer's ids only; stops after end of document."""
    ids, out = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(NEW):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1, :TOKENIZER_VOCAB]
            top2 = logits.topk(2).values
            assert top2[0] - top2[1] > 1e-3, "reference argmax too close to call; change the seed"
            nxt = int(logits.argmax())
            ids.append(nxt)
            out.append(nxt)
            if nxt == EOS:
                break
    return out


def to_checkpoint(model, work, name):
    hf_dir, ckpt = os.path.join(work, name + "_hf"), os.path.join(work, name + "_ckpt")
    model.save_pretrained(hf_dir, safe_serialization=True)
    weft("convert", "--from", "hf:" + hf_dir, "--to", "ckpt:" + ckpt)
    return ckpt


def generate(ckpt, *extra):
    """Runs weft generate; returns (exit code, stdout bytes, stderr text)."""
    p = subprocess.run([WEFT, "generate", "--checkpoint", ckpt, "--tokenizer", "byte",
                        "--prompt", PROMPT, "--max-new-tokens", str(NEW), *extra],
                       capture_output=True, timeout=300)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace").strip()


def expected_stdout(new_ids):
    return PROMPT.encode() + bytes(i for i in new_ids if i != EOS) + b"\n"


def main():
    work = tmpdir("generate")
    prompt_ids = list(PROMPT.encode())

    padded = build(264, range(TOKENIZER_VOCAB, 264), seed=3)
    with torch.no_grad():
        last = padded(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    check(int(last.argmax()) >= TOKENIZER_VOCAB, "the padded model's logits favour padded ids")
    ckpt = to_checkpoint(padded, work, "padded")
    want = reference_greedy(padded, prompt_ids)
    rc, out, err = generate(ckpt)
    check(rc == 0 and out == expected_stdout(want),
          f"greedy with a padded vocabulary = transformers' greedy over ids < 257 {want} "
          f"(exit {rc}, stdout {out!r}, stderr {err!r})")
    for seed in range(1, 5):
        for extra in ([], ["--top-k", "300"], ["--top-k", "5"]):
            rc, out, err = generate(ckpt, "--temperature", "1.0", "--seed", str(seed), *extra)
            check(rc == 0 and out.startswith(PROMPT.encode()) and out.endswith(b"\n") and not err,
                  f"sampled with a padded vocabulary, seed {seed} {' '.join(extra)}: "
                  f"exit {rc}, stderr {err!r}")

    nul = build(TOKENIZER_VOCAB, [0], seed=4)
    want = reference_greedy(nul, prompt_ids)
    check(want == [0] * NEW, f"the NUL model's greedy continuation is byte 0 every step: {want}")
    rc, out, err = generate(to_checkpoint(nul, work, "nul"))
    check(rc == 0 and out == expected_stdout(want),
          f"greedy output keeps its {NEW} NUL bytes: exit {rc}, stdout {out!r}, stderr {err!r}")


if __name__ == "__main__":
    main()
