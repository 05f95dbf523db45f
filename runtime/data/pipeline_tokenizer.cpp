// The tokenizer that runs a Pipeline (see tokenizer_pipeline.h for the order of the stages).
#include <algorithm>
#include <array>
#include <unordered_map>

#include "weft/error.h"
#include "runtime/data/tokenizer_pipeline.h"
#include "runtime/data/unicode_classes.h"

namespace weft {
namespace {

// A stretch of text, or an added token (id >= 0) and the text it matched.
struct Segment {
  AlignedText text;
  int64_t id = -1;
};

bool is_space_at(const std::string& s, size_t at, size_t& len) {
  const uint32_t cp = decode_utf8(s, at, len);
  return cp != kInvalidUtf8 && gpt2_char_class(cp) == Gpt2CharClass::kSpace;
}

// Start of the character that ends s[0, end) (end - 1 for a byte that is not valid UTF-8).
size_t prev_char_start(const std::string& s, size_t end) {
  for (size_t back = 1; back <= 4 && back <= end; ++back) {
    size_t len = 1;
    if (decode_utf8(s, end - back, len) != kInvalidUtf8 && len == back) return end - back;
  }
  return end - 1;
}

// The code point that ends s[0, end), or kInvalidUtf8.
uint32_t code_point_before(const std::string& s, size_t end) {
  const size_t start = prev_char_start(s, end);
  size_t len = 1;
  const uint32_t cp = decode_utf8(s, start, len);
  return start + len == end ? cp : kInvalidUtf8;
}

// Finds added tokens in text: leftmost match first, the longest at that position, matches never
// overlapping (as the reference's leftmost-longest Aho-Corasick), then single_word, lstrip and
// rstrip as the reference applies them.
class AddedMatcher {
 public:
  void add(const AddedToken* t) { by_first_[static_cast<unsigned char>(t->content[0])].push_back(t); }
  void finish() {
    for (auto& list : by_first_)
      std::stable_sort(list.begin(), list.end(), [](const AddedToken* a, const AddedToken* b) {
        return a->content.size() > b->content.size();
      });
  }
  void split(const AlignedText& in, std::vector<Segment>& out) const {
    const std::string& s = in.text;
    size_t start_offset = 0, pos = 0;
    while (pos < s.size()) {
      const AddedToken* tok = nullptr;
      size_t start = pos;
      for (; start < s.size() && !tok; ++start) {
        for (const AddedToken* t : by_first_[static_cast<unsigned char>(s[start])]) {
          if (s.compare(start, t->content.size(), t->content) == 0) {
            tok = t;
            break;
          }
        }
      }
      if (!tok) break;
      --start;
      size_t stop = start + tok->content.size();
      pos = stop;
      if (tok->single_word) {
        const uint32_t before = start == 0 ? kInvalidUtf8 : code_point_before(s, start);
        size_t len = 1;
        const uint32_t after = stop == s.size() ? kInvalidUtf8 : decode_utf8(s, stop, len);
        const bool word_before = before != kInvalidUtf8 && is_word_char(before);
        const bool word_after = after != kInvalidUtf8 && is_word_char(after);
        if (word_before || word_after) continue;
      }
      if (tok->lstrip) {
        size_t b = start;
        while (b > start_offset) {
          const uint32_t cp = code_point_before(s, b);
          if (cp == kInvalidUtf8 || gpt2_char_class(cp) != Gpt2CharClass::kSpace) break;
          b = prev_char_start(s, b);
        }
        start = b;
      }
      if (tok->rstrip) {
        size_t len = 1;
        while (stop < s.size() && is_space_at(s, stop, len)) stop += len;
      }
      if (start_offset < start) out.push_back({in.slice(start_offset, start), -1});
      out.push_back({in.slice(start, stop), tok->id});
      start_offset = stop;
    }
    if (start_offset < s.size() || (s.empty() && out.empty())) {
      out.push_back({in.slice(start_offset, s.size()), -1});
    }
  }

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first_;
};

class PipelineTokenizer : public Tokenizer {
 public:
  explicit PipelineTokenizer(Pipeline p) : p_(std::move(p)) {
    for (const AddedToken& t : p_.added) {
      added_ids_[t.content] = t.id;
      added_tokens_[t.id] = t.content;
      vocab_size_ = std::max(vocab_size_, t.id + 1);
    }
    vocab_size_ = std::max(vocab_size_, p_.model->size());
    for (AddedToken& t : p_.added) {
      if (t.content.empty()) continue;
      if (!t.normalized) {
        raw_.add(&t);
        continue;
      }
      // A normalized token is matched as the normalizer writes it.
      AlignedText content = AlignedText::original(t.content);
      if (p_.normalizer) p_.normalizer->apply(content);
      if (content.text.empty()) continue;
      normalized_contents_.push_back(std::make_unique<AddedToken>(t));
      normalized_contents_.back()->content = content.text;
      normalized_.add(normalized_contents_.back().get());
    }
    raw_.finish();
    normalized_.finish();
    needs_alignment_ = p_.pre_tokenizer && p_.pre_tokenizer->needs_alignment();
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    Encoding enc;
    run(text, /*offsets=*/false, enc);
    return std::move(enc.ids);
  }

