"""Parity: Weft's gpt2:DIR tokenizer vs Hugging Face on the same vocab.json + merges.txt.

Trains a small byte-level BPE with `tokenizers` on text generated here, then checks that
`weft_dataset_tool encode gpt2:DIR` gives the same ids as (1) transformers' GPT2Tokenizer
(the Rust `tokenizers` backend), (2) the trained tokenizers.ByteLevelBPETokenizer itself and
(3) OpenAI's original algorithm as kept in transformers' slow ClvpTokenizer (Python `regex`
pre-tokenizer + rank-ordered merges), used without its text normaliser. Also checks decode.

Then sweeps every assigned code point (and a sample of the unassigned planes) after a letter,
a digit, punctuation and a space against `tokenizers`, whose Unicode classes are the
reference, comparing pre-tokenizer pieces and ids; and checks invalid UTF-8 against the slow
reference run on the text decoded with errors="surrogateescape" (each invalid byte then a
character that is neither letter, number nor space).
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import ByteLevelBPETokenizer, pre_tokenizers  # noqa: E402
from transformers import GPT2Tokenizer  # noqa: E402
from transformers.models.clvp.tokenization_clvp import ClvpTokenizer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_dataset_tool")

SYLLABLES = ["ka", "to", "ri", "ne", "mo", "sa", "lu", "the", "ing", "tion", "er", "qu", "st",
             "ph", "ou", "ai", "é", "ü", "ñ", "ø", "ß"]
UNICODE_WORDS = ["naïve", "café", "Zürich", "Ελληνικά", "русский", "日本語のテキスト", "中文字符",
                 "한국어", "العربية", "עברית", "हिन्दी", "emoji🙂🚀", "👩‍💻", "ﬁ ligature", "Ａｂｃ",
                 "x²", "½", "Ⅻ", "٣٤٥", "₀₁₂", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
CONTRACTIONS = ["don't", "it's", "we're", "I've", "I'm", "you'll", "he'd", "IT'S", "WE'RE",
                "o'clock", "'s", "'t", "''", "rock'n'roll"]
WHITESPACE = ["  ", "   ", "\t", "\n", "\n\n", " \n ", "\r\n", "\u00a0", "\u3000", "\u2003",
              "\u2028", "\x0b", "\x0c", "\u0085"]
PUNCT = [".", ",", "!", "?", "...", "--", "()", "[x]", "{y}", "#", "@user", "$5", "100%",
         "a+b=c", "<tag>", "\\", "/", "~", "|", "`code`", "“quote”", "«»", "—", "·"]


def words(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
            out.append(w.capitalize() if rng.random() < 0.2 else w)
        elif r < 0.65:
            out.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        elif r < 0.75:
            out.append(rng.choice(UNICODE_WORDS))
        elif r < 0.85:
            out.append(rng.choice(CONTRACTIONS))
        else:
            out.append(rng.choice(PUNCT))
    return out


def text(rng, n):
    parts = []
    for w in words(rng, n):
        parts.append(w)
        parts.append(rng.choice(WHITESPACE) if rng.random() < 0.15 else " ")
    return "".join(parts)


def weft(cmd, spec, data):
    res = subprocess.run([TOOL, cmd, spec], input=data, capture_output=True)
    assert res.returncode == 0, f"weft_dataset_tool {cmd} failed: {res.stderr.decode()}"
    return res.stdout


def weft_encode(spec, s):
    return [int(x) for x in weft("encode", spec, s.encode("utf-8")).split()]


def slow_reference(clvp, s, errors="strict"):
    """OpenAI encoder.py semantics via ClvpTokenizer's regex, byte map and bpe(), no normaliser."""
    import regex

    ids = []
    for piece in regex.findall(clvp.pat, s):
        mapped = "".join(clvp.byte_encoder[b] for b in piece.encode("utf-8", errors))
        ids.extend(clvp.encoder[t] for t in clvp.bpe(mapped).split(" "))
    return ids


SWEEP_CHUNK = 4096


def sweep_line(c):
    """c after a letter, a digit, punctuation and a space: whatever class c has, the pieces of
    "a{c}", "1{c}" and "!{c}" show whether it is a letter, a number or neither."""
    ch = chr(c)
    return f"a{ch}1{ch}!{ch} {ch}x"


