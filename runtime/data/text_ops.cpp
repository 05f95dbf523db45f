// PCRE2 with the reference's Unicode classes, and NFC through utf8proc with alignments.
#include "runtime/data/text_ops.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdio>

#include "weft/error.h"
#include "runtime/data/unicode_classes.h"

namespace weft {

// ---- AlignedText ---------------------------------------------------------------------------

AlignedText AlignedText::original(std::string_view text, uint32_t base, bool tracked) {
  AlignedText out;
  out.text.assign(text);
  out.tracked = tracked;
  if (!tracked) return out;
  out.align.resize(text.size());
  for (size_t at = 0; at < text.size();) {
    size_t len = 1;
    decode_utf8(text, at, len);
    const Span s{static_cast<uint32_t>(base + at), static_cast<uint32_t>(base + at + len)};
    for (size_t k = 0; k < len; ++k) out.align[at + k] = s;
    at += len;
  }
  return out;
}

AlignedText AlignedText::slice(size_t begin, size_t end) const {
  AlignedText out = derived();
  out.text = text.substr(begin, end - begin);
  if (tracked) out.align.assign(align.begin() + begin, align.begin() + end);
  return out;
}

void AlignedText::append(const AlignedText& other) {
  text += other.text;
  if (tracked) align.insert(align.end(), other.align.begin(), other.align.end());
}

void AlignedText::prepend(const std::string& s) {
  if (text.empty()) return;
  text.insert(0, s);
  if (tracked) align.insert(align.begin(), s.size(), align.front());
}

Span AlignedText::span(size_t begin, size_t end) const {
  if (!tracked || begin >= end) return {0, 0};
  Span s = align[begin];
  for (size_t i = begin + 1; i < end; ++i) {
    s.begin = std::min(s.begin, align[i].begin);
    s.end = std::max(s.end, align[i].end);
  }
  return s;
}

// ---- Regex ---------------------------------------------------------------------------------

namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;

// Code points outside `r` (sorted, disjoint), surrogates excluded (PCRE2 rejects them in UTF mode).
Ranges complement(const Ranges& r) {
  Ranges out;
  uint32_t next = 0;
  auto add = [&](uint32_t a, uint32_t b) {  // [a, b] minus the surrogates
    if (a > b) return;
    if (b < 0xD800 || a > 0xDFFF) return out.emplace_back(a, b), void();
    if (a < 0xD800) out.emplace_back(a, 0xD7FF);
    if (b > 0xDFFF) out.emplace_back(0xE000, b);
  };
  for (const auto& [a, b] : r) {
    if (a > next) add(next, a - 1);
    next = b + 1;
  }
  if (next <= 0x10FFFF) add(next, 0x10FFFF);
  return out;
}

std::string class_body(const Ranges& r) {
  std::string out;
  char buf[32];
  for (const auto& [a, b] : r) {
    if (a == b) {
      std::snprintf(buf, sizeof(buf), "\\x{%X}", a);
    } else {
      std::snprintf(buf, sizeof(buf), "\\x{%X}-\\x{%X}", a, b);
    }
    out += buf;
  }
  return out;
}

// The ranges an escape at p[i] ('\\' at i) stands for, and its length; false if it is not one
// of the rewritten classes.
bool class_escape(const std::string& p, size_t i, Ranges& ranges, size_t& len) {
  const char d = p[i + 1];
  Gpt2CharClass cls;
  bool negate = false;
  if (d == 's' || d == 'S') {
    cls = Gpt2CharClass::kSpace, negate = d == 'S', len = 2;
  } else if ((d == 'p' || d == 'P') && i + 2 < p.size()) {
    std::string name;
    if (p[i + 2] == '{') {
      const size_t close = p.find('}', i + 3);
      if (close == std::string::npos) return false;
      name = p.substr(i + 3, close - i - 3);
      len = close + 1 - i;
    } else {
      name = p.substr(i + 2, 1);
      len = 3;
    }
    negate = d == 'P';
    if (!name.empty() && name[0] == '^') negate = !negate, name.erase(0, 1);
    if (name == "L" || name == "Letter") {
      cls = Gpt2CharClass::kLetter;
    } else if (name == "N" || name == "Number") {
      cls = Gpt2CharClass::kNumber;
    } else {
      return false;
    }
  } else {
    return false;
  }
  ranges = gpt2_class_ranges(cls);
  if (negate) ranges = complement(ranges);
  return true;
}

}  // namespace

std::string rewrite_unicode_classes(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      Ranges ranges;
      size_t len = 0;
      if (class_escape(p, i, ranges, len)) {
        if (!in_class) out.push_back('[');
        out += class_body(ranges);
        if (!in_class) out.push_back(']');
        i += len;
      } else {
        out.append(p, i, 2);
        i += 2;
      }
    } else if (c == '[' && !in_class) {
      in_class = true;
      out.push_back(c);
      ++i;
      if (i < p.size() && p[i] == '^') out.push_back(p[i++]);
      if (i < p.size() && p[i] == ']') out.push_back(p[i++]);  // a literal ']' first
    } else if (c == '[' && in_class && i + 1 < p.size() && p[i + 1] == ':') {
      const size_t close = p.find(":]", i + 2);
      const size_t end = close == std::string::npos ? i + 1 : close + 2;
      out.append(p, i, end - i);
      i = end;
    } else {
      if (c == ']' && in_class) in_class = false;
      out.push_back(c);
      ++i;
    }
  }
  return out;
}