  Encoding encode_with_offsets(const std::string& text) const override {
    Encoding enc;
    run(text, /*offsets=*/true, enc);
    return enc;
  }

  // Text -> ids (and offsets): cut out raw added tokens, normalize, cut out normalized ones,
  // pre-tokenize, run the model. Without offsets, spans are not tracked (faster) unless a
  // pre-tokenizer depends on them.
  void run(const std::string& text, bool offsets, Encoding& enc) const {
    auto emit = [&](int64_t id, Span s) {
      enc.ids.push_back(id);
      if (offsets) enc.offsets.emplace_back(s.begin, s.end);
    };
    std::vector<Segment> outer;
    raw_.split(AlignedText::original(text, 0, offsets || needs_alignment_), outer);
    std::vector<Segment> inner;
    std::vector<AlignedText> words;
    std::vector<BpeToken> tokens;
    for (Segment& seg : outer) {
      if (seg.id >= 0) {
        emit(seg.id, seg.text.span());
        continue;
      }
      if (p_.normalizer) p_.normalizer->apply(seg.text);
      inner.clear();
      normalized_.split(seg.text, inner);
      for (Segment& piece : inner) {
        if (piece.id >= 0) {
          emit(piece.id, piece.text.span());
          continue;
        }
        words.assign(1, std::move(piece.text));
        if (p_.pre_tokenizer) p_.pre_tokenizer->apply(words);
        for (const AlignedText& w : words) {
          tokens.clear();
          p_.model->tokenize(w.text, tokens);
          size_t at = 0;
          for (const BpeToken& t : tokens) {
            emit(t.id, w.span(at, at + t.len));
            at += t.len;
          }
        }
      }
    }
  }

  std::vector<int64_t> add_special_tokens(const std::vector<int64_t>& ids) const override {
    std::vector<int64_t> out = p_.template_prefix;
    out.insert(out.end(), ids.begin(), ids.end());
    out.insert(out.end(), p_.template_suffix.begin(), p_.template_suffix.end());
    return out;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      auto added = added_tokens_.find(id);
      if (added != added_tokens_.end()) {
        tokens.push_back(added->second);
        continue;
      }
      const std::string* t = p_.model->id_to_token(id);
      WEFT_CHECK(t, "cannot decode id ", id, ": it is not in ", p_.source);
      tokens.push_back(*t);
    }
    std::string out;
    if (p_.decoder) {
      p_.decoder->apply(tokens);
      for (const auto& t : tokens) out += t;
    } else {
      for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    }
    return out;
  }

  int64_t token_to_id(const std::string& token) const override {
    auto it = added_ids_.find(token);
    return it != added_ids_.end() ? it->second : p_.model->token_to_id(token);
  }
  int64_t vocab_size() const override { return vocab_size_; }
  int64_t bos_id() const override { return p_.bos; }
  int64_t eos_id() const override {
    WEFT_CHECK(p_.eos >= 0, p_.eos_missing);
    return p_.eos;
  }
  std::string spec() const override { return p_.spec; }

 private:
  Pipeline p_;
  std::unordered_map<std::string, int64_t> added_ids_;
  std::unordered_map<int64_t, std::string> added_tokens_;
  std::vector<std::unique_ptr<AddedToken>> normalized_contents_;
  AddedMatcher raw_, normalized_;
  int64_t vocab_size_ = 0;
  bool needs_alignment_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_pipeline_tokenizer(Pipeline pipeline) {
  return std::make_unique<PipelineTokenizer>(std::move(pipeline));
}

}  // namespace weft