def sweep_code_points_to_check():
    """Planes 0-3 and 14-16 whole (every code point assigned in any Unicode version so far lies
    there, private use included), surrogates excepted; of planes 4-13, still unassigned, every
    61st code point."""
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
            and (c < 0x40000 or c >= 0xE0000 or c % 61 == 0)]


def start_tool(args, payload):
    """Starts weft_dataset_tool on a JSON payload; it reads all of stdin before writing."""
    tool = subprocess.Popen([TOOL, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    tool.stdin.write(json.dumps(payload).encode())
    tool.stdin.close()
    return tool


def finish_tool(tool):
    out, err = tool.stdout.read(), tool.stderr.read()
    assert tool.wait() == 0, f"weft_dataset_tool {tool.args[1]} failed: {err.decode()}"
    return json.loads(out)


def sweep_code_points(spec, bpe):
    """sweep_line for each code point of sweep_code_points_to_check, SWEEP_CHUNK lines a text.
    Weft's pre-tokenizer pieces must be those of tokenizers' ByteLevel pre-tokenizer (the ids of
    a small vocabulary cannot show every split: most byte pairs never merge), and Weft's ids
    those of tokenizers. Both tool calls run while tokenizers works here; a text that differs
    is retried line by line to name the code points. Returns how many were checked."""
    cps = sweep_code_points_to_check()
    chunks = [cps[i:i + SWEEP_CHUNK] for i in range(0, len(cps), SWEEP_CHUNK)]
    texts = ["\n".join(sweep_line(c) for c in chunk) for chunk in chunks]
    split_tool = start_tool(["pre-tokenize-batch"], texts)
    encode_tool = start_tool(["encode-batch", spec], texts)
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)

    def pieces(text):
        return [text[b:e] for _, (b, e) in pre.pre_tokenize_str(text)]

    want_pieces = [pieces(t) for t in texts]
    want_ids = [e.ids for e in bpe.encode_batch(texts)]
    got_pieces, got_ids = finish_tool(split_tool), finish_tool(encode_tool)
    for what, got, want, redo in (
            ("pieces", got_pieces, want_pieces, lambda lines: (
                finish_tool(start_tool(["pre-tokenize-batch"], lines)),
                [pieces(x) for x in lines])),
            ("ids", got_ids, want_ids, lambda lines: (
                finish_tool(start_tool(["encode-batch", spec], lines)),
                [e.ids for e in bpe.encode_batch(lines)]))):
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        if bad:
            chunk = chunks[bad[0]]
            lines = [sweep_line(c) for c in chunk]
            got_lines, want_lines = redo(lines)
            first = [f"U+{c:04X} {line!r}: weft {g!r}, tokenizers {w!r}"
                     for c, line, g, w in zip(chunk, lines, got_lines, want_lines) if g != w]
            raise AssertionError(f"{what} differ from tokenizers in {len(bad)} of {len(texts)} "
                                 f"sweep texts; in the first, for {len(first)} code points: "
                                 + "\n".join(first[:8]))
    assert len(got_pieces) == len(got_ids) == len(texts), "the tool skipped texts"
    return len(cps)


def check_invalid_utf8(spec, clvp):
    data = (b"ok \xff\xfe ab \xc3 a\x80 \xed\xa0\x80 end!\xff? x\xe2\x82a \xe2\x82\xac5 it\xff's "
            b"\xc0\xaf \xf4\x90\x80\x80z \x80\x80abc  \xff\n\xff\t\xfe  don\xf0\x9f\x98't "
            b"\xf0\x9f\x98\x80  \xf5\x80 12\xff34 \xe0\x80\x80 '\xffs \xff")
    want = slow_reference(clvp, data.decode("utf-8", "surrogateescape"), "surrogateescape")
    got = [int(x) for x in weft("encode", spec, data).split()]
    assert got == want, f"invalid UTF-8: ids differ:\n weft {got}\n  ref {want}"
    back = weft("decode", spec, " ".join(map(str, got)).encode())
    assert back == data, f"invalid UTF-8 does not round-trip: {back!r}"
    return len(got)


def main():
    assert os.path.exists(TOOL), f"{TOOL} not built (ninja weft_dataset_tool)"
    rng = random.Random(20240611)
    corpus = [text(rng, 60) for _ in range(400)]
    with tempfile.TemporaryDirectory() as tmp:
        bpe = ByteLevelBPETokenizer(add_prefix_space=False)
        bpe.train_from_iterator(corpus, vocab_size=1200, min_frequency=2,
                                special_tokens=["<|endoftext|>"], show_progress=False)
        bpe.save_model(tmp)
        spec = "gpt2:" + tmp
        hf = GPT2Tokenizer.from_pretrained(tmp)
        clvp = ClvpTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"))
        n_merges = sum(1 for _ in open(os.path.join(tmp, "merges.txt"), encoding="utf-8")) - 1

        cases = [
            "", " ", "a", "Hello world", " Hello world", "Hello  world", "trailing space ",
            "line one\nline two\n\n\nline three", "\t\tindented\ttabs", "   leading",
            "don't stop; it's we're I've I'm you'll he'd", "DON'T IT'S", "''quoted'' 'word'",
            "12345 67890 3.14159 1,000,000 2024-06-11 0x1F", "x²+y²=z² ½ Ⅻ ٣٤٥",
            "naïve café Zürich Ελληνικά русский 日本語 中文 한국어 العربية", "emoji 🙂🚀👩‍💻!",
            "mixed\u00a0nbsp\u3000ideographic\u2003em\u2028ls", "\r\n\r\nwindows\r\n",
            "\x0bvt\x0cff", "nel\u0085char", "combining e\u0301 a\u0308", "zero\u200bwidth",
            "ctrl\x01\x02\x7f bytes", "    \n    ", "ok   \n", "punct!!! ??? ... ---",
        ]
        cases += [text(rng, rng.randint(5, 200)) for _ in range(30)]
        cases.append("\n\n".join(corpus[:50]))  # one long document

        # One tool process for all cases (each start loads LibTorch), plus the single-text
        # `encode`/`decode` commands on a few of them.
        got_all = json.loads(weft("encode-batch", spec, json.dumps(cases).encode()))
        back_all = json.loads(weft("decode-batch", spec, json.dumps(got_all).encode()))
        for s in cases[:3] + cases[-1:]:
            assert weft_encode(spec, s) == got_all[cases.index(s)], f"encode != batch on {s!r}"
        total = 0
        for s, got, back in zip(cases, got_all, back_all):
            want_hf = hf(s, add_special_tokens=False)["input_ids"]
            want_tok = bpe.encode(s).ids
            want_slow = slow_reference(clvp, s)
            assert want_hf == want_tok, f"references disagree (hf vs tokenizers) on {s!r}"
            assert want_hf == want_slow, f"references disagree (hf vs slow) on {s!r}"
            assert got == want_hf, (f"ids differ on {s!r}:\n weft {got}\n   hf {want_hf}")
            assert back == s, f"decode(encode(x)) != x for {s!r}: {back!r}"
            assert back == hf.decode(want_hf), f"decode differs from hf on {s!r}"
            total += len(got)
        plain = weft("decode", spec, " ".join(map(str, got_all[3])).encode()).decode("utf-8")
        assert plain == cases[3], f"decode command: {plain!r} != {cases[3]!r}"

        eos = weft_encode(spec, "x")  # sanity: the special token is not produced from text
        assert bpe.token_to_id("<|endoftext|>") not in eos
        print(f"parity_bpe_tokenizer: {len(cases)} texts, {total} tokens identical to "
              f"transformers GPT2Tokenizer, tokenizers ByteLevelBPE and the slow reference "
              f"(vocab {bpe.get_vocab_size()}, {n_merges} merges); decode round-trips")
        n = sweep_code_points(spec, bpe)
        print(f"parity_bpe_tokenizer: {n} code points (all of planes 0-3 and 14-16) after "
              f"letters, digits, punctuation and a space give tokenizers' pieces and ids")
        n = check_invalid_utf8(spec, clvp)
        print(f"parity_bpe_tokenizer: invalid UTF-8 gives the slow reference's {n} ids "
              f"(bytes decoded with surrogateescape) and round-trips")


if __name__ == "__main__":
    main()
