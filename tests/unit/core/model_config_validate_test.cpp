// ModelConfig::validate: the one set of model checks shared by YAML job files and HF config.json
// (which names fields its own way), and the refusal of empty job files.
#include "tests/unit/test_util.h"
#include "weft/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "weft/error.h"

namespace weft {
namespace {

using testing::error_of;

std::string yaml_key(const std::string& field) { return "model." + field; }
std::string hf_key(const std::string& field) { return field == "num_heads" ? "num_attention_heads" : field; }

ModelConfig tiny() {
  ModelConfig m;
  m.vocab_size = 257, m.hidden_size = 64, m.num_layers = 2, m.num_heads = 4, m.ffn_hidden_size = 128;
  m.max_seq_len = 64;
  return m;
}

TEST(ModelConfigValidate, NamesSourceAndKeyAsTheSourceSpellsThem) {
  auto m = tiny();
  m.num_heads = 0;  // would divide by zero in head_dim()
  EXPECT_EQ(error_of([&] { m.validate("d/config.json", hf_key); }), "d/config.json: num_attention_heads must be > 0, got 0");
  EXPECT_EQ(error_of([&] { m.validate("config", yaml_key); }), "config: model.num_heads must be > 0, got 0");
}

TEST(ModelConfigValidate, RefusesNonDivisibleHugeAndNonFiniteValues) {
  auto m = tiny();
  m.num_heads = 5;
  EXPECT_NE(error_of([&] { m.validate("c", yaml_key); }).find("divisible by model.num_heads (5)"), std::string::npos);
  m = tiny();
  m.vocab_size = int64_t(1) << 40;
  EXPECT_NE(error_of([&] { m.validate("c", yaml_key); }).find("model.vocab_size = 1099511627776 is implausibly large"),
            std::string::npos);
  m = tiny();
  m.norm_eps = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(error_of([&] { m.validate("c", yaml_key); }).find("model.norm_eps must be a finite number > 0"),
            std::string::npos);
  m = tiny();
  m.num_kv_heads = 3;
  EXPECT_NE(error_of([&] { m.validate("c", yaml_key); }).find("multiple of model.num_kv_heads (3)"), std::string::npos);
  m = tiny();
  m.rope_scaling.type = "llama3";
  m.rope_scaling.high_freq_factor = m.rope_scaling.low_freq_factor;
  EXPECT_NE(error_of([&] { m.validate("c", yaml_key); }).find("must be greater than"), std::string::npos);
  EXPECT_NO_THROW(tiny().validate("c", yaml_key));
}

TEST(ModelConfigValidate, EmptyOrCommentOnlyJobFileIsAnErrorNamingIt) {
  const auto dir = std::filesystem::temp_directory_path() / "weft_empty_config_test";
  std::filesystem::create_directories(dir);
  for (const char* text : {"", "# only a comment\n", "~\n"}) {
    const auto path = (dir / "job.yaml").string();
    std::ofstream(path) << text;
    const auto msg = error_of([&] { load_config(path); });
    EXPECT_NE(msg.find(path + ": the config file is empty"), std::string::npos) << msg;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace weft
