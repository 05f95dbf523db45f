"""Parity: Weft's hf:DIR (tokenizer.json) and sp:FILE (SentencePiece) tokenizers vs the pinned
`tokenizers` and `sentencepiece` packages, on tokenizer files trained here (nothing downloaded):

- Llama 3 style: its Split regex + ByteLevel(use_regex=False), ignore_merges, special tokens
  (<|begin_of_text|>, <|eot_id|>, ...), TemplateProcessing adding <|begin_of_text|>;
- Qwen 2.5 style: NFC normalizer, its regex (single digits), <|im_start|>/<|im_end|>, plus added
  tokens that are not special (one normalized, one with lstrip/rstrip);
- GPT-2 style: ByteLevel(use_regex=True);
- Llama 2 style tokenizer.json: Prepend/Replace normalizers, BPE with byte_fallback and
  fuse_unk, decoder Replace/ByteFallback/Fuse/Strip;
- Metaspace style: Metaspace(prepend_scheme="first") pre-tokenizer and decoder, Digits;
- SentencePiece models from SentencePieceTrainer: BPE with byte_fallback (as Llama 2) and
  unigram, through sp:FILE and through hf:DIR holding only tokenizer.model.

For each text of a varied corpus (English, code, Chinese, emoji, whitespace runs, \\r\\n, special
token strings inside text, edge cases), Weft's ids must equal the reference's
(encode(text, add_special_tokens=False) / sp.encode(text)), its offsets the reference's converted
from characters to bytes, and its decode the reference's decode (special tokens kept), which is
the text itself whenever the reference round-trips. bos/eos/template come from the files, and
`weft preprocess --tokenizer SPEC` writes the reference's ids (and eos) for each.
"""
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sentencepiece as spm  # noqa: E402
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD, WEFT  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_dataset_tool")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "tokenizer", "model",
         "training", "data", "Hello", "world", "naïve", "café", "Zürich", "über", "Ελληνικά",
         "русский", "日本語のテキスト", "中文字符", "你好世界", "한국어", "العربية", "emoji🙂🚀",
         "👩‍💻", "x²", "½", "Ⅻ", "٣٤٥", "don't", "it's", "WE'RE", "I'LL", "o'clock", "2024",
         "3.14159", "1,000,000", "0x1F", "def", "return", "self.x", "foo(bar)", "{a: 1}",
         "i += 1;", "#include", "<tag>", "a+b=c", "“quote”", "—", "…"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "   ", " \n ", "\u00a0", "\u3000"]


def make_text(rng, n):
    parts = []
    for _ in range(n):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SPACES) if rng.random() < 0.3 else " ")
    return "".join(parts)


def cases(rng, specials):
    fixed = [
        "", " ", "a", "Hello world", " Hello world", "Hello  world", "trailing space ",
        "line one\nline two\n\n\nline three", "\t\tindented\ttabs", "    four spaces",
        "windows\r\nline\r\n\r\n", "don't stop; IT'S we're I've I'M you'll HE'D", "''quoted'' 'word'",
        "12345 67890 3.14159 1,000,000 2024-06-11", "x²+y²=z² ½ Ⅻ ٣٤٥",
        "naïve café Zürich Ελληνικά русский 日本語 中文 한국어 العربية", "emoji 🙂🚀👩‍💻!",
        "你好，世界！这是一个测试。", "def f(x):\n    return x * 2  # double\n",
        "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "mixed\u00a0nbsp\u3000ideographic",
        "combining e\u0301 a\u0308 o\u0302\u0323", "\u1100\u1161\u11a8 jamo", "\u212b angstrom \ufb01",
        "zero\u200bwidth \ufeffbom", "ctrl\x01\x02\x7f bytes", "    \n    ", "ok   \n",
        "<0x41> <unk> </s> <s> ▁lower ▁", "<|eot_id", "|>", "<|<|eot_id|>|>",
        "end with newline\n", "\n", "\r\n", "\u00e9\u0301",
    ]
    for s in specials:
        fixed += [f"{s}", f"before{s}after", f"a {s} b", f"{s}{s}", f"x\n{s}\ny", f" {s} "]
    fixed += [make_text(rng, rng.randint(3, 80)) for _ in range(40)]
    return fixed


