// Text operations for tokenizer.json pipelines that keep track of where every byte came from:
// a regex engine whose Unicode classes agree with the reference's, and NFC normalization.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace weft {

// A byte range [begin, end) of the original input text.
struct Span {
  uint32_t begin, end;
};

// Text derived from the input, with, for each of its bytes, the input span it came from (for an
// unchanged character: the whole character's bytes). Normalizers and pre-tokenizers transform
// it; token offsets are the union of their bytes' spans. Untracked text (no offsets wanted)
// keeps no spans: align stays empty and span() is {0, 0}; text derived from it is untracked.
struct AlignedText {
  std::string text;
  std::vector<Span> align;  // align.size() == text.size() when tracked, else empty
  bool tracked = true;

  // `text` as the input itself: each byte maps to the UTF-8 character holding it (an invalid
  // byte to itself), shifted by `base`.
  static AlignedText original(std::string_view text, uint32_t base = 0, bool tracked = true);
  // An empty text tracked as this one is, to build derived text in.
  AlignedText derived() const {
    AlignedText t;
    t.tracked = tracked;
    return t;
  }
  AlignedText slice(size_t begin, size_t end) const;
  void append(const AlignedText& other);
  // Prepends `s`, its bytes aligned with the first byte; nothing when the text is empty.
  void prepend(const std::string& s);
  Span span() const { return span(0, text.size()); }  // union of all spans ({0, 0} when empty)
  Span span(size_t begin, size_t end) const;           // union of the spans of bytes [begin, end)
};

// A PCRE2 regex (UTF, Unicode properties, JIT) for patterns written for the reference's engine
// (Oniguruma). \p{L}, \p{N}, \s, their negations \P{L}, \P{N}, \S (and \pL, \pN, \PL, \PN), in
// or out of [...], are rewritten into explicit code point classes from the probed tables of
// unicode_classes.h, so they classify every code point as the reference does; everything else
// is passed to PCRE2 unchanged. Bytes that are not valid UTF-8 are never part of a match.
// Thread safety: find_all is const and safe to call concurrently.
class Regex {
 public:
  // Throws weft::Error naming `where` when PCRE2 rejects the pattern.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches, left to right, as byte ranges; an empty match right where the
  // previous one ended is skipped and the search moves one character on (as the reference).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `pattern` with the classes listed at Regex rewritten (exposed for tests).
std::string rewrite_unicode_classes(const std::string& pattern);

// Unicode NFC (utf8proc), normalized in stretches (a starter and what may combine with it). In
// a stretch that changes, the composed character is aligned with the stretch's first input
// character and the characters left over with its last ones, in order (as the reference aligns
// them in the common cases); elsewhere the alignment is unchanged. Bytes that are not valid
// UTF-8 pass through unchanged.
AlignedText nfc(const AlignedText& in);

// Whether the code point is a "word" character (letter, mark, decimal digit or connector
// punctuation), as a regex \w sees it; used for added tokens' single_word.
bool is_word_char(uint32_t cp);

}  // namespace weft
