// The pipeline's parts and the tokenizer that runs them, following Hugging Face `tokenizers`:
// added tokens are cut out of the raw text first (those with normalized=false), each remaining
// stretch is normalized and cut again (normalized=true), then pre-tokenized into words that the
// BPE model encodes. Every byte keeps the input span it came from, for offsets.
#include "runtime/data/tokenizer_pipeline.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "weft/error.h"
#include "runtime/data/unicode_classes.h"

namespace weft {
namespace {

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes are
// shifted to code points 256.. in byte order, so every byte is a visible, non-space character.
struct ByteMap {
  std::array<std::string, 256> symbol;  // byte -> UTF-8 of its code point
  std::array<int, 512> byte_of;         // code point -> byte, or -1
  ByteMap() {
    byte_of.fill(-1);
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      uint32_t cp = printable ? b : 256 + shifted++;
      append_utf8(symbol[b], cp);
      byte_of[cp] = b;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// Replaces every non-overlapping occurrence of `pattern` (found by `find`) with `content`; the
// new bytes are aligned with the whole text they replace (an empty match: the next byte's).
template <typename Find>
AlignedText replace_matches(const AlignedText& in, const std::string& content, Find find) {
  AlignedText out = in.derived();
  size_t prev = 0;
  for (const auto& [s, e] : find(in.text)) {
    out.append(in.slice(prev, s));
    if (s == e && s == in.text.size()) continue;
    out.text += content;
    if (in.tracked) out.align.insert(out.align.end(), content.size(), s == e ? in.align[s] : in.span(s, e));
    prev = e;
  }
  out.append(in.slice(prev, in.text.size()));
  return out;
}

std::vector<std::pair<size_t, size_t>> find_literal(const std::string& text, const std::string& p) {
  std::vector<std::pair<size_t, size_t>> out;
  if (p.empty()) return out;
  for (size_t at = text.find(p); at != std::string::npos; at = text.find(p, at + p.size()))
    out.emplace_back(at, at + p.size());
  return out;
}

// ---- Normalizers ---------------------------------------------------------------------------

class NfcNormalizer : public TextNormalizer {
 public:
  void apply(AlignedText& t) const override { t = nfc(t); }
};

class PrependNormalizer : public TextNormalizer {
 public:
  explicit PrependNormalizer(std::string p) : prefix_(std::move(p)) {}
  void apply(AlignedText& t) const override { t.prepend(prefix_); }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public TextNormalizer {
 public:
  ReplaceNormalizer(const std::string& pattern, bool regex, std::string content,
                    const std::string& where)
      : pattern_(pattern), content_(std::move(content)) {
    if (regex) regex_ = std::make_unique<Regex>(pattern, where);
  }
  void apply(AlignedText& t) const override {
    if (regex_) {
      t = replace_matches(t, content_, [&](const std::string& s) { return regex_->find_all(s); });
    } else {
      t = replace_matches(t, content_, [&](const std::string& s) { return find_literal(s, pattern_); });
    }
  }

 private:
  std::string pattern_, content_;
  std::unique_ptr<Regex> regex_;
};

class NormalizerSequence : public TextNormalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<TextNormalizer>> p) : parts_(std::move(p)) {}
  void apply(AlignedText& t) const override {
    for (const auto& p : parts_) p->apply(t);
  }

 private:
  std::vector<std::unique_ptr<TextNormalizer>> parts_;
};

// ---- Pre-tokenizers ------------------------------------------------------------------------

// A piece cut by matches: ranges covering it, each flagged as a match or not, regrouped by the
// behavior as `tokenizers`' NormalizedString::split does.
void split_by_matches(const AlignedText& piece, const std::vector<std::pair<size_t, size_t>>& found,
                      SplitBehavior behavior, bool invert, std::vector<AlignedText>& out) {
  struct Part {
    size_t begin, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (const auto& [s, e] : found) {
    if (prev != s) parts.push_back({prev, s, invert});
    parts.push_back({s, e, !invert});
    prev = e;
  }
  if (prev != piece.text.size() || parts.empty()) parts.push_back({prev, piece.text.size(), invert});
  std::vector<Part> grouped;
  bool previous = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
    case SplitBehavior::kRemoved:
      grouped = parts;
      break;
    case SplitBehavior::kContiguous:
      for (const Part& p : parts) {
        if (!grouped.empty() && p.match == previous) {
          grouped.back().end = p.end;
        } else {
          grouped.push_back({p.begin, p.end, false});
        }
        previous = p.match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Part& p : parts) {
        if (p.match && !previous && !grouped.empty()) {
          grouped.back().end = p.end;
        } else {
          grouped.push_back({p.begin, p.end, false});
        }
        previous = p.match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous && !grouped.empty()) {
          grouped.back().begin = it->begin;
        } else {
          grouped.push_back({it->begin, it->end, false});
        }
        previous = it->match;
      }
      std::reverse(grouped.begin(), grouped.end());
      break;
  }
  for (const Part& p : grouped) {
    if (behavior == SplitBehavior::kRemoved && p.match) continue;
    if (p.end > p.begin) out.push_back(piece.slice(p.begin, p.end));
  }
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(const std::string& pattern, bool regex, SplitBehavior behavior, bool invert,
                    const std::string& where)
      : pattern_(pattern), behavior_(behavior), invert_(invert) {
    if (regex) regex_ = std::make_unique<Regex>(pattern, where);
  }
  void apply(std::vector<AlignedText>& pieces) const override {
    std::vector<AlignedText> out;
    for (const AlignedText& p : pieces) {
      const auto found = regex_ ? regex_->find_all(p.text) : find_literal(p.text, pattern_);
      split_by_matches(p, found, behavior_, invert_, out);
    }
    pieces = std::move(out);
  }

