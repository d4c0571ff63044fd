# Finds every dependency once and records what is present as TPS_HAS_* (0/1), which the libraries
# pass on as compile definitions. Header-only libraries fall back to copies under
# TPS_THIRD_PARTY_DIR so a machine with only a compiler, CMake and the CUDA toolkit still builds
# partition/ and engine/ (scripts/gpu-check depends on this).

find_package(Threads REQUIRED)

# --- header-only / small libraries every part uses -------------------------------------------
find_package(fmt CONFIG QUIET)
if(NOT fmt_FOUND)
  if(EXISTS "${TPS_THIRD_PARTY_DIR}/fmt/include/fmt/format.h")
    add_library(tps_fmt_header_only INTERFACE)
    target_include_directories(tps_fmt_header_only SYSTEM INTERFACE "${TPS_THIRD_PARTY_DIR}/fmt/include")
    target_compile_definitions(tps_fmt_header_only INTERFACE FMT_HEADER_ONLY=1)
    add_library(fmt::fmt ALIAS tps_fmt_header_only)
  else()
    message(FATAL_ERROR "fmt not found: run scripts/setup (Debian package libfmt-dev)")
  endif()
endif()

find_package(nlohmann_json CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  if(EXISTS "${TPS_THIRD_PARTY_DIR}/nlohmann/include/nlohmann/json.hpp")
    add_library(tps_nlohmann_json INTERFACE)
    target_include_directories(tps_nlohmann_json SYSTEM INTERFACE "${TPS_THIRD_PARTY_DIR}/nlohmann/include")
    add_library(nlohmann_json::nlohmann_json ALIAS tps_nlohmann_json)
  else()
    message(FATAL_ERROR "nlohmann-json not found: run scripts/setup (Debian package nlohmann-json3-dev)")
  endif()
endif()

# --- PCRE2: the tokenizer's pre-tokenizer regular expressions (Unicode properties) ------------
# tps::pcre2: the system's (pkg-config), or a copy of its header and static library under
# TPS_THIRD_PARTY_DIR/pcre2 (scripts/gpu-prep makes it for machines without the package).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
endif()
if(TARGET PkgConfig::PCRE2)
  add_library(tps::pcre2 ALIAS PkgConfig::PCRE2)
elseif(EXISTS "${TPS_THIRD_PARTY_DIR}/pcre2/include/pcre2.h" AND EXISTS "${TPS_THIRD_PARTY_DIR}/pcre2/lib/libpcre2-8.a")
  add_library(tps_pcre2_static STATIC IMPORTED)
  set_target_properties(tps_pcre2_static PROPERTIES
    IMPORTED_LOCATION "${TPS_THIRD_PARTY_DIR}/pcre2/lib/libpcre2-8.a"
    INTERFACE_INCLUDE_DIRECTORIES "${TPS_THIRD_PARTY_DIR}/pcre2/include")
  add_library(tps::pcre2 ALIAS tps_pcre2_static)
else()
  message(FATAL_ERROR "PCRE2 (libpcre2-8) not found: run scripts/setup (Debian package libpcre2-dev)")
endif()

# --- CUDA toolkit and NCCL ---------------------------------------------------------------------
set(TPS_HAS_CUDA 0)
set(TPS_HAS_NCCL 0)
set(TPS_CUDA_EMULATED 0)
if(TPS_ENABLE_CUDA STREQUAL "EMULATE")
  # The CUDA backend compiled by the C++ compiler against the emulator (engine/src/cuda/emu): its
  # kernels run on the host where TPS_CUDA_EMULATE is set, so the sanitizer build runs them; and
  # the NCCL communicator against the emulator's NCCL, between processes through shared memory.
  set(TPS_HAS_CUDA 1)
  set(TPS_HAS_NCCL 1)
  set(TPS_CUDA_EMULATED 1)
elseif(NOT TPS_ENABLE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES ${TPS_CUDA_ARCHITECTURES})
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc's C++20 dialect flag (nvcc >= 12 has it): tell it.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA_STANDARD_COMPUTED_DEFAULT 17)
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(TPS_HAS_CUDA 1)
    find_package(NCCL QUIET)
    if(NCCL_FOUND)
      set(TPS_HAS_NCCL 1)
    endif()
  elseif(TPS_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TPS_ENABLE_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()

# --- MPI, Boost, cxxopts: the launcher's world -------------------------------------------------
set(TPS_HAS_MPI 0)
if(NOT TPS_ENABLE_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS CXX QUIET)
  find_package(Boost 1.74 QUIET)
  find_package(cxxopts CONFIG QUIET)
  if(MPI_CXX_FOUND AND Boost_FOUND AND cxxopts_FOUND)
    set(TPS_HAS_MPI 1)
  elseif(TPS_ENABLE_MPI STREQUAL "ON")
    message(FATAL_ERROR "TPS_ENABLE_MPI=ON but MPI (${MPI_CXX_FOUND}), Boost (${Boost_FOUND}) or "
                        "cxxopts (${cxxopts_FOUND}) is missing: run scripts/setup")
  endif()
endif()

# --- GoogleTest --------------------------------------------------------------------------------
if(TPS_BUILD_TESTS)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND)
    if(EXISTS "${TPS_THIRD_PARTY_DIR}/googletest/CMakeLists.txt")
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      add_subdirectory("${TPS_THIRD_PARTY_DIR}/googletest" "${CMAKE_BINARY_DIR}/third_party/googletest" EXCLUDE_FROM_ALL)
      # GoogleTest 1.11 and later name these aliases themselves
      if(NOT TARGET GTest::gtest)
        add_library(GTest::gtest ALIAS gtest)
        add_library(GTest::gtest_main ALIAS gtest_main)
      endif()
    else()
      message(FATAL_ERROR "GoogleTest not found: run scripts/setup (Debian package libgtest-dev), "
                          "or configure with -DTPS_BUILD_TESTS=OFF")
    endif()
  endif()
endif()
