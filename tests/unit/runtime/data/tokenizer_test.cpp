// Tokenizers: the byte tokenizer's round trip, and GPT-2 BPE on a tiny hand-made vocabulary
// (pre-tokenizer boundaries, merge order, invalid UTF-8, eos, and file errors).
#include "runtime/data/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

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

}  // namespace
}  // namespace weft
