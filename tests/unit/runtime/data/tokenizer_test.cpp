// Tokenizers: the byte tokenizer's round trip, GPT-2 BPE on a tiny hand-made vocabulary
// (pre-tokenizer boundaries, merge order, invalid UTF-8, eos, and file errors), and the
// pre-tokenizer's pieces and character classes against values printed by the reference.
#include "runtime/data/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/data/unicode_classes.h"
#include "tests/unit/runtime/data/data_test_util.h"

namespace weft {
namespace {

using testing::error_of;
using testing::TempDir;
using testing::write_file;

TEST(ByteTokenizerTest, RoundTripsEveryByte) {
  auto tok = make_tokenizer("byte");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::vector<int64_t> ids = tok->encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tok->decode(ids), all);
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eos_id(), 256);
  EXPECT_EQ(tok->decode({104, 105, 256}), "hi");  // eos decodes to nothing
  EXPECT_TRUE(tok->encode("").empty());
  EXPECT_NE(error_of([&] { tok->decode({257}); }).find("257"), std::string::npos);
  EXPECT_NE(error_of([&] { make_tokenizer("sentencepiece:x"); }).find("sentencepiece"),
            std::string::npos);
}

// GPT-2's printable stand-in for a byte (bytes_to_unicode), as UTF-8.
std::string sym(unsigned char b) {
  int shifted = 0;
  uint32_t cp = b;
  bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  if (!printable) {
    for (int x = 0; x < b; ++x) {
      bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
      shifted += !p;
    }
    cp = 256 + shifted;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

using Merges = std::vector<std::pair<std::string, std::string>>;

// A vocabulary with ids 0..255 for the bytes (id = byte value), then the merge results in order.
class TinyBpe {
 public:
  explicit TinyBpe(const Merges& merges, bool with_eos = true,
                   const std::string& header = "#version: 0.2\n") {
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[sym(static_cast<unsigned char>(b))] = b;
    std::string text = header;
    int64_t next = 256;
    for (const auto& m : merges) {
      if (!vocab.contains(m.first + m.second)) vocab[m.first + m.second] = next++;
      text += m.first + " " + m.second + "\n";
    }
    if (with_eos) vocab["<|endoftext|>"] = next++;
    write_file(dir_.file("vocab.json"), vocab.dump());
    write_file(dir_.file("merges.txt"), text);
    tok_ = make_tokenizer("gpt2:" + dir_.path());
    vocab_ = vocab;
  }
  int64_t id(const std::string& token) const { return vocab_.at(token).get<int64_t>(); }
  const Tokenizer& tok() const { return *tok_; }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  nlohmann::json vocab_;
  std::unique_ptr<Tokenizer> tok_;
};

const std::string G = sym(' ');  // "Ġ"

TEST(Gpt2TokenizerTest, MergesByRank) {
  TinyBpe bpe(Merges{{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {G, "w"}, {"o", "r"}});
  const Tokenizer& t = bpe.tok();
  EXPECT_EQ(t.encode("hello world"),
            (std::vector<int64_t>{bpe.id("hello"), bpe.id(G + "w"), bpe.id("or"), 'l', 'd'}));
  EXPECT_EQ(t.decode(t.encode("hello world")), "hello world");
  EXPECT_EQ(t.vocab_size(), 256 + 6 + 1);
  EXPECT_EQ(t.eos_id(), bpe.id("<|endoftext|>"));
  EXPECT_EQ(t.decode({t.eos_id()}), "<|endoftext|>");
}

TEST(Gpt2TokenizerTest, EachRoundMergesEveryOccurrenceBeforeLookingAgain) {
  // encoder.py merges all occurrences of the best pair, then re-ranks. Here "xy x" has the
  // better rank but only exists after the round that merges "x y" everywhere, so "xyxy" ends as
  // [xy, xy]; merging one pair at a time would give [xyx, y].
  TinyBpe bpe(Merges{{"xy", "x"}, {"x", "y"}});
  EXPECT_EQ(bpe.tok().encode("xyxy"), (std::vector<int64_t>{bpe.id("xy"), bpe.id("xy")}));
  EXPECT_EQ(bpe.tok().encode("xyx"), (std::vector<int64_t>{bpe.id("xyx")}));
  // Overlapping occurrences merge left to right: "aaa" -> [aa, a].
  TinyBpe aa(Merges{{"a", "a"}});
  EXPECT_EQ(aa.tok().encode("aaa"), (std::vector<int64_t>{aa.id("aa"), 'a'}));
  EXPECT_EQ(aa.tok().encode("aaaa"), (std::vector<int64_t>{aa.id("aa"), aa.id("aa")}));
}

TEST(Gpt2TokenizerTest, PreTokenizerBoundariesFollowTheGpt2Regex) {
  // With only "ĠĠ" and contraction merges, the ids show where the regex split the text.
  TinyBpe bpe(Merges{{G, G}, {"'", "t"}, {"'", "s"}, {G, "b"}});
  const Tokenizer& t = bpe.tok();
  const int64_t gg = bpe.id(G + G), g = ' ';
  // "a  b": \s+(?!\S) leaves the last space to join "b": pieces "a", " ", " b".
  EXPECT_EQ(t.encode("a  b"), (std::vector<int64_t>{'a', g, bpe.id(G + "b")}));
  // Trailing whitespace is one piece: "a", "   " -> [ĠĠ, Ġ].
  EXPECT_EQ(t.encode("a   "), (std::vector<int64_t>{'a', gg, g}));
  // Contractions are their own pieces; uppercase ones are not (as in GPT-2).
  EXPECT_EQ(t.encode("don't"), (std::vector<int64_t>{'d', 'o', 'n', bpe.id("'t")}));
  EXPECT_EQ(t.encode("it's"), (std::vector<int64_t>{'i', 't', bpe.id("'s")}));
  EXPECT_EQ(t.encode("IT'S"), (std::vector<int64_t>{'I', 'T', '\'', 'S'}));
  // Letters and digits split: "ab12" -> "ab", "12" (no merges, so bytes).
  EXPECT_EQ(t.encode("ab12"), (std::vector<int64_t>{'a', 'b', '1', '2'}));
}

TEST(Gpt2TokenizerTest, UnicodeLettersStayTogether) {
  // "ï" is two bytes; as a letter it belongs to the word piece, so "ïv" can merge.
  const std::string i_uml = "\xC3\xAF";
  TinyBpe bpe(Merges{{sym(0xC3), sym(0xAF)}, {sym(0xC3) + sym(0xAF), "v"}});
  EXPECT_EQ(bpe.tok().encode("na" + i_uml + "ve"),
            (std::vector<int64_t>{'n', 'a', bpe.id(sym(0xC3) + sym(0xAF) + "v"), 'e'}));
}

TEST(Gpt2TokenizerTest, AnyBytesRoundTrip) {
  TinyBpe bpe(Merges{{"a", "b"}, {G, "a"}});
  const Tokenizer& t = bpe.tok();
  std::string invalid = "ok \xFF\xFE ab \xC3 a\x80 \xED\xA0\x80 end";  // invalid UTF-8 pieces
  EXPECT_EQ(t.decode(t.encode(invalid)), invalid);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(t.decode(t.encode(all)), all);
  EXPECT_EQ(t.decode(t.encode(all + all + " ab ab\n\n")), all + all + " ab ab\n\n");
}

TEST(Gpt2TokenizerTest, ConcurrentEncodeMatchesSequential) {
  TinyBpe bpe(Merges{{"a", "b"}, {G, "ab"}, {"c", "d"}, {G, G}});
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) {
    std::string s;
    for (int j = 0; j < 50 + i; ++j) s += (j * 7 + i) % 5 ? "ab cd " : "  x\n";
    texts.push_back(s);
  }
  std::vector<std::vector<int64_t>> want;
  for (const auto& s : texts) want.push_back(bpe.tok().encode(s));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 20; ++r)
        for (size_t i = t; i < texts.size(); i += 2)
          mismatches[t] += bpe.tok().encode(texts[i]) != want[i];
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, (std::vector<int>{0, 0, 0, 0}));
}

