#include "parallel/tensor_parallel/plan.h"

#include "weft/error.h"

namespace weft {
namespace tp {

std::vector<int64_t> Shard::local_shape() const {
  auto s = global_shape;
  if (dim >= 0) s[dim] = length;
  return s;
}

at::Tensor Shard::slice(const at::Tensor& full) const {
  return dim < 0 ? full : full.narrow(dim, start, length);
}

std::vector<int64_t> Shard::offsets() const {
  std::vector<int64_t> o(global_shape.size(), 0);
  if (dim >= 0) o[dim] = start;
  return o;
}

const ShardRule* find_rule(const Plan& plan, const std::string& name) {
  for (const auto& r : plan) {
    const size_t n = r.suffix.size();
    if (name.size() >= n && name.compare(name.size() - n, n, r.suffix) == 0 &&
        (name.size() == n || name[name.size() - n - 1] == '.'))  // whole name components only
      return &r;
  }
  return nullptr;
}

int64_t split_size(int64_t total, int64_t tp, const char* what) {
  WEFT_CHECK(tp >= 1 && total % tp == 0, what, " (", total, ") is not divisible by tp(", tp, ")");
  return total / tp;
}

int64_t local_heads(int64_t heads, int64_t tp) {
  if (heads >= tp) return split_size(heads, tp, "number of heads");
  WEFT_CHECK(tp % heads == 0, "tp(", tp, ") is not a multiple of the ", heads,
             " kv heads it replicates");
  return 1;
}

Shard shard_of(const std::string& name, const std::vector<int64_t>& shape, const ShardRule* rule,
               int64_t tp, int64_t rank, bool sequence_parallel) {
  Shard s;
  s.global_shape = shape;
  const Split split = rule ? rule->split : Split::kReplicated;
  if (split == Split::kReplicated || tp == 1) {
    s.length = shape.empty() ? 1 : shape[0];
    s.replicas = tp;
    s.owner = rank == 0;
    s.partial_grad = tp > 1 && split == Split::kReplicated && (sequence_parallel || (rule && rule->partial_grad));
    return s;
  }
  s.dim = split == Split::kRow ? 1 : 0;
  WEFT_CHECK(int64_t(shape.size()) > s.dim, "tensor-parallel plan: '", name, "' has no dim ", s.dim);
  const int64_t size = shape[s.dim];
  if (split == Split::kHeads) {
    const int64_t unit = rule->unit;
    WEFT_CHECK(unit > 0 && size % unit == 0, "tensor-parallel plan: '", name, "' dim 0 (", size,
               ") is not a whole number of heads of ", unit);
    const int64_t heads = size / unit;
    if (heads < tp) {  // replicate: head h on ranks [h * tp/heads, (h+1) * tp/heads)
      local_heads(heads, tp);
      s.replicas = tp / heads;
      s.start = rank / s.replicas * unit;
      s.length = unit;
      s.owner = rank % s.replicas == 0;
      s.partial_grad = true;
      return s;
    }
    s.length = local_heads(heads, tp) * unit;
  } else {
    s.length = split_size(size, tp, ("dim " + std::to_string(s.dim) + " of '" + name + "'").c_str());
  }
  s.start = rank * s.length;
  return s;
}

}  // namespace tp
}  // namespace weft
