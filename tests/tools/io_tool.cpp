// weft_io_tool: a test-only bridge that lets the Python parity scripts drive Weft's file formats.
// The scripts hold the expected values; this tool only writes what it is told and prints what it
// reads, so TensorBoard's and safetensors' own readers/writers check Weft's byte formats.
#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "core/tensorboard.h"

namespace {

using nlohmann::ordered_json;

const char* kUsage =
    "usage: weft_io_tool COMMAND ARG\n"
    "  tb-write DIR    stdin lines 'tag<TAB>step<TAB>value' (or 'flush') -> one event file in DIR;\n"
    "                  prints the file's path\n"
    "  st-write FILE   stdin JSON {\"metadata\": {str: str}, \"tensors\": [{\"name\", \"dtype\",\n"
    "                  \"shape\", \"hex\", \"transpose\"?: bool}]} -> FILE; a transposed entry is\n"
    "                  written as the (non-contiguous) transpose of the given 2-D tensor;\n"
    "                  prints {\"bytes\", \"crc32c\"}\n"
    "  st-read FILE    prints {\"metadata\", \"tensors\": [{\"name\", \"dtype\", \"shape\", \"hex\"}],\n"
    "                  \"crc32c\"} in file order\n"
    "  crc32c FILE     prints the file's CRC-32C in decimal\n";

std::string to_hex(const void* data, size_t n) {
  static const char* digits = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) out += {digits[p[i] >> 4], digits[p[i] & 15]};
  return out;
}

std::string from_hex(const std::string& h, const std::string& name) {
  WEFT_CHECK(h.size() % 2 == 0, "tensor '", name, "': hex string has odd length");
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    weft::fail(weft::str("tensor '", name, "': bad hex digit '", c, "'"));
  };
  std::string out(h.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<char>(nibble(h[2 * i]) << 4 | nibble(h[2 * i + 1]));
  return out;
}

int tb_write(const std::string& dir) {
  weft::TensorBoardWriter w(dir);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    if (line == "flush") {
      w.flush();
      continue;
    }
    const size_t a = line.find('\t'), b = line.find('\t', a + 1);
    WEFT_CHECK(a != std::string::npos && b != std::string::npos,
               "tb-write: expected 'tag<TAB>step<TAB>value', got: ", line);
    w.add_scalar(line.substr(0, a), std::stod(line.substr(b + 1)),
                 std::stoll(line.substr(a + 1, b - a - 1)));
  }
  std::cout << w.path() << "\n";
  return 0;
}

int st_write(const std::string& file) {
  const ordered_json spec = ordered_json::parse(std::cin);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& t : spec.at("tensors")) {
    const std::string name = t.at("name");
    const std::string bytes = from_hex(t.at("hex"), name);
    at::Tensor x = at::empty(t.at("shape").get<std::vector<int64_t>>(),
                             at::TensorOptions().dtype(weft::safetensors_dtype(t.at("dtype"))));
    WEFT_CHECK(x.nbytes() == bytes.size(), "tensor '", name, "': ", bytes.size(),
               " bytes given, shape needs ", x.nbytes());
    if (!bytes.empty()) std::memcpy(x.data_ptr(), bytes.data(), bytes.size());
    if (t.value("transpose", false)) x = x.t();
    tensors.emplace_back(name, x);
  }
  std::map<std::string, std::string> metadata;
  if (spec.contains("metadata")) metadata = spec["metadata"].get<std::map<std::string, std::string>>();
  const auto r = weft::write_safetensors(file, tensors, metadata);
  std::cout << ordered_json{{"bytes", r.bytes}, {"crc32c", r.crc32c}}.dump() << "\n";
  return 0;
}

int st_read(const std::string& file) {
  weft::SafetensorsReader r(file);
  ordered_json out = {{"metadata", r.metadata()}, {"tensors", ordered_json::array()}};
  for (const auto& name : r.names()) {
    const at::Tensor t = r.get(name);
    out["tensors"].push_back({{"name", name},
                              {"dtype", weft::safetensors_dtype_name(r.dtype(name))},
                              {"shape", r.shape(name)},
                              {"hex", to_hex(t.data_ptr(), t.nbytes())}});
  }
  out["crc32c"] = r.file_crc32c();
  std::cout << out.dump() << "\n";
  return 0;
}

int crc(const std::string& file) {
  const weft::MappedFile m(file);
  std::cout << weft::crc32c(m.data(), m.size()) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1], arg = argv[2];
  try {
    if (cmd == "tb-write") return tb_write(arg);
    if (cmd == "st-write") return st_write(arg);
    if (cmd == "st-read") return st_read(arg);
    if (cmd == "crc32c") return crc(arg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft_io_tool: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "weft_io_tool: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
