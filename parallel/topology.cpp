// Rank-grid arithmetic and layout validation. Every check appends to a list so one error names
// every problem at once: a user fixing a layout should not have to rerun once per mistake.
#include "parallel/topology.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "weft/error.h"
#include "parallel/pipeline/schedule.h"

namespace weft {
namespace {

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

// The smallest multiple of `m` that is >= v.
int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void model_problems(const ParallelDims& d, const ModelConfig& m, std::vector<std::string>& out) {
  const int64_t tp = d.tp;
  if (m.num_heads % tp != 0)
    out.push_back(str("model.num_heads(", m.num_heads, ") is not divisible by tp(", tp,
                      "): attention heads are split across TP; pick a parallel.tp that divides ",
                      m.num_heads));
  const int64_t kv = m.kv_heads();
  if (kv % tp != 0 && tp % kv != 0)
    out.push_back(str("model.num_kv_heads(", kv, ") and tp(", tp,
                      "): one must divide the other (KV heads are split over TP when there are "
                      "more of them, replicated when TP is larger)"));
  if (m.ffn_hidden_size % tp != 0)
    out.push_back(str("model.ffn_hidden_size(", m.ffn_hidden_size, ") is not divisible by tp(", tp,
                      "): set it to a multiple of ", tp, " (e.g. ", round_up(m.ffn_hidden_size, tp),
                      ") or pick a parallel.tp that divides it"));
  if (m.padded_vocab_size() % tp != 0) {
    // Suggest a padding multiple that tp divides: Megatron's 128 when it does, so the padding
    // stays the same for every tp that divides 128 and checkpoints reshard between them.
    const int64_t by = std::lcm(m.make_vocab_size_divisible_by > 1 ? m.make_vocab_size_divisible_by : 128, tp);
    ModelConfig fixed = m;
    fixed.make_vocab_size_divisible_by = by;
    const std::string padded =
        m.make_vocab_size_divisible_by > 1
            ? str(" padded to ", m.padded_vocab_size(), " (model.make_vocab_size_divisible_by=",
                  m.make_vocab_size_divisible_by, ")")
            : "";
    out.push_back(str("model.vocab_size(", m.vocab_size, ")", padded, " is not divisible by tp(", tp,
                      "): set model.make_vocab_size_divisible_by to a multiple of ", tp, " (e.g. ", by,
                      ", which pads the embedding and head to ", fixed.padded_vocab_size(),
                      " rows; padded ids are never a target nor generated)"));
  }
  if (m.num_layers < d.num_virtual_stages()) {
    if (d.vpp > 1)
      out.push_back(str("pp(", d.pp, ") × vpp(", d.vpp, ") = ", d.num_virtual_stages(),
                        " virtual stages but model.num_layers is ", m.num_layers,
                        ": every virtual stage needs at least one layer; lower parallel.pp or "
                        "parallel.vpp"));
    else
      out.push_back(str("pp(", d.pp, ") stages but model.num_layers is ", m.num_layers,
                        ": every stage needs at least one layer; lower parallel.pp"));
  }
}

void job_problems(const ParallelDims& d, const Config& cfg, std::vector<std::string>& out) {
  const auto& t = cfg.train;
  const int64_t per_step = t.micro_batch_size * d.dp;
  if (per_step > 0 && t.global_batch_size % per_step != 0)
    out.push_back(str("train.global_batch_size(", t.global_batch_size,
                      ") is not divisible by train.micro_batch_size(", t.micro_batch_size,
                      ") × dp(", d.dp, ") = ", per_step, ": use a multiple of ", per_step));
  const auto& split = cfg.parallel.pipeline_layers;
  if (!split.empty()) {
    int64_t sum = 0;
    bool positive = true;
    for (int64_t n : split) sum += n, positive = positive && n >= 1;
    if (int64_t(split.size()) != d.num_virtual_stages() || sum != cfg.model.num_layers || !positive)
      out.push_back(str("parallel.pipeline_layers has ", split.size(), " entries summing to ", sum,
                        ": give one count >= 1 per virtual stage (pp × vpp = ", d.num_virtual_stages(),
                        ") summing to model.num_layers(", cfg.model.num_layers, "), or leave it empty"));
  }
  if (d.pp > 1 || !cfg.parallel.schedule.empty()) {
    const int64_t m = d.dp > 0 && per_step > 0 ? t.global_batch_size / per_step : 0;
    const auto name = cfg.parallel.schedule.empty() ? (d.vpp > 1 ? "interleaved_1f1b" : "1f1b")
                                                    : cfg.parallel.schedule;
    const auto names = schedule_names();
    if (std::find(names.begin(), names.end(), name) == names.end())
      out.push_back(str("parallel.schedule '", name, "' is not a schedule; use one of ", join(names, ", ")));
    if (name == "interleaved_1f1b" && m % d.pp != 0)
      out.push_back(str("interleaved 1F1B needs the micro-batches per step (", m,
                        " = train.global_batch_size / (train.micro_batch_size × dp)) to be a "
                        "multiple of pp(", d.pp, ")"));
    if (name == "1f1b" && d.vpp > 1)
      out.push_back(str("parallel.schedule=1f1b runs one chunk per rank but vpp(", d.vpp,
                        ") > 1; use interleaved_1f1b or gpipe"));
  }
  if (cfg.parallel.sequence_parallel && t.seq_len % d.tp != 0)
    out.push_back(str("train.seq_len(", t.seq_len, ") is not divisible by tp(", d.tp,
                      ") with parallel.sequence_parallel=true: use a multiple of ", d.tp));
}

[[noreturn]] void throw_problems(const ParallelDims& d, const std::vector<std::string>& problems) {
  fail(str("parallel layout ", d.describe(), " for world_size(", d.world_size(),
           ") does not fit: ", join(problems, "; ")));
}

}  // namespace

std::string ParallelDims::describe() const {
  std::string s = str("tp(", tp, ") × pp(", pp, ") × dp(", dp, ")");
  if (vpp > 1) s += str(" × vpp(", vpp, ")");
  return s;
}

ParallelDims make_parallel_dims(int64_t world_size, const ParallelConfig& p) {
  std::vector<std::string> problems;
  if (world_size < 1) problems.push_back(str("world_size(", world_size, ") must be >= 1"));
  if (p.tp < 1) problems.push_back(str("parallel.tp(", p.tp, ") must be >= 1"));
  if (p.pp < 1) problems.push_back(str("parallel.pp(", p.pp, ") must be >= 1"));
  if (p.vpp < 1) problems.push_back(str("parallel.vpp(", p.vpp, ") must be >= 1"));
  if (problems.empty() && world_size % (p.tp * p.pp) != 0)
    problems.push_back(str("tp(", p.tp, ") × pp(", p.pp, ") = ", p.tp * p.pp,
                           " does not divide world_size(", world_size,
                           "); pick parallel.tp and parallel.pp whose product divides ", world_size,
                           " (dp = world_size / (tp × pp))"));
  if (p.vpp > 1 && p.pp == 1)
    problems.push_back(str("vpp(", p.vpp, ") > 1 needs pipeline parallelism but pp(", p.pp,
                           ") = 1; set parallel.pp > 1 or parallel.vpp=1"));
  WEFT_CHECK(problems.empty(), "invalid parallel layout tp(", p.tp, ") × pp(", p.pp, ") × vpp(",
             p.vpp, ") for world_size(", world_size, "): ", join(problems, "; "));
  ParallelDims d;
  d.tp = p.tp;
  d.pp = p.pp;
  d.vpp = p.vpp;
  d.dp = world_size / (p.tp * p.pp);
  return d;
}

void check_model_fits(const ParallelDims& dims, const ModelConfig& model) {
  std::vector<std::string> problems;
  model_problems(dims, model, problems);
  if (!problems.empty()) throw_problems(dims, problems);
}

ParallelDims validate_layout(int64_t world_size, const Config& cfg) {
  ParallelDims dims = make_parallel_dims(world_size, cfg.parallel);
  std::vector<std::string> problems;
  model_problems(dims, cfg.model, problems);
  job_problems(dims, cfg, problems);
  if (!problems.empty()) throw_problems(dims, problems);
  return dims;
}

ParallelDims elastic_layout(int64_t world_size, const Config& cfg) {
  const int64_t model = std::max<int64_t>(cfg.parallel.tp, 1) * std::max<int64_t>(cfg.parallel.pp, 1);
  WEFT_CHECK(world_size >= model, "world_size(", world_size, ") is smaller than tp(", cfg.parallel.tp, ") × pp(",
             cfg.parallel.pp, ") = ", model, ": start at least ", model, " processes or lower parallel.tp/parallel.pp");
  const int64_t most = world_size / model;
  for (int64_t dp = most; dp >= 1; --dp) {
    try {
      return validate_layout(dp * model, cfg);
    } catch (const Error&) {
      if (dp == 1) break;
    }
  }
  return validate_layout(most * model, cfg);  // no dp fits: the largest one's problems
}

std::vector<std::pair<int64_t, int64_t>> stage_layers(const ParallelDims& d, int64_t num_layers,
                                                       const std::vector<int64_t>& split) {
  const int64_t S = d.num_virtual_stages();
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t first = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = split.empty() ? num_layers / S + (s < num_layers % S ? 1 : 0) : split.at(s);
    out.emplace_back(first, first + n);
    first += n;
  }
  WEFT_CHECK(first == num_layers, "pipeline split covers ", first, " of ", num_layers, " layers");
  return out;
}

