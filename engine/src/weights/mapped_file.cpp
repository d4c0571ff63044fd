// Read-only mmap of a checkpoint file: weights are used in place, and only the pages a rank
// touches are ever read from disk.
#include "tpserve/common/check.h"
#include "tpserve/engine/weights.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tps {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path.string()) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    TPS_CHECK_AS(InputError, fd >= 0, "{}: cannot open ({})", path_, std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        throw InputError(fmt::format("{}: cannot stat ({})", path_, std::strerror(e)));
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
        const int e = errno;
        ::close(fd);
        TPS_CHECK_AS(InputError, p != MAP_FAILED, "{}: cannot map {} bytes ({})", path_, size_, std::strerror(e));
        data_ = static_cast<const std::byte*>(p);
    } else {
        ::close(fd);
    }
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace tps
