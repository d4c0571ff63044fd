// Built when CUDA is not: asking for the CUDA backend says so.
#include "tpserve/common/error.h"
#include "tpserve/engine/backend.h"

namespace tps {

std::string cuda_backend_unavailable(int) { return "this tpserve was built without CUDA (no nvcc was found)"; }

std::unique_ptr<Backend> make_cuda_backend(int device) { throw UsageError(cuda_backend_unavailable(device)); }

}  // namespace tps
