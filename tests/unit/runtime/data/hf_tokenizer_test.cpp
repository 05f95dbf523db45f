// hf:DIR and sp:FILE tokenizers: errors name the file and the JSON path of what is unsupported;
// merge order follows `tokenizers`; the regex class rewriting. Parity with the reference
// packages on real-sized files is tests/parity/test_hf_tokenizers.py.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/data/text_ops.h"
#include "runtime/data/tokenizer.h"
#include "tests/unit/runtime/data/data_test_util.h"

namespace weft {
namespace {

using nlohmann::json;
using testing::error_of;
using testing::TempDir;
using testing::write_file;

// A minimal valid tokenizer.json: characters x, y, z and merges; `edit` changes it.
json tiny_tokenizer_json() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 4, "content": "<|end|>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\s+"}, "behavior": "Isolated", "invert": false}]},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [], "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [4], "tokens": ["<|end|>"]}}},
    "decoder": null,
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"x": 0, "y": 1, "xy": 2, "xyx": 3, " ": 5},
              "merges": [["xy", "x"], "x y"]}
  })");
}

std::string hf_error(const json& j) {
  TempDir dir;
  write_file(dir.file("tokenizer.json"), j.dump());
  return error_of([&] { make_tokenizer("hf:" + dir.path()); });
}

TEST(HfTokenizerTest, MergesAsTokenizersDoes) {
  TempDir dir;
  write_file(dir.file("tokenizer.json"), tiny_tokenizer_json().dump());
  auto tok = make_tokenizer("hf:" + dir.path());
  // Expected: tokenizers 0.23.3, BPE(vocab, merges=[("xy","x"), ("x","y")]).encode("xyxy") gives
  // ['xyx', 'y']: a pair a merge creates competes at once (OpenAI's rounds would give [xy, xy]).
  EXPECT_EQ(tok->encode("xyxy"), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(tok->encode("xy<|end|>x"), (std::vector<int64_t>{2, 4, 0}));
  const Encoding enc = tok->encode_with_offsets("xy<|end|> x");
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 9}, {9, 10}, {10, 11}}));
  EXPECT_EQ(tok->add_special_tokens({0, 1}), (std::vector<int64_t>{4, 0, 1}));
  EXPECT_EQ(tok->bos_id(), 4);  // no tokenizer_config.json: the template's leading special token
  EXPECT_EQ(tok->vocab_size(), 6);
  EXPECT_EQ(tok->token_to_id("<|end|>"), 4);
  EXPECT_EQ(tok->token_to_id("nope"), -1);
  EXPECT_EQ(tok->decode({3, 1}), "xyx y");  // no decoder: tokens joined with spaces, as tokenizers
  const std::string msg = error_of([&] { tok->eos_id(); });
  EXPECT_NE(msg.find(dir.file("tokenizer.json")), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { tok->encode("xq"); }).find("0x71"), std::string::npos);
}