TEST(Gpt2TokenizerTest, EosIsOptionalUntilAskedFor) {
  TinyBpe bpe(Merges{{"a", "b"}}, /*with_eos=*/false);
  EXPECT_EQ(bpe.tok().encode("ab").size(), 1u);
  std::string msg = error_of([&] { bpe.tok().eos_id(); });
  EXPECT_NE(msg.find("vocab.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("<|endoftext|>"), std::string::npos) << msg;
}

TEST(Gpt2TokenizerTest, MergesWithoutHeaderAndWithCrlf) {
  TinyBpe plain(Merges{{"a", "b"}}, true, "");
  EXPECT_EQ(plain.tok().encode("ab"), (std::vector<int64_t>{plain.id("ab")}));
  TempDir dir;
  write_file(dir.file("vocab.json"), R"({"a": 0, "b": 1, "ab": 2})");
  write_file(dir.file("merges.txt"), "#version: 0.2\r\na b\r\n");
  EXPECT_EQ(make_tokenizer("gpt2:" + dir.path())->encode("ab"), (std::vector<int64_t>{2}));
}

TEST(Gpt2TokenizerTest, FileErrorsNameTheFile) {
  TempDir dir;
  const std::string spec = "gpt2:" + dir.path();
  std::string msg = error_of([&] { make_tokenizer(spec); });
  EXPECT_NE(msg.find(dir.file("vocab.json")), std::string::npos) << msg;

  write_file(dir.file("vocab.json"), R"({"a": 0, "b": 1, "ab": 2})");
  msg = error_of([&] { make_tokenizer(spec); });
  EXPECT_NE(msg.find(dir.file("merges.txt")), std::string::npos) << msg;

  write_file(dir.file("merges.txt"), "#version: 0.2\na b\nab\n");
  msg = error_of([&] { make_tokenizer(spec); });
  EXPECT_NE(msg.find(dir.file("merges.txt") + ":3"), std::string::npos) << msg;

  write_file(dir.file("merges.txt"), "a c\n");
  msg = error_of([&] { make_tokenizer(spec); });
  EXPECT_NE(msg.find(dir.file("merges.txt") + ":1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"c\""), std::string::npos) << msg;

  write_file(dir.file("vocab.json"), R"({"a": 0, "b": )");
  EXPECT_NE(error_of([&] { make_tokenizer(spec); }).find(dir.file("vocab.json")),
            std::string::npos);
  write_file(dir.file("vocab.json"), R"({"a": 0, "b": 0})");
  EXPECT_NE(error_of([&] { make_tokenizer(spec); }).find("id 0"), std::string::npos);
  write_file(dir.file("vocab.json"), R"({"a": -3})");
  EXPECT_NE(error_of([&] { make_tokenizer(spec); }).find(dir.file("vocab.json")),
            std::string::npos);

  // A vocabulary without all 256 byte symbols fails when it meets an unknown byte.
  write_file(dir.file("vocab.json"), R"({"a": 0, "b": 1, "ab": 2})");
  write_file(dir.file("merges.txt"), "a b\n");
  auto tok = make_tokenizer(spec);
  EXPECT_EQ(tok->encode("abab"), (std::vector<int64_t>{2, 2}));
  msg = error_of([&] { tok->encode("abc"); });
  EXPECT_NE(msg.find("vocab.json"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { tok->decode({7}); }).find("7"), std::string::npos);
}

using Pieces = std::vector<std::string>;

Pieces pieces_of(const std::string& text) {
  Pieces out;
  for (std::string_view p : gpt2_pre_tokenize(text)) out.emplace_back(p);
  return out;
}

TEST(Gpt2PreTokenizeTest, PiecesMatchTheReference) {
  // Expected pieces: Hugging Face tokenizers 0.23.3,
  // pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text), as UTF-8.
  // U+180E is not whitespace there (it was before Unicode 6.3); U+1C89 is a letter (Unicode 16).
  EXPECT_EQ(pieces_of("word \u180Eword"), (Pieces{"word", " \u180E", "word"}));
  EXPECT_EQ(pieces_of("x \u1C89y"), (Pieces{"x", " \u1C89y"}));
  EXPECT_EQ(pieces_of("a\u3000 b"), (Pieces{"a", "\u3000", " b"}));
  EXPECT_EQ(pieces_of("x\u00A0\u00A0y"), (Pieces{"x", "\u00A0", "\u00A0", "y"}));
  EXPECT_EQ(pieces_of("1\u00BD\u2167 \U0001D7CE"), (Pieces{"1\u00BD\u2167", " \U0001D7CE"}));
  EXPECT_EQ(pieces_of("\U0002F800\U00010000 \U0001F600!"),
            (Pieces{"\U0002F800\U00010000", " \U0001F600!"}));
  EXPECT_EQ(pieces_of("a\x1C\x1F" "b"), (Pieces{"a", "\x1C\x1F", "b"}));
  EXPECT_EQ(pieces_of("a\u0085 b"), (Pieces{"a", "\u0085", " b"}));
  EXPECT_EQ(pieces_of("a  b   "), (Pieces{"a", " ", " b", "   "}));
  EXPECT_EQ(pieces_of("?'s ''s"), (Pieces{"?'", "s", " ''", "s"}));
  EXPECT_TRUE(pieces_of("").empty());
}

TEST(Gpt2PreTokenizeTest, InvalidUtf8BytesAreOtherCharacters) {
  // Expected pieces: OpenAI's regex (Python `regex`) over bytes.decode("utf-8",
  // "surrogateescape"), each piece encoded back the same way: every invalid byte is one
  // character that is neither letter, number nor space.
  EXPECT_EQ(pieces_of("!\xFF?"), (Pieces{"!\xFF?"}));
  EXPECT_EQ(pieces_of("a\xFF" "b"), (Pieces{"a", "\xFF", "b"}));
  EXPECT_EQ(pieces_of(" \xFF"), (Pieces{" \xFF"}));
  EXPECT_EQ(pieces_of("  \xFF"), (Pieces{" ", " \xFF"}));
  EXPECT_EQ(pieces_of("x\xE2\x82" "a"), (Pieces{"x", "\xE2\x82", "a"}));
  EXPECT_EQ(pieces_of("\xE2\x82\xAC" "5"), (Pieces{"\xE2\x82\xAC", "5"}));
  EXPECT_EQ(pieces_of("it\xFF's"), (Pieces{"it", "\xFF'", "s"}));
  EXPECT_EQ(pieces_of("\xC0\xAF \xF4\x90\x80\x80"), (Pieces{"\xC0\xAF", " \xF4\x90\x80\x80"}));
  EXPECT_EQ(pieces_of("\xED\xA0\x80z"), (Pieces{"\xED\xA0\x80", "z"}));
  EXPECT_EQ(pieces_of("\xF0\x9F\x98\x80\xF0\x9F\x98"), (Pieces{"\xF0\x9F\x98\x80\xF0\x9F\x98"}));
  // A NUL byte is an ordinary (other) character.
  EXPECT_EQ(pieces_of(std::string("a\0\0 b", 5)), (Pieces{"a", std::string("\0\0", 2), " b"}));
}

TEST(UnicodeClassesTest, DecodeUtf8IsStrict) {
  size_t len = 0;
  EXPECT_EQ(decode_utf8("A", 0, len), 0x41u);
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(decode_utf8("\xF0\x9F\x98\x80", 0, len), 0x1F600u);
  EXPECT_EQ(len, 4u);
  EXPECT_EQ(decode_utf8("\xF4\x8F\xBF\xBF", 0, len), 0x10FFFFu);
  EXPECT_EQ(decode_utf8("x\xE2\x82\xAC", 1, len), 0x20ACu);
  EXPECT_EQ(len, 3u);
  for (const char* bad : {"\x80", "\xC0\xAF", "\xC1\xBF", "\xE0\x80\x80", "\xED\xA0\x80",
                          "\xF0\x80\x80\x80", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xFF",
                          "\xE2\x82", "\xE2\x82" "A", "\xC3"}) {
    EXPECT_EQ(decode_utf8(bad, 0, len), kInvalidUtf8) << bad;
    EXPECT_EQ(len, 1u) << bad;
  }
}

TEST(UnicodeClassesTest, ClassesFollowTheReference) {
  // Classes as the reference's ByteLevel pre-tokenizer shows them (tokenizers 0.23.3).
  EXPECT_EQ(gpt2_char_class('a'), Gpt2CharClass::kLetter);
  EXPECT_EQ(gpt2_char_class('7'), Gpt2CharClass::kNumber);
  EXPECT_EQ(gpt2_char_class(' '), Gpt2CharClass::kSpace);
  EXPECT_EQ(gpt2_char_class(0x0B), Gpt2CharClass::kSpace);
  EXPECT_EQ(gpt2_char_class(0x1C), Gpt2CharClass::kOther);
  EXPECT_EQ(gpt2_char_class('\''), Gpt2CharClass::kOther);
  EXPECT_EQ(gpt2_char_class(0x180E), Gpt2CharClass::kOther);
  EXPECT_EQ(gpt2_char_class(0x1C89), Gpt2CharClass::kLetter);
  EXPECT_EQ(gpt2_char_class(0x3000), Gpt2CharClass::kSpace);
  EXPECT_EQ(gpt2_char_class(0x2167), Gpt2CharClass::kNumber);
  EXPECT_EQ(gpt2_char_class(0x1D7CE), Gpt2CharClass::kNumber);
  EXPECT_EQ(gpt2_char_class(0x2F800), Gpt2CharClass::kLetter);
  EXPECT_EQ(gpt2_char_class(0x1F600), Gpt2CharClass::kOther);
  EXPECT_EQ(gpt2_char_class(0xD800), Gpt2CharClass::kOther);
  EXPECT_EQ(gpt2_char_class(0x10FFFF), Gpt2CharClass::kOther);
  EXPECT_EQ(gpt2_char_class(0x110000), Gpt2CharClass::kOther);
}

}  // namespace
}  // namespace weft
