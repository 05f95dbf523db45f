// run_preprocess: JSON Lines and plain-text inputs become the expected documents; bad input is
// an error naming file:line and leaves any previous output untouched.
#include "runtime/data/preprocess.h"

#include <gtest/gtest.h>

#include "runtime/data/indexed_dataset.h"
#include "tests/unit/runtime/data/data_test_util.h"

namespace weft {
namespace {

using testing::error_of;
using testing::TempDir;
using testing::write_file;

std::vector<std::vector<int64_t>> documents_of(const std::string& prefix) {
  IndexedDataset d(prefix);
  std::vector<std::vector<int64_t>> docs;
  EXPECT_EQ(d.num_sequences(), d.num_documents());  // one sequence per document
  for (int64_t s = 0; s < d.num_sequences(); ++s) {
    std::vector<int64_t> t(static_cast<size_t>(d.sequence_length(s)));
    d.read(s, 0, static_cast<int64_t>(t.size()), t.data());
    docs.push_back(t);
  }
  return docs;
}

std::vector<int64_t> bytes_eos(const std::string& s, bool eos = true) {
  std::vector<int64_t> ids(s.begin(), s.end());
  for (auto& v : ids) v = static_cast<unsigned char>(v);
  if (eos) ids.push_back(256);
  return ids;
}

PreprocessOptions options(const std::string& input, const std::string& output) {
  PreprocessOptions o;
  o.input = input;
  o.output_prefix = output;
  o.tokenizer_spec = "byte";
  o.progress = false;
  return o;
}

TEST(PreprocessTest, JsonLines) {
  TempDir dir;
  write_file(dir.file("in.jsonl"),
             "{\"text\": \"hello\", \"id\": 1}\n"
             "\n"
             "{\"text\": \"\"}\n"
             "{\"text\": \"caf\\u00e9\\nline\"}\n");
  PreprocessStats st = run_preprocess(options(dir.file("in.jsonl"), dir.file("out/nested/ds")));
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.skipped_empty, 1);
  EXPECT_EQ(st.tokens, 6 + 11);
  EXPECT_EQ(st.dtype_code, kDtypeUInt16);
  EXPECT_EQ(
      documents_of(dir.file("out/nested/ds")),
      (std::vector<std::vector<int64_t>>{bytes_eos("hello"), bytes_eos("caf\xC3\xA9\nline")}));
}

TEST(PreprocessTest, OtherJsonKeyAndNoEos) {
  TempDir dir;
  write_file(dir.file("in.json"), "{\"content\": \"ab\"}\n{\"content\": \"c\", \"text\": 5}\n");
  auto o = options(dir.file("in.json"), dir.file("ds"));
  o.json_key = "content";
  o.append_eos = false;
  run_preprocess(o);
  EXPECT_EQ(documents_of(dir.file("ds")),
            (std::vector<std::vector<int64_t>>{bytes_eos("ab", false), bytes_eos("c", false)}));
}

TEST(PreprocessTest, PlainTextParagraphsAreDocuments) {
  TempDir dir;
  write_file(dir.file("in.txt"),
             "\n\nfirst line\nsecond line\n\n\n  \t\nnext doc\r\nwith crlf\r\n\r\nlast");
  PreprocessStats st = run_preprocess(options(dir.file("in.txt"), dir.file("ds")));
  EXPECT_EQ(st.documents, 3);
  EXPECT_EQ(
      documents_of(dir.file("ds")),
      (std::vector<std::vector<int64_t>>{bytes_eos("first line\nsecond line"),
                                         bytes_eos("next doc\nwith crlf"), bytes_eos("last")}));
}

TEST(PreprocessTest, BadLinesNameFileAndLine) {
  TempDir dir;
  const std::string in = dir.file("bad.jsonl");
  write_file(in, "{\"text\": \"ok\"}\n{\"text\": \"broken\n");
  std::string msg = error_of([&] { run_preprocess(options(in, dir.file("ds"))); });
  EXPECT_NE(msg.find(in + ":2"), std::string::npos) << msg;

  write_file(in, "{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n");
  msg = error_of([&] { run_preprocess(options(in, dir.file("ds"))); });
  EXPECT_NE(msg.find(in + ":3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"text\""), std::string::npos) << msg;

  write_file(in, "{\"text\": 3}\n");
  EXPECT_NE(error_of([&] { run_preprocess(options(in, dir.file("ds"))); }).find(in + ":1"),
            std::string::npos);
  write_file(in, "[\"text\"]\n");
  EXPECT_NE(error_of([&] { run_preprocess(options(in, dir.file("ds"))); }).find(in + ":1"),
            std::string::npos);
  msg = error_of([&] { run_preprocess(options(dir.file("missing.jsonl"), dir.file("ds"))); });
  EXPECT_NE(msg.find(dir.file("missing.jsonl")), std::string::npos) << msg;
}

TEST(PreprocessTest, FailedRunKeepsPreviousOutput) {
  TempDir dir;
  write_file(dir.file("good.jsonl"), "{\"text\": \"keep me\"}\n");
  run_preprocess(options(dir.file("good.jsonl"), dir.file("ds")));
  write_file(dir.file("bad.jsonl"), "{\"text\": \"new\"}\nnot json\n");
  const std::string msg = error_of([&] { run_preprocess(options(dir.file("bad.jsonl"), dir.file("ds"))); });
  EXPECT_NE(msg.find(dir.file("bad.jsonl") + ":2"), std::string::npos) << msg;  // the bad line
  EXPECT_EQ(documents_of(dir.file("ds")),
            (std::vector<std::vector<int64_t>>{bytes_eos("keep me")}));
  EXPECT_FALSE(std::filesystem::exists(dir.file("ds.bin.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("ds.idx.tmp")));
}

}  // namespace
}  // namespace weft
