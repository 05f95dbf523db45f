// The NCCL backend for CUDA tensors, kept out of comm.cpp so that a build without CUDA never sees
// ProcessGroupNCCL.hpp. Compiled only with WEFT_CUDA; exercised only where a GPU exists.
//
// ABI: ProcessGroupNCCL::Options embeds ncclConfig_t by value and Weft allocates it (make_intrusive
// runs in this file), so nccl.h must be the one LibTorch's NCCL matches: CMakeLists.txt puts the
// wheel's nvidia/nccl/include first for this file, and make_nccl_backend refuses a mismatch.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "weft/error.h"

namespace weft::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout) {
  const auto [major, minor, patch] = c10d::getNcclVersionTuple();
  WEFT_CHECK(major == NCCL_MAJOR && minor == NCCL_MINOR, "weft was compiled against NCCL headers ",
             NCCL_MAJOR, ".", NCCL_MINOR, " but LibTorch runs NCCL ", major, ".", minor, ".", patch,
             ": rebuild weft with the NCCL headers of the torch wheel (nvidia/nccl/include)");
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
}

}  // namespace weft::detail