 private:
  std::string pattern_;
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void apply(std::vector<AlignedText>& pieces) const override {
    std::vector<AlignedText> out;
    out.reserve(pieces.size() * 4);
    for (AlignedText& p : pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.prepend(" ");
      if (!use_regex_) {
        if (!p.text.empty()) out.push_back(to_symbols(p, 0, p.text.size()));
        continue;
      }
      size_t at = 0;
      for (std::string_view w : gpt2_pre_tokenize(p.text)) {
        out.push_back(to_symbols(p, at, at + w.size()));
        at += w.size();
      }
    }
    pieces = std::move(out);
  }

 private:
  // Each byte becomes its printable stand-in, aligned as the byte was.
  static AlignedText to_symbols(const AlignedText& p, size_t begin, size_t end) {
    AlignedText s = p.derived();
    s.text.reserve(2 * (end - begin));
    if (p.tracked) s.align.reserve(2 * (end - begin));
    const ByteMap& map = byte_map();
    for (size_t i = begin; i < end; ++i) {
      const std::string& sym = map.symbol[static_cast<unsigned char>(p.text[i])];
      s.text += sym;
      if (p.tracked)
        for (size_t k = 0; k < sym.size(); ++k) s.align.push_back(p.align[i]);
    }
    return s;
  }
  bool add_prefix_space_, use_regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  bool needs_alignment() const override { return scheme_ == PrependScheme::kFirst; }
  void apply(std::vector<AlignedText>& pieces) const override {
    std::vector<AlignedText> out;
    for (const AlignedText& piece : pieces) {
      AlignedText p = replace_matches(piece, replacement_,
                                      [](const std::string& s) { return find_literal(s, " "); });
      const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && !p.align.empty() && p.align[0].begin == 0)))
        p.prepend(replacement_);
      if (!split_) {
        if (!p.text.empty()) out.push_back(std::move(p));
        continue;
      }
      split_by_matches(p, find_literal(p.text, replacement_), SplitBehavior::kMergedWithNext, false, out);
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void apply(std::vector<AlignedText>& pieces) const override {
    std::vector<AlignedText> out;
    for (const AlignedText& p : pieces) {
      std::vector<std::pair<size_t, size_t>> found;
      for (size_t at = 0; at < p.text.size();) {
        size_t len = 1;
        const uint32_t cp = decode_utf8(p.text, at, len);
        if (cp != kInvalidUtf8 && gpt2_char_class(cp) == Gpt2CharClass::kNumber)
          found.emplace_back(at, at + len);
        at += len;
      }
      split_by_matches(p, found, individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                       false, out);
    }
    pieces = std::move(out);
  }

 private:
  bool individual_;
};

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> p) : parts_(std::move(p)) {}
  bool needs_alignment() const override {
    for (const auto& p : parts_)
      if (p->needs_alignment()) return true;
    return false;
  }
  void apply(std::vector<AlignedText>& pieces) const override {
    for (const auto& p : parts_) p->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

// ---- Decoders ------------------------------------------------------------------------------

// Per token: its characters' bytes when every character is a byte stand-in, else its own bytes.
class ByteLevelDecoder : public TokenDecoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string out;
    const ByteMap& map = byte_map();
    for (const std::string& t : tokens) {
      std::string bytes;
      bool all = true;
      for (size_t i = 0; i < t.size() && all;) {
        size_t len = 1;
        const uint32_t cp = decode_utf8(t, i, len);
        const int b = cp < map.byte_of.size() ? map.byte_of[cp] : -1;
        all = b >= 0;
        if (all) bytes.push_back(static_cast<char>(b));
        i += len;
      }
      out += all ? bytes : t;
    }
    tokens.assign(1, std::move(out));
  }
};

class ReplaceDecoder : public TokenDecoder {
 public:
  ReplaceDecoder(std::string p, std::string c) : pattern_(std::move(p)), content_(std::move(c)) {}
  void apply(std::vector<std::string>& tokens) const override {
    if (pattern_.empty()) return;
    for (std::string& t : tokens) {
      std::string out;
      size_t prev = 0;
      for (const auto& [s, e] : find_literal(t, pattern_)) out.append(t, prev, s - prev) += content_, prev = e;
      t = out + t.substr(prev);
    }
  }

