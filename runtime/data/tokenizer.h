// Tokenizers for preprocessing, fine-tuning and generation: raw bytes; GPT-2's byte-level BPE
// from vocab.json + merges.txt; Hugging Face tokenizer.json files (byte-level BPE as in GPT-2,
// Llama 3 and Qwen 2.5, and Llama 2's byte-fallback BPE); SentencePiece .model files. Each
// gives the ids of its reference (`tokenizers` / `sentencepiece`).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace weft {

// Ids of a text and, per id, the byte range [first, second) of the text it came from.
struct Encoding {
  std::vector<int64_t> ids;
  std::vector<std::pair<int64_t, int64_t>> offsets;  // same length as ids
};

// Text <-> token ids. Text is a byte string (UTF-8 expected, any bytes accepted).
// Thread safety: every method is const and safe to call concurrently.
// Throws: weft::Error for ids outside the vocabulary (decode) or a vocabulary that cannot
//   represent the input (encode).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The text's ids, without BOS/EOS. Special and added tokens written in the text ("<|eot_id|>")
  // are recognised as those tokens, as `tokenizers`' encode(text, add_special_tokens=False) does;
  // SentencePiece gives what `sentencepiece`'s encode(text) gives.
  virtual std::vector<int64_t> encode(const std::string& text) const {
    return encode_with_offsets(text).ids;
  }
  // encode's ids with byte offsets into `text`, those of the reference converted to bytes:
  // tokenizer.json: a token holding only some bytes of a character (byte-level or byte-fallback
  //   pieces) covers the whole character, so neighbouring tokens may share it; an added token
  //   covers the whitespace its lstrip/rstrip took; a character NFC composed maps to the first
  //   input character it came from; ByteLevel's trim_offsets is not applied (offsets stay
  //   untrimmed, covering the leading space of " word").
  // SentencePiece: the library's offsets (the byte-fallback pieces of one character: all but
  //   the last are empty, at the character's start).
  // byte: [i, i + 1). Offsets lie within [0, text.size()] and never decrease.
  virtual Encoding encode_with_offsets(const std::string& text) const = 0;
  // `ids` of one sequence wrapped as the tokenizer's post-processor does for a single sequence
  // (Llama 3: <|begin_of_text|> first; GPT-2, Qwen 2.5: unchanged; SentencePiece: BOS first
  // when the model has one, as transformers' LlamaTokenizer, never EOS).
  virtual std::vector<int64_t> add_special_tokens(const std::vector<int64_t>& ids) const = 0;
  // Text of `ids` as the reference's decode(ids, skip_special_tokens=False) gives it.
  // decode(encode(x)) == x for the byte, gpt2 and byte-level tokenizers, and for the others
  // whenever the reference round-trips. tokenizer.json: bytes that are not valid UTF-8 (byte
  // tokens of a cut character) come out as they are, where the reference writes U+FFFD.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // Id of a token string (vocabulary or added token), or -1.
  virtual int64_t token_to_id(const std::string& token) const = 0;
  // One past the largest id, added tokens included (the model's vocab_size must be at least this).
  virtual int64_t vocab_size() const = 0;
  // Beginning-of-sequence id, or -1 if the tokenizer has none.
  virtual int64_t bos_id() const = 0;
  // End-of-document id; throws weft::Error if the vocabulary has none.
  virtual int64_t eos_id() const = 0;
  // The spec this tokenizer was made from ("byte", "gpt2:DIR", "hf:DIR", "sp:FILE").
  virtual std::string spec() const = 0;
};

// "byte": ids 0..255 are the bytes, 256 is eos (decoded as nothing), vocab_size 257, no bos.
// "gpt2:DIR": GPT-2 byte-level BPE from DIR/vocab.json and DIR/merges.txt; eos is the id of
//   "<|endoftext|>" when the vocabulary has it; no bos; no special-token matching in text.
// "hf:DIR": DIR/tokenizer.json (Hugging Face `tokenizers` format; see README for what is
//   supported), or, when DIR has only tokenizer.model, that SentencePiece model. bos/eos are
//   DIR/tokenizer_config.json's bos_token/eos_token (a string or {"content": ...}) when it
//   names them; otherwise bos is the template's leading special token and eos the first of
//   "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>" in the vocabulary.
// "sp:FILE": a SentencePiece model; bos/eos are the model's (bos -1 when it has none).
// Throws weft::Error for an unknown spec, or naming the missing or malformed file (and, for
// tokenizer.json, the JSON path of an unsupported part).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// The files a tokenizer spec reads, so a checkpoint can carry them: file name in the checkpoint
// -> path to read. "gpt2:DIR": vocab.json, merges.txt; "hf:DIR": whichever of tokenizer.json,
// tokenizer_config.json, tokenizer.model, chat_template.jinja, special_tokens_map.json,
// generation_config.json (the stop tokens generation uses) exist;
// "sp:FILE": tokenizer.model. "byte": none.
// `own_spec` is the spec that reads them back from the checkpoint's directory ("gpt2:." or
// "hf:."). Throws weft::Error naming the missing file a spec needs.
struct TokenizerFiles {
  std::map<std::string, std::string> paths;
  std::string own_spec;
};
TokenizerFiles tokenizer_files(const std::string& spec);

// Whether `spec` names a checkpoint's own tokenizer files ("gpt2:." or "hf:.").
bool is_checkpoint_tokenizer(const std::string& spec);
// A checkpoint's own spec with "." replaced by `dir`; any other spec unchanged.
std::string resolve_checkpoint_tokenizer(const std::string& spec, const std::string& dir);

// GPT-2's pre-tokenizer: splits `text` where the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// of Hugging Face `tokenizers` (the reference) would, with its Unicode classes for every code
// point. A byte that is not valid UTF-8 counts as one character that is neither letter, number
// nor space. Returns views into `text` that cover it exactly, in order; none is empty.
std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text);

}  // namespace weft