struct Regex::Impl {
  pcre2_code* code = nullptr;
  std::string where;
};

Regex::Regex(const std::string& pattern, const std::string& where) : impl_(new Impl) {
  impl_->where = where;
  const std::string rewritten = rewrite_unicode_classes(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset,
                              nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail(str(where, ": the regex \"", pattern, "\" is not supported (PCRE2: ",
             reinterpret_cast<const char*>(msg), ")"));
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // without JIT it still works, slower
}

Regex::~Regex() {
  if (impl_ && impl_->code) pcre2_code_free(impl_->code);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  size_t last_end = static_cast<size_t>(-1);
  auto next_char = [&](size_t at) {
    size_t len = 1;
    decode_utf8(text, at, len);
    return at + len;
  };
  while (pos <= text.size()) {
    const int rc = pcre2_match(impl_->code, subject, text.size(), pos, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      fail(str(impl_->where, ": the regex failed on the text (PCRE2: ",
               reinterpret_cast<const char*>(msg), ")"));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t s = ov[0], e = ov[1];
    if (s == e && s == last_end) {
      if (s >= text.size()) break;
      pos = next_char(s);
      continue;
    }
    out.emplace_back(s, e);
    last_end = e;
    pos = e;
  }
  pcre2_match_data_free(md);
  return out;
}

// ---- NFC -----------------------------------------------------------------------------------

namespace {

// Code points where NFC may not start afresh: those whose canonical decomposition starts with a
// non-starter, and starters that are the second part of some composition (Hangul vowels and
// trailing consonants among them). Text splits into independently normalizable stretches
// before every other character. Conservative: a code point wrongly marked only makes a
// stretch longer.
const std::vector<bool>& nfc_joins_previous() {
  static const std::vector<bool> table = [] {
    std::vector<bool> t(0x110000, false);
    utf8proc_int32_t buf[32];
    for (utf8proc_int32_t cp = 0; cp < 0x110000; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      int boundclass = 0;
      const auto n = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &boundclass);
      if (n < 1) continue;
      if (utf8proc_get_property(buf[0])->combining_class != 0) t[cp] = true;
      for (utf8proc_ssize_t k = 1; k < n; ++k)
        if (utf8proc_get_property(buf[k])->combining_class == 0) t[buf[k]] = true;
    }
    return t;
  }();
  return table;
}

bool nfc_of(std::string_view s, std::string& out) {
  utf8proc_uint8_t* result = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &result,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return false;
  out.assign(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return true;
}

// Appends `norm`, the NFC of in.text[start, end), aligning its characters with the input's as the
// reference does for a starter and its marks: the first output character (the composed starter)
// with the first input character, the rest with the input's last characters in order (the
// marks that did not compose), extra ones (decompositions) with the last input character.
void append_realigned(const AlignedText& in, size_t start, size_t end, const std::string& norm,
                      AlignedText& out) {
  out.text += norm;
  if (!in.tracked) return;
  std::vector<Span> in_chars;  // the span of each input character
  for (size_t at = start; at < end;) {
    size_t len = 1;
    decode_utf8(in.text, at, len);
    in_chars.push_back(in.span(at, at + len));
    at += len;
  }
  std::vector<size_t> out_lens;
  for (size_t at = 0; at < norm.size();) {
    size_t len = 1;
    decode_utf8(norm, at, len);
    out_lens.push_back(len);
    at += len;
  }
  const size_t n_in = in_chars.size(), n_out = out_lens.size();
  for (size_t k = 0; k < n_out; ++k) {
    size_t from = n_out >= n_in ? std::min(k, n_in - 1) : k == 0 ? 0 : n_in - n_out + k;
    out.align.insert(out.align.end(), out_lens[k], in_chars[from]);
  }
}

}  // namespace

AlignedText nfc(const AlignedText& in) {
  std::string whole;
  if (nfc_of(in.text, whole) && whole == in.text) return in;  // the common case
  const auto& joins = nfc_joins_previous();
  AlignedText out = in.derived();
  const std::string& t = in.text;
  size_t start = 0;
  auto flush = [&](size_t end) {
    if (end <= start) return;
    std::string norm;
    const std::string_view seg(t.data() + start, end - start);
    if (!nfc_of(seg, norm) || norm == seg) {
      out.append(in.slice(start, end));
    } else {
      append_realigned(in, start, end, norm, out);
    }
    start = end;
  };
  for (size_t at = 0; at < t.size();) {
    size_t len = 1;
    const uint32_t cp = decode_utf8(t, at, len);
    if (cp == kInvalidUtf8) {
      flush(at);
      start = at;
      flush(at + 1);
    } else if (!joins[cp]) {
      flush(at);
    }
    at += len;
  }
  flush(t.size());
  return out;
}

bool is_word_char(uint32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

}  // namespace weft