RankCoord coord_of(const ParallelDims& d, int64_t rank) {
  WEFT_CHECK(rank >= 0 && rank < d.world_size(), "rank ", rank, " is outside the grid ",
             d.describe(), " of world_size(", d.world_size(), ")");
  RankCoord c;
  c.tp = rank % d.tp;
  c.dp = (rank / d.tp) % d.dp;
  c.pp = rank / (d.tp * d.dp);
  return c;
}

int64_t rank_of(const ParallelDims& d, const RankCoord& c) {
  WEFT_CHECK(c.tp >= 0 && c.tp < d.tp && c.dp >= 0 && c.dp < d.dp && c.pp >= 0 && c.pp < d.pp,
             "coordinate (tp ", c.tp, ", dp ", c.dp, ", pp ", c.pp, ") is outside the grid ",
             d.describe());
  return c.pp * (d.dp * d.tp) + c.dp * d.tp + c.tp;
}

const char* group_kind_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::kWorld: return "world";
    case GroupKind::kTensor: return "tp";
    case GroupKind::kData: return "dp";
    case GroupKind::kPipeline: return "pp";
    case GroupKind::kEmbedding: return "embedding";
    case GroupKind::kModel: return "model";
  }
  return "?";
}

std::vector<int64_t> group_ranks(const ParallelDims& d, int64_t rank, GroupKind kind) {
  const RankCoord me = coord_of(d, rank);
  std::vector<int64_t> out;
  RankCoord c = me;
  switch (kind) {
    case GroupKind::kWorld:
      for (int64_t r = 0; r < d.world_size(); ++r) out.push_back(r);
      break;
    case GroupKind::kTensor:
      for (c.tp = 0; c.tp < d.tp; ++c.tp) out.push_back(rank_of(d, c));
      break;
    case GroupKind::kData:
      for (c.dp = 0; c.dp < d.dp; ++c.dp) out.push_back(rank_of(d, c));
      break;
    case GroupKind::kPipeline:
      for (c.pp = 0; c.pp < d.pp; ++c.pp) out.push_back(rank_of(d, c));
      break;
    case GroupKind::kEmbedding:
      if (me.pp != 0 && me.pp != d.pp - 1) break;  // middle stages hold no embedding
      c.pp = 0;
      out.push_back(rank_of(d, c));
      if (d.pp > 1) c.pp = d.pp - 1, out.push_back(rank_of(d, c));
      break;
    case GroupKind::kModel:
      for (c.pp = 0; c.pp < d.pp; ++c.pp)
        for (c.tp = 0; c.tp < d.tp; ++c.tp) out.push_back(rank_of(d, c));
      break;
  }
  return out;
}

std::vector<std::vector<int64_t>> all_groups(const ParallelDims& d, GroupKind kind) {
  std::set<std::vector<int64_t>> seen;  // ordered by first (lowest) rank
  for (int64_t r = 0; r < d.world_size(); ++r) {
    auto g = group_ranks(d, r, kind);
    if (!g.empty()) seen.insert(std::move(g));
  }
  return {seen.begin(), seen.end()};
}

}  // namespace weft
