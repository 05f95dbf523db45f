// Test-only driver exposing model and optimizer internals to the Python parity tests:
//   weft_model_tool logits CKPT IN.safetensors OUT.safetensors
//       IN: "tokens" (B, T+1) int64 -> OUT: "logits" (B, T, V) fp32 of tokens[:, :-1], "loss" ()
//   weft_model_tool adamw SPEC.json IN.safetensors OUT.safetensors
//       IN: "param.<name>", "grad.<step>.<name>" -> OUT: final "param.<name>", "lr" and
//       "grad_norm" per step; SPEC: optim.* keys, "steps", "train_steps", "no_decay": [names]
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "weft/config.h"
#include "weft/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "runtime/job.h"
#include "runtime/optim/optimizer.h"

namespace weft {
namespace {

int logits(const std::string& ckpt, const std::string& in, const std::string& out) {
  const auto dir = resolve_checkpoint_dir(ckpt);
  Config cfg = checkpoint_config(dir);
  Transformer model(cfg.model, at::kFloat);
  load_model_tensors(*model, load_checkpoint(dir, false).model, dir);
  at::NoGradGuard g;
  auto tokens = SafetensorsReader(in).get("tokens").to(at::kLong);  // (B, T+1)
  const int64_t T = tokens.size(1) - 1;
  auto lg = model->forward(tokens.narrow(1, 0, T)).contiguous();   // (B, T, V)
  auto loss = model->loss(tokens.narrow(1, 0, T), tokens.narrow(1, 1, T));
  write_safetensors(out, {{"logits", lg}, {"loss", loss}});
  return 0;
}

int adamw(const std::string& spec_path, const std::string& in, const std::string& out) {
  const auto spec = nlohmann::json::parse(read_file(spec_path));
  Config cfg;
  for (const auto& [k, v] : spec.at("optim").items()) apply_override(cfg, "optim." + k + "=" + v.dump());
  const int64_t steps = spec.at("steps"), train_steps = spec.at("train_steps");
  std::set<std::string> no_decay = spec.at("no_decay").get<std::set<std::string>>();
  SafetensorsReader r(in);
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<bool> decay;
  for (const auto& n : r.names())
    if (n.rfind("param.", 0) == 0) {
      params.emplace_back(n.substr(6), r.get(n).set_requires_grad(true));
      decay.push_back(!no_decay.count(n.substr(6)));
    }
  AdamW opt(params, decay, cfg.optim);
  std::vector<at::Tensor> tensors;
  for (auto& p : params) tensors.push_back(p.second);
  std::vector<double> lrs, norms;
  for (int64_t s = 0; s < steps; ++s) {
    for (auto& [name, p] : params) p.mutable_grad() = r.get("grad." + std::to_string(s) + "." + name);
    norms.push_back(clip_grad_norm(tensors, cfg.optim.clip_grad));
    lrs.push_back(learning_rate(cfg.optim, s, train_steps));
    opt.step(lrs.back());
  }
  std::vector<std::pair<std::string, at::Tensor>> result;
  for (auto& [name, p] : params) result.emplace_back("param." + name, p.detach());
  result.emplace_back("lr", at::tensor(lrs, at::kDouble));
  result.emplace_back("grad_norm", at::tensor(norms, at::kDouble));
  write_safetensors(out, result);
  return 0;
}

}  // namespace
}  // namespace weft

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "logits" && argc == 5) return weft::logits(argv[2], argv[3], argv[4]);
    if (cmd == "adamw" && argc == 5) return weft::adamw(argv[2], argv[3], argv[4]);
    std::fprintf(stderr, "usage: weft_model_tool logits CKPT IN OUT | adamw SPEC IN OUT\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft_model_tool: %s\n", e.what());
    return 1;
  }
}