 private:
  std::string pattern_, content_;
};

// Runs of "<0xXX>" tokens become their bytes (kept as they are even when not valid UTF-8).
class ByteFallbackDecoder : public TokenDecoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    bool pending = false;
    for (const std::string& t : tokens) {
      int value = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4])))
        value = std::stoi(t.substr(3, 2), nullptr, 16);
      if (value >= 0) {
        bytes.push_back(static_cast<char>(value));
        pending = true;
        continue;
      }
      if (pending) out.push_back(bytes), bytes.clear(), pending = false;
      out.push_back(t);
    }
    if (pending) out.push_back(bytes);
    tokens = std::move(out);
  }
};

class FuseDecoder : public TokenDecoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Per token: up to `start` leading and `stop` trailing copies of `content` (one character) go.
class StripDecoder : public TokenDecoder {
 public:
  StripDecoder(std::string c, int start, int stop) : content_(std::move(c)), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    const size_t n = content_.size();
    for (std::string& t : tokens) {
      size_t b = 0, e = t.size();
      for (int i = 0; i < start_ && e - b >= n && n && t.compare(b, n, content_) == 0; ++i) b += n;
      for (int i = 0; i < stop_ && e - b >= n && n && t.compare(e - n, n, content_) == 0; ++i) e -= n;
      t = t.substr(b, e - b);
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

// The replacement becomes a space, except in the first token, where (unless the scheme is
// "never") it is dropped, as the reference does.
class MetaspaceDecoder : public TokenDecoder {
 public:
  MetaspaceDecoder(std::string r, PrependScheme s) : replacement_(std::move(r)), scheme_(s) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = i == 0 && scheme_ != PrependScheme::kNever ? "" : " ";
      std::string out;
      size_t prev = 0;
      for (const auto& [s, e] : find_literal(tokens[i], replacement_))
        out.append(tokens[i], prev, s - prev) += with, prev = e;
      tokens[i] = out + tokens[i].substr(prev);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class DecoderSequence : public TokenDecoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<TokenDecoder>> p) : parts_(std::move(p)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<TokenDecoder>> parts_;
};

}  // namespace

std::unique_ptr<TextNormalizer> nfc_normalizer() { return std::make_unique<NfcNormalizer>(); }
std::unique_ptr<TextNormalizer> prepend_normalizer(std::string prefix) {
  return std::make_unique<PrependNormalizer>(std::move(prefix));
}
std::unique_ptr<TextNormalizer> replace_normalizer(const std::string& pattern, bool regex,
                                                   std::string content, const std::string& where) {
  return std::make_unique<ReplaceNormalizer>(pattern, regex, std::move(content), where);
}
std::unique_ptr<TextNormalizer> normalizer_sequence(std::vector<std::unique_ptr<TextNormalizer>> parts) {
  return std::make_unique<NormalizerSequence>(std::move(parts));
}
std::unique_ptr<PreTokenizer> split_pre_tokenizer(const std::string& pattern, bool regex,
                                                  SplitBehavior behavior, bool invert,
                                                  const std::string& where) {
  return std::make_unique<SplitPreTokenizer>(pattern, regex, behavior, invert, where);
}
std::unique_ptr<PreTokenizer> byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, use_regex);
}
std::unique_ptr<PreTokenizer> metaspace_pre_tokenizer(std::string replacement, PrependScheme scheme,
                                                      bool split) {
  return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
}
std::unique_ptr<PreTokenizer> digits_pre_tokenizer(bool individual_digits) {
  return std::make_unique<DigitsPreTokenizer>(individual_digits);
}
std::unique_ptr<PreTokenizer> pre_tokenizer_sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) {
  return std::make_unique<PreTokenizerSequence>(std::move(parts));
}
std::unique_ptr<TokenDecoder> byte_level_decoder() { return std::make_unique<ByteLevelDecoder>(); }
std::unique_ptr<TokenDecoder> replace_decoder(std::string pattern, std::string content) {
  return std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content));
}
std::unique_ptr<TokenDecoder> byte_fallback_decoder() { return std::make_unique<ByteFallbackDecoder>(); }
std::unique_ptr<TokenDecoder> fuse_decoder() { return std::make_unique<FuseDecoder>(); }
std::unique_ptr<TokenDecoder> strip_decoder(std::string content, int start, int stop) {
  return std::make_unique<StripDecoder>(std::move(content), start, stop);
}
std::unique_ptr<TokenDecoder> metaspace_decoder(std::string replacement, PrependScheme scheme) {
  return std::make_unique<MetaspaceDecoder>(std::move(replacement), scheme);
}
std::unique_ptr<TokenDecoder> decoder_sequence(std::vector<std::unique_ptr<TokenDecoder>> parts) {
  return std::make_unique<DecoderSequence>(std::move(parts));
}

}  // namespace weft