TEST(HfTokenizerTest, UnsupportedPartsNameTheJsonPath) {
  json j = tiny_tokenizer_json();
  j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Whitespace"}});
  std::string msg = hf_error(j);
  EXPECT_NE(msg.find("tokenizer.json: pre_tokenizer.pretokenizers[1].type \"Whitespace\" is not supported"),
            std::string::npos) << msg;

  j = tiny_tokenizer_json();
  j["model"]["type"] = "WordPiece";
  msg = hf_error(j);
  EXPECT_NE(msg.find("model.type \"WordPiece\""), std::string::npos) << msg;

  j = tiny_tokenizer_json();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
  msg = hf_error(j);
  EXPECT_NE(msg.find("normalizer.normalizers[1].type \"Lowercase\""), std::string::npos) << msg;

  j = tiny_tokenizer_json();
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  EXPECT_NE(hf_error(j).find("decoder.type \"WordPiece\""), std::string::npos);

  j = tiny_tokenizer_json();
  j["post_processor"] = {{"type", "BertProcessing"}};
  EXPECT_NE(hf_error(j).find("post_processor.type \"BertProcessing\""), std::string::npos);

  j = tiny_tokenizer_json();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  msg = hf_error(j);
  EXPECT_NE(msg.find("pre_tokenizer.pretokenizers[0]: the regex \"(unclosed\""), std::string::npos) << msg;

  j = tiny_tokenizer_json();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  EXPECT_NE(hf_error(j).find("pre_tokenizer.pretokenizers[0].behavior \"Sideways\""), std::string::npos);

  j = tiny_tokenizer_json();
  j["model"]["merges"].push_back("x q");
  EXPECT_NE(hf_error(j).find("needs token \"q\""), std::string::npos);

  j = tiny_tokenizer_json();
  j["model"]["dropout"] = 0.1;
  EXPECT_NE(hf_error(j).find("model.dropout 0.1"), std::string::npos);

  j = tiny_tokenizer_json();
  j["truncation"] = {{"max_length", 8}};
  EXPECT_NE(hf_error(j).find("truncation"), std::string::npos);

  for (const std::string& m : {hf_error(json::array()), hf_error(json({{"model", 3}}))})
    EXPECT_NE(m.find("tokenizer.json"), std::string::npos) << m;
  for (const std::string& m : {msg, hf_error(j)}) EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(HfTokenizerTest, MissingAndBrokenFilesAreNamed) {
  TempDir dir;
  std::string msg = error_of([&] { make_tokenizer("hf:" + dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer.json")), std::string::npos) << msg;
  write_file(dir.file("tokenizer.json"), "{\"model\": ");
  msg = error_of([&] { make_tokenizer("hf:" + dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer.json") + " is not valid JSON"), std::string::npos) << msg;

  msg = error_of([&] { make_tokenizer("sp:" + dir.file("missing.model")); });
  EXPECT_NE(msg.find(dir.file("missing.model")), std::string::npos) << msg;
  write_file(dir.file("bad.model"), "this is not a protobuf");
  msg = error_of([&] { make_tokenizer("sp:" + dir.file("bad.model")); });
  EXPECT_NE(msg.find(dir.file("bad.model") + " is not a SentencePiece model"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { make_tokenizer("sp:"); }).find("sp:FILE"), std::string::npos);

  write_file(dir.file("tokenizer.json"), tiny_tokenizer_json().dump());
  write_file(dir.file("tokenizer_config.json"), R"({"eos_token": {"content": "<|missing|>"}})");
  msg = error_of([&] { make_tokenizer("hf:" + dir.path()); });
  EXPECT_NE(msg.find(dir.file("tokenizer_config.json") + ": eos_token \"<|missing|>\""), std::string::npos)
      << msg;
  write_file(dir.file("tokenizer_config.json"), R"({"eos_token": "<|end|>", "bos_token": null})");
  auto tok = make_tokenizer("hf:" + dir.path());
  EXPECT_EQ(tok->eos_id(), 4);
  EXPECT_EQ(tok->bos_id(), 4);  // bos_token null: the template's special token
}

TEST(HfTokenizerTest, TokenizerFilesTravel) {
  TempDir dir;
  write_file(dir.file("tokenizer.json"), tiny_tokenizer_json().dump());
  write_file(dir.file("tokenizer_config.json"), "{}");
  TokenizerFiles f = tokenizer_files("hf:" + dir.path());
  EXPECT_EQ(f.own_spec, "hf:.");
  EXPECT_EQ(f.paths.size(), 2u);
  EXPECT_EQ(f.paths.at("tokenizer.json"), dir.file("tokenizer.json"));
  EXPECT_TRUE(tokenizer_files("byte").paths.empty());
  EXPECT_EQ(tokenizer_files("sp:" + dir.file("tokenizer.json")).paths.at("tokenizer.model"),
            dir.file("tokenizer.json"));
  EXPECT_NE(error_of([&] { tokenizer_files("sp:" + dir.file("nope.model")); }).find("nope.model"),
            std::string::npos);
  EXPECT_EQ(resolve_checkpoint_tokenizer("hf:.", "/ck/step_5"), "hf:/ck/step_5");
  EXPECT_EQ(resolve_checkpoint_tokenizer("gpt2:.", "/ck"), "gpt2:/ck");
  EXPECT_EQ(resolve_checkpoint_tokenizer("hf:/x", "/ck"), "hf:/x");
}

TEST(RegexTest, UnicodeClassesAreRewrittenInAndOutOfBrackets) {
  // \s is the probed whitespace table (9-D, 20, 85, A0, 1680, 2000-200A, 2028-2029, 202F, 205F, 3000).
  EXPECT_EQ(rewrite_unicode_classes("a\\s"),
            "a[\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}-\\x{2029}\\x{202F}"
            "\\x{205F}\\x{3000}]");
  EXPECT_EQ(rewrite_unicode_classes("[^\\s]").rfind("[^\\x{9}-\\x{D}", 0), 0u);
  EXPECT_EQ(rewrite_unicode_classes("\\S").rfind("[\\x{0}-\\x{8}\\x{E}-\\x{1F}\\x{21}-", 0), 0u);
  EXPECT_EQ(rewrite_unicode_classes("\\p{Lu}\\d\\\\p"), "\\p{Lu}\\d\\\\p");  // others unchanged
  Regex r("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|\\s+(?!\\S)|\\s+", "test");
  // U+1C89 is a letter and U+180E not whitespace for the reference (see tokenizer_test.cpp).
  const std::string text = "\u1C89x 12345 \u180E  a";
  // U+180E matches no alternative; " a" is taken by the first alternative.
  std::vector<std::pair<size_t, size_t>> want{{0, 4}, {4, 5}, {5, 8}, {8, 10}, {10, 11}, {14, 15}, {15, 17}};
  EXPECT_EQ(r.find_all(text), want);
  // Invalid UTF-8 is never matched, and never an error.
  EXPECT_EQ(r.find_all("a\xFF" "b"), (std::vector<std::pair<size_t, size_t>>{{0, 1}, {2, 3}}));
}

}  // namespace
}  // namespace weft
