// Lookup over the generated range tables: the Basic Multilingual Plane, where nearly all text
// lives, through a 64 KiB table built once; other planes by binary search over the ranges.
#include "runtime/data/unicode_classes.h"

#include <algorithm>
#include <array>
#include <iterator>

namespace weft {
namespace {

struct CodePointRange {
  uint32_t first, last;
};

#include "runtime/data/unicode_classes.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&table)[N], uint32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](uint32_t c, const CodePointRange& r) { return c < r.first; });
  return it != std::begin(table) && cp <= std::prev(it)->last;
}

Gpt2CharClass classify(uint32_t cp) {
  if (in_ranges(kGpt2Letters, cp)) return Gpt2CharClass::kLetter;
  if (in_ranges(kGpt2Numbers, cp)) return Gpt2CharClass::kNumber;
  if (in_ranges(kGpt2Spaces, cp)) return Gpt2CharClass::kSpace;
  return Gpt2CharClass::kOther;
}

using BmpTable = std::array<Gpt2CharClass, 0x10000>;

const BmpTable& bmp_table() {
  static const BmpTable table = [] {
    BmpTable t;
    for (uint32_t cp = 0; cp < t.size(); ++cp) t[cp] = classify(cp);
    return t;
  }();
  return table;
}

}  // namespace

Gpt2CharClass gpt2_char_class(uint32_t cp) {
  if (cp < 0x10000) return bmp_table()[cp];
  return cp <= 0x10FFFF ? classify(cp) : Gpt2CharClass::kOther;
}

std::vector<std::pair<uint32_t, uint32_t>> gpt2_class_ranges(Gpt2CharClass cls) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  auto add = [&](const auto& table) {
    for (const CodePointRange& r : table) out.emplace_back(r.first, r.last);
  };
  if (cls == Gpt2CharClass::kLetter) add(kGpt2Letters);
  if (cls == Gpt2CharClass::kNumber) add(kGpt2Numbers);
  if (cls == Gpt2CharClass::kSpace) add(kGpt2Spaces);
  return out;
}

uint32_t decode_utf8(std::string_view text, size_t at, size_t& len) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(at);
  len = 1;
  if (lead < 0x80) return lead;
  int extra;
  uint32_t cp, min;
  if (lead >= 0xC2 && lead <= 0xDF) {
    extra = 1, cp = lead & 0x1F, min = 0x80;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    extra = 2, cp = lead & 0x0F, min = 0x800;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    extra = 3, cp = lead & 0x07, min = 0x10000;
  } else {
    return kInvalidUtf8;  // continuation byte, C0/C1 (always overlong) or F5..FF
  }
  if (at + extra >= text.size()) return kInvalidUtf8;  // truncated
  for (int k = 1; k <= extra; ++k) {
    const unsigned char c = byte(at + k);
    if ((c & 0xC0) != 0x80) return kInvalidUtf8;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalidUtf8;
  len = static_cast<size_t>(extra) + 1;
  return cp;
}

}  // namespace weft
