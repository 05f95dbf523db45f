// A Hugging Face `tokenizers`-style pipeline: added tokens, normalizers, pre-tokenizers, a BPE
// model, a post-processor and decoders. tokenizer.json files (hf_tokenizer_json.cpp) and GPT-2's
// vocab.json + merges.txt (tokenizer.cpp) are both built from these parts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/data/bpe_model.h"
#include "runtime/data/text_ops.h"
#include "runtime/data/tokenizer.h"

namespace weft {

// Rewrites text in place (NFC, Prepend, Replace, Sequence).
class TextNormalizer {
 public:
  virtual ~TextNormalizer() = default;
  virtual void apply(AlignedText& text) const = 0;
};

// Splits and rewrites pieces (Split, ByteLevel, Metaspace, Digits, Sequence). `pieces` in, the
// new pieces out; empty pieces are dropped.
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<AlignedText>& pieces) const = 0;
  // Whether its pieces depend on where they came from (Metaspace's "first"), so text must be
  // tracked even when no offsets are wanted.
  virtual bool needs_alignment() const { return false; }
};

// Turns token strings back into text (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace,
// Sequence); the tokens are joined afterwards.
class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

struct Pipeline {
  std::string spec;    // what make_tokenizer was given
  std::string source;  // the file named in errors
  std::vector<AddedToken> added;
  std::unique_ptr<TextNormalizer> normalizer;  // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // may be null
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<TokenDecoder> decoder;  // null: tokens joined with spaces
  // The post-processor's single-sequence template: ids before and after the text's.
  std::vector<int64_t> template_prefix, template_suffix;
  int64_t bos = -1, eos = -1;
  std::string eos_missing;  // eos_id()'s error when eos < 0
};

// Thread safety of the result: all methods const and safe to call concurrently.
std::unique_ptr<Tokenizer> make_pipeline_tokenizer(Pipeline pipeline);

// Parts, configured as in tokenizer.json.
std::unique_ptr<TextNormalizer> nfc_normalizer();
std::unique_ptr<TextNormalizer> prepend_normalizer(std::string prefix);
// `pattern` is a literal string, or a regex when `regex` is set (then `where` names it for errors).
std::unique_ptr<TextNormalizer> replace_normalizer(const std::string& pattern, bool regex,
                                                   std::string content, const std::string& where);
std::unique_ptr<TextNormalizer> normalizer_sequence(std::vector<std::unique_ptr<TextNormalizer>> parts);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
std::unique_ptr<PreTokenizer> split_pre_tokenizer(const std::string& pattern, bool regex,
                                                  SplitBehavior behavior, bool invert,
                                                  const std::string& where);
std::unique_ptr<PreTokenizer> byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex);
enum class PrependScheme { kAlways, kNever, kFirst };
std::unique_ptr<PreTokenizer> metaspace_pre_tokenizer(std::string replacement, PrependScheme scheme,
                                                      bool split);
std::unique_ptr<PreTokenizer> digits_pre_tokenizer(bool individual_digits);
std::unique_ptr<PreTokenizer> pre_tokenizer_sequence(std::vector<std::unique_ptr<PreTokenizer>> parts);

std::unique_ptr<TokenDecoder> byte_level_decoder();
std::unique_ptr<TokenDecoder> replace_decoder(std::string pattern, std::string content);
std::unique_ptr<TokenDecoder> byte_fallback_decoder();
std::unique_ptr<TokenDecoder> fuse_decoder();
std::unique_ptr<TokenDecoder> strip_decoder(std::string content, int start, int stop);
std::unique_ptr<TokenDecoder> metaspace_decoder(std::string replacement, PrependScheme scheme);
std::unique_ptr<TokenDecoder> decoder_sequence(std::vector<std::unique_ptr<TokenDecoder>> parts);

}  // namespace weft

namespace weft {

// Loaders behind make_tokenizer (same errors). `spec` is what spec() returns.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& dir, const std::string& spec);
std::unique_ptr<Tokenizer> load_gpt2_files(const std::string& dir, const std::string& spec);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& file, const std::string& spec);

// The whole file (binary); throws weft::Error naming `path` and `what`, with `hint`.
std::string read_tokenizer_file(const std::string& path, const std::string& hint);

}  // namespace weft
