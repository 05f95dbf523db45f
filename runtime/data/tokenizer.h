// Tokenizers for preprocessing and generation: raw bytes, and GPT-2's byte-level BPE read from
// Hugging Face files (vocab.json + merges.txt), with the same ids as Hugging Face's GPT-2
// tokenizers produce for text without special-token strings.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace weft {

// Text <-> token ids.
// Thread safety: encode/decode are const and safe to call concurrently.
// Throws: weft::Error for ids outside the vocabulary (decode) or a vocabulary that cannot
//   represent the input (encode).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text is a byte string (UTF-8 expected, any bytes accepted).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // One past the largest id encode can produce (the model's vocab_size must be at least this).
  virtual int64_t vocab_size() const = 0;
  // End-of-document id; throws weft::Error if the vocabulary has none.
  virtual int64_t eos_id() const = 0;
  // The spec this tokenizer was made from ("byte", "gpt2:DIR").
  virtual std::string spec() const = 0;
};

// "byte": ids 0..255 are the bytes, 256 is eos (decoded as nothing), vocab_size 257.
// "gpt2:DIR": GPT-2 byte-level BPE from DIR/vocab.json and DIR/merges.txt; eos is the id of
//   "<|endoftext|>" when the vocabulary has it.
// Throws weft::Error for an unknown spec, or naming the missing or malformed file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// GPT-2's pre-tokenizer: splits `text` where the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// of Hugging Face `tokenizers` (the reference) would, with its Unicode classes for every code
// point. A byte that is not valid UTF-8 counts as one character that is neither letter, number
// nor space. Returns views into `text` that cover it exactly, in order; none is empty.
std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text);

}  // namespace weft