def weft_json(cmd, spec, payload, *extra):
    res = subprocess.run([TOOL, cmd, spec, *extra], input=json.dumps(payload).encode() if payload is not None
                         else b"", capture_output=True)
    assert res.returncode == 0, f"weft_dataset_tool {cmd} {spec} failed: {res.stderr.decode()}"
    return json.loads(res.stdout)


def check_preprocess(name, spec, docs, want_ids, eos, tmp, flags=()):
    """`weft preprocess --tokenizer SPEC` on JSONL documents writes want_ids + [eos] per document."""
    src = os.path.join(tmp, name + "_docs.jsonl")
    with open(src, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    prefix = os.path.join(tmp, name + "_data")
    res = subprocess.run([WEFT, "preprocess", "--input", src, "--tokenizer", spec, "--output", prefix, *flags],
                         capture_output=True, text=True)
    assert res.returncode == 0, f"{name}: weft preprocess --tokenizer {spec} failed: {res.stderr}"
    dump = subprocess.run([TOOL, "dump", prefix], capture_output=True, text=True, check=True).stdout.splitlines()
    got = [[int(x) for x in line.split()] for line in dump if not line.startswith(("documents", "dtype"))]
    assert sum(got, []) == sum([w + [eos] for w in want_ids], []), f"{name}: weft preprocess ids differ"


def byte_offsets(text, char_offsets):
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return [[starts[b], starts[e]] for b, e in char_offsets]


def train_bpe(tok, corpus, vocab_size, specials, alphabet=None, limit_alphabet=None):
    kwargs = dict(vocab_size=vocab_size, min_frequency=2, special_tokens=specials, show_progress=False)
    if alphabet is not None:
        kwargs["initial_alphabet"] = alphabet
    if limit_alphabet is not None:
        kwargs["limit_alphabet"] = limit_alphabet
    tok.train_from_iterator(corpus, trainers.BpeTrainer(**kwargs))
    return tok


def llama3_style(corpus):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    train_bpe(tok, corpus, 1500, LLAMA3_SPECIALS, pre_tokenizers.ByteLevel.alphabet())
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def qwen_style(corpus):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    train_bpe(tok, corpus, 1400, QWEN_SPECIALS, pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=True),
                    AddedToken("[MASK]", special=False, normalized=False, lstrip=True, rstrip=True)])
    return tok, {"bos_token": None, "eos_token": {"content": "<|im_end|>", "special": True}}


