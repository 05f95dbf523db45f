// LoRA adapters on the model's projections: the adapter module, attaching it to target
// projections, its initialisation and merging it into the base weights.
#include "models/lora.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "weft/error.h"

namespace weft {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const std::string kA = ".adapter.lora_A", kB = ".adapter.lora_B";

thread_local at::Generator t_dropout_gen;  // undefined: the default generator

// torch.nn.functional.dropout's arithmetic on the CPU (keep with probability 1-p, scale by
// 1/(1-p)), drawn from `gen`: the same numbers at::dropout draws from that generator.
at::Tensor dropout_with(const at::Tensor& x, double p, const at::Generator& gen) {
  return x * at::empty_like(x).bernoulli_(1 - p, gen).div_(1 - p);
}

}  // namespace

DropoutGeneratorScope::DropoutGeneratorScope(at::Generator gen) : prev_(std::move(t_dropout_gen)) {
  t_dropout_gen = std::move(gen);
}
DropoutGeneratorScope::~DropoutGeneratorScope() { t_dropout_gen = std::move(prev_); }

LoraAdapterImpl::LoraAdapterImpl(int64_t in, int64_t out, int64_t rank, double s, double p,
                                 const at::TensorOptions& opts)
    : scaling(s), dropout(p) {
  lora_A = register_parameter("lora_A", at::empty({rank, in}, opts));
  lora_B = register_parameter("lora_B", at::empty({out, rank}, opts));
}

at::Tensor LoraAdapterImpl::forward(const at::Tensor& x) {
  const bool drop = dropout > 0 && is_training() && at::GradMode::is_enabled();
  at::Tensor in = x;
  if (drop) in = x.is_cpu() && t_dropout_gen.defined() ? dropout_with(x, dropout, t_dropout_gen) : at::dropout(x, dropout, true);
  auto h = at::linear(in, lora_A);  // (..., r)
  return at::linear(h, lora_B) * scaling;                                   // (..., out)
}

void attach_lora(torch::nn::Module& model, const LoraConfig& lora, const at::TensorOptions& opts) {
  if (lora.rank <= 0) return;
  const auto& targets = lora.target_modules;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = item.value()->as<LinearImpl>();
    if (!linear) continue;
    const auto dot = item.key().rfind('.');
    const std::string leaf = dot == std::string::npos ? item.key() : item.key().substr(dot + 1);
    if (std::find(targets.begin(), targets.end(), leaf) == targets.end()) continue;
    const int64_t out = linear->weight.size(0), in = linear->weight.size(1);
    linear->set_adapter(std::make_shared<LoraAdapterImpl>(in, out, lora.rank, lora.scaling(), lora.dropout, opts));
  }
}

bool is_lora_parameter(const std::string& name) { return ends_with(name, kA) || ends_with(name, kB); }

at::Tensor lora_initial_value(const std::string& name, const std::vector<int64_t>& shape, at::Generator gen) {
  WEFT_CHECK(is_lora_parameter(name) && shape.size() == 2, "lora_initial_value: '", name, "' is not a LoRA factor");
  if (ends_with(name, kB)) return at::zeros(shape, at::kFloat);
  // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + a^2)) = sqrt(1/3), bound gain * sqrt(3 / fan_in).
  const double bound = 1.0 / std::sqrt(double(shape[1]));
  return at::empty(shape, at::kFloat).uniform_(-bound, bound, gen);
}

LoraTensors merge_lora(const LoraTensors& tensors, double scaling) {
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  auto get = [&](const std::string& name, const std::string& why) {
    auto it = by_name.find(name);
    WEFT_CHECK(it != by_name.end(), "merge LoRA: '", name, "' is missing (", why, ")");
    return it->second;
  };
  LoraTensors out;
  for (const auto& [name, t] : tensors) {
    if (is_lora_parameter(name)) {
      const std::string proj = name.substr(0, name.size() - kA.size());
      get(proj + ".weight", "the projection " + name + " adapts");
      get(proj + (ends_with(name, kA) ? kB : kA), "the other factor of " + name);
      continue;
    }
    at::Tensor value = t;
    if (ends_with(name, ".weight")) {
      const std::string proj = name.substr(0, name.size() - 7);
      auto a = by_name.find(proj + kA), b = by_name.find(proj + kB);
      if (a != by_name.end() && b != by_name.end()) {
        auto delta = at::matmul(b->second.to(at::kDouble), a->second.to(at::kDouble)) * scaling;  // (out, in)
        value = (t.to(at::kDouble) + delta).to(t.scalar_type());
      }
    }
    out.emplace_back(name, value);
  }
  return out;
}

}  // namespace weft
