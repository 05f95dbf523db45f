// The byte-pair-encoding model shared by every BPE tokenizer (GPT-2's vocab.json + merges.txt and
// Hugging Face tokenizer.json files): a word's characters become symbols, then ranked merges
// join adjacent symbols until none applies.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace weft {

// One token of a word: its id and how many bytes of the word it covers.
struct BpeToken {
  int64_t id;
  uint32_t len;
};

struct BpeOptions {
  // A character missing from the vocabulary becomes the tokens "<0xXX>" of its bytes when all of
  // them exist (Llama 2); otherwise unk_token, if set; otherwise encode fails.
  bool byte_fallback = false;
  std::string unk_token;  // "" = none
  bool fuse_unk = false;  // consecutive unknown characters share one unk token
  // A word that is itself in the vocabulary is one token, merges or not (Llama 3).
  bool ignore_merges = false;
  // false (Hugging Face tokenizers): pairs a merge creates compete at once by rank.
  // true (OpenAI's encoder.py, GPT-2's vocab.json + merges.txt): every occurrence of the best pair
  // merges before the pairs that created are considered. Trained merge lists give the same ids
  // either way; only hand-made lists whose merges are out of creation order can tell them apart.
  bool merge_rounds = false;
};

// Thread safety: tokenize is const and safe to call concurrently (the word cache is locked).
class BpeModel {
 public:
  // `vocab`: token -> id (ids unique, in [0, 2^31)); `merges`: pairs in rank order, each part and
  // their concatenation in the vocabulary. `source` names the file in error messages.
  // Throws weft::Error naming `source` for a merge whose tokens are missing.
  BpeModel(const std::unordered_map<std::string, int64_t>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges,
           const BpeOptions& options, std::string source);

  // Appends the tokens of `word` (any bytes; a byte that is not valid UTF-8 is one character)
  // to `out`; their lengths sum to word.size(). Throws weft::Error when a character has no token.
  void tokenize(std::string_view word, std::vector<BpeToken>& out) const;

  int64_t token_to_id(const std::string& token) const;  // -1 if absent
  const std::string* id_to_token(int64_t id) const;     // nullptr if absent
  int64_t size() const { return static_cast<int64_t>(id_to_token_.size()); }  // max id + 1

 private:
  void initial_symbols(std::string_view word, std::vector<BpeToken>& out) const;
  void merge(std::vector<BpeToken>& symbols) const;
  int64_t char_id(std::string_view ch) const;

  static uint64_t pair_key(int64_t a, int64_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b);
  }

  std::string source_;
  BpeOptions options_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  std::unordered_map<uint32_t, int64_t> char_ids_;  // one-character tokens by code point
  std::vector<int64_t> byte_fallback_ids_;          // id of "<0xXX>" per byte, or -1
  int64_t unk_id_ = -1;
  struct Merge {
    int64_t rank;
    int64_t result;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> merge

  // Word -> tokens. Text repeats words heavily, so this skips most merge work; it is cleared when
  // it grows past kCacheEntries to bound memory on large corpora.
  static constexpr size_t kCacheEntries = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<BpeToken>> cache_;
};

}  // namespace weft