def gpt2_style(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    train_bpe(tok, corpus, 1200, ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.ByteLevel(trim_offsets=True)  # as GPT-2's file
    return tok, None


def with_byte_tokens(tok):
    """Adds <0x00>..<0xFF> to the model's vocabulary (after the trained ids), as Llama 2 has."""
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


def llama2_style(corpus):
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # A small alphabet, so rarer characters (CJK, emoji) go through byte fallback.
    train_bpe(tok, corpus, 900, ["<unk>", "<s>", "</s>"], limit_alphabet=70)
    tok = with_byte_tokens(tok)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok, {"bos_token": "<s>", "eos_token": "</s>"}


def metaspace_style(corpus):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    train_bpe(tok, corpus, 900, ["<unk>", "</s>"], limit_alphabet=80)
    tok.add_special_tokens(["<|sep|>"])
    return tok, None


def check_hf(name, tok, config, texts, tmp):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    tok.save(os.path.join(d, "tokenizer.json"))
    if config is not None:
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
    ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    # Offsets are compared untrimmed (Weft's documented choice): the reference's own offsets
    # with a ByteLevel post-processor that does not trim them.
    untrimmed = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    if isinstance(untrimmed.post_processor, processors.ByteLevel):
        untrimmed.post_processor = processors.ByteLevel(trim_offsets=False)
    spec = "hf:" + d
    got = weft_json("encode-offsets-batch", spec, texts)
    got_plain = weft_json("encode-batch", spec, texts)
    back = weft_json("decode-batch", spec, [g["ids"] for g in got])
    round_trips = 0
    for text, g, plain, b in zip(texts, got, got_plain, back):
        want = ref.encode(text, add_special_tokens=False)
        assert g["ids"] == want.ids, (f"{name}: ids differ on {text!r}:\n weft {g['ids']}\n  ref {want.ids}\n"
                                      f"  ref tokens {want.tokens}")
        assert plain == g["ids"], f"{name}: encode and encode_with_offsets differ on {text!r}"
        want_off = byte_offsets(text, untrimmed.encode(text, add_special_tokens=False).offsets)
        assert g["offsets"] == want_off, (f"{name}: offsets differ on {text!r}:\n weft {g['offsets']}\n"
                                          f"  ref {want_off}\n  tokens {want.tokens}")
        want_text = ref.decode(want.ids, skip_special_tokens=False)
        assert b == want_text, f"{name}: decode differs on {text!r}: weft {b!r}, ref {want_text!r}"
        round_trips += want_text == text
    # bos/eos/template/vocab size.
    info = weft_json("tokenizer-info", spec, None, *LLAMA3_SPECIALS[:1], "<|im_end|>", "<unk>")
    with_sp = ref.encode("hello", add_special_tokens=True).ids
    without = ref.encode("hello", add_special_tokens=False).ids
    k = next(i for i in range(len(with_sp) - len(without) + 1) if with_sp[i:i + len(without)] == without)
    assert info["wrapped"] == with_sp[:k] + [7, 8] + with_sp[k + len(without):], (
        f"{name}: template {info['wrapped']} vs reference {with_sp} around {without}")
    assert info["vocab_size"] == ref.get_vocab_size(with_added_tokens=True), (name, info, ref.get_vocab_size())
    if config is not None:
        for key, field in (("bos_token", "bos"), ("eos_token", "eos")):
            t = config.get(key)
            t = t["content"] if isinstance(t, dict) else t
            want = ref.token_to_id(t) if t else (with_sp[0] if k > 0 else -1)
            assert info[field] == want, f"{name}: {field} {info[field]} != {want}"
    ids = [ref.token_to_id(t) for t in (LLAMA3_SPECIALS[0], "<|im_end|>", "<unk>")]
    assert info["ids"] == [-1 if i is None else i for i in ids], (name, info["ids"], ids)
    used = {ref.id_to_token(i) for g in got for i in g["ids"]}
    if name == "llama2":  # the corpus must reach byte fallback and an added token mid-text
        assert any(t.startswith("<0x") for t in used) and "</s>" in used, f"{name}: byte fallback unused"
    docs = [t for t in texts if t.strip()][-6:]
    # By default documents are wrapped as tokenizer(text) wraps them (Llama 3: BOS), as Megatron does.
    check_preprocess(name, spec, docs, [ref.encode(d).ids for d in docs], info["eos"], tmp)
    check_preprocess(name, spec, docs, [ref.encode(d, add_special_tokens=False).ids for d in docs], info["eos"], tmp,
                     ["--add_special_tokens=false"])
    n = sum(len(g["ids"]) for g in got)
    print(f"parity_hf_tokenizers: {name}: {len(texts)} texts, {n} tokens, ids and byte offsets identical to "
          f"tokenizers; decode identical ({round_trips} texts round-trip exactly); bos {info['bos']}, "
          f"eos {info['eos']}, template {info['template']}")


def train_sp(corpus, **kwargs):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model,
                                   minloglevel=2, **kwargs)
    return model.getvalue()


def sp_encode_split(sp, text):
    """(ids, byte offsets) of hf:DIR reading a directory with only tokenizer.model: the special
    pieces (control and unk, e.g. "<s>", "</s>", "<unk>") written in the text are those ids, the
    text between them goes through sentencepiece's encode() chunk by chunk, as tokenizers does
    for a Llama 2 tokenizer.json (added tokens are split out before the rest is encoded)."""
    specials = sorted({sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
                      - {""}, key=len, reverse=True)
    raw = text.encode("utf-8")
    ids, offsets, at = [], [], 0
    pattern = re.compile(b"|".join(re.escape(s.encode("utf-8")) for s in specials))
    for m in list(pattern.finditer(raw)) + [None]:
        end = m.start() if m else len(raw)
        if end > at or (m is None and at == 0):
            for x in sp.encode(raw[at:end].decode("utf-8"), return_type="proto").pieces:
                ids.append(x.id)
                offsets.append([at + x.begin, at + x.end])
        if m:
            ids.append(sp.piece_to_id(m.group().decode("utf-8")))
            offsets.append([m.start(), m.end()])
            at = m.end()
    return ids, offsets


def check_sp(name, model_bytes, texts, tmp):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    path = os.path.join(d, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model_bytes)
    sp = spm.SentencePieceProcessor(model_file=path)
    byte_pieces = split_seen = 0
    for spec in ("sp:" + path, "hf:" + d):
        got = weft_json("encode-offsets-batch", spec, texts)
        plain = weft_json("encode-batch", spec, texts)
        back = weft_json("decode-batch", spec, [g["ids"] for g in got])
        split = spec.startswith("hf:")
        for text, g, p, b in zip(texts, got, plain, back):
            want = sp_encode_split(sp, text)[0] if split else sp.encode(text)
            assert g["ids"] == want and p == want, (
                f"{name} {spec}: ids differ on {text!r}:\n weft {g['ids']}\n  ref {want}")
            if split:
                want_off = sp_encode_split(sp, text)[1]
            else:
                want_off = [[x.begin, x.end] for x in sp.encode(text, return_type="proto").pieces]
            assert g["offsets"] == want_off, f"{name}: offsets differ on {text!r}: {g['offsets']} vs {want_off}"
            assert b == sp.decode(want), f"{name}: decode differs on {text!r}: {b!r} vs {sp.decode(want)!r}"
            split_seen += split and want != sp.encode(text)
            byte_pieces += sum(sp.is_byte(i) for i in want)
        info = weft_json("tokenizer-info", spec, None, "<s>", "</s>", "<unk>", "not-a-piece")
        assert info["vocab_size"] == sp.get_piece_size()
        assert info["bos"] == sp.bos_id() and info["eos"] == sp.eos_id(), (info, sp.bos_id(), sp.eos_id())
        assert info["wrapped"] == ([sp.bos_id()] if sp.bos_id() >= 0 else []) + [7, 8]
        want_ids = [sp.piece_to_id(t) for t in ("<s>", "</s>", "<unk>")] + [-1]
        assert info["ids"] == want_ids, (info["ids"], want_ids)
    docs = [t for t in texts if t.strip()][-6:]
    # BOS first by default, as transformers' LlamaTokenizer and Megatron's Llama 2 tokenizer add it.
    check_preprocess(name, "sp:" + path, docs, [([sp.bos_id()] if sp.bos_id() >= 0 else []) + sp.encode(d)
                                                for d in docs], sp.eos_id(), tmp)
    check_preprocess(name, "sp:" + path, docs, [sp.encode(d) for d in docs], sp.eos_id(), tmp,
                     ["--add_special_tokens=false"])
    assert split_seen > 0, f"{name}: the corpus must hold special-piece text (e.g. </s>) for hf:DIR to split"
    round_trips = sum(sp.decode(sp.encode(t)) == t for t in texts)
    print(f"parity_hf_tokenizers: {name}: {len(texts)} texts identical to sentencepiece (ids, byte offsets, "
          f"decode; {round_trips} round-trip exactly; {byte_pieces // 2} byte-fallback pieces) through sp:FILE "
          f"and hf:DIR")


def main():
    assert os.path.exists(TOOL), f"{TOOL} not built (ninja weft_dataset_tool)"
    rng = random.Random(20241130)
    corpus = [make_text(rng, 50) for _ in range(300)]
    texts = cases(rng, LLAMA3_SPECIALS[:1] + ["<|eot_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
                                              "<s>", "</s>", "<unk>", "[MASK]", "<tool_call>", "<|sep|>"])
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("llama3", llama3_style), ("qwen2.5", qwen_style), ("gpt2", gpt2_style),
                            ("llama2", llama2_style), ("metaspace", metaspace_style)):
            tok, config = build(corpus)
            check_hf(name, tok, config, texts, tmp)
        sp_texts = texts
        check_sp("sp-bpe-byte-fallback", train_sp(
            corpus, vocab_size=600, model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
            split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
            character_coverage=0.98, bos_id=1, eos_id=2, unk_id=0), sp_texts, tmp)
        check_sp("sp-unigram", train_sp(corpus, vocab_size=200, model_type="unigram", hard_vocab_limit=False),
                 sp_texts, tmp)


if __name__ == "__main__":
    main()
