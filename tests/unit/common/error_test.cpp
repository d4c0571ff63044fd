// The error policy: typed exceptions, input errors carrying only their message, internal checks
// saying where they failed, status checks naming statement, place, rank and device.
#include "tpserve/common/check.h"
#include "tpserve/common/error.h"

#include <gtest/gtest.h>

namespace tps {
namespace {

const char* describe(int code) { return code == 0 ? "ok" : "bad thing"; }

int fails() { return 7; }

TEST(Errors, UsageAndInputErrorsCarryOnlyTheirMessage) {
    try {
        TPS_CHECK_AS(UsageError, 1 + 1 == 3, "--flag: {} is wrong", 42);
        FAIL();
    } catch (const UsageError& e) {
        EXPECT_STREQ(e.what(), "--flag: 42 is wrong");
    }
    EXPECT_THROW(TPS_CHECK_AS(InputError, false, "x"), InputError);
    EXPECT_NO_THROW(TPS_CHECK_AS(InputError, true, "x"));
}

TEST(Errors, InternalChecksSayWhere) {
    try {
        TPS_CHECK(2 < 1, "{} heads do not divide by tp={}", 40, 3);
        FAIL();
    } catch (const Error& e) {
        const std::string w = e.what();
        EXPECT_EQ(w.rfind("40 heads do not divide by tp=3", 0), 0u) << w;
        EXPECT_NE(w.find("2 < 1"), std::string::npos) << w;
        EXPECT_NE(w.find("error_test.cpp"), std::string::npos) << w;
    }
}

TEST(Errors, StatusChecksNameTheCallPlaceRankAndDevice) {
    set_error_context({3, 1});
    try {
        TPS_CHECK_STATUS_(ErrorKind::device, "CUDA", fails(), tps_status_ == 0, describe);
        FAIL();
    } catch (const DeviceError& e) {
        const std::string w = e.what();
        EXPECT_NE(w.find("CUDA error 'bad thing' from fails()"), std::string::npos) << w;
        EXPECT_NE(w.find("error_test.cpp"), std::string::npos) << w;
        EXPECT_NE(w.find("(rank 3, device 1)"), std::string::npos) << w;
    }
    set_error_context({2, -1});
    try {
        TPS_CHECK_STATUS_(ErrorKind::comm, "MPI", fails(), tps_status_ == 0, describe);
        FAIL();
    } catch (const CommError& e) {
        EXPECT_NE(std::string(e.what()).find("(rank 2)"), std::string::npos) << e.what();
    }
    set_error_context({});
    EXPECT_NO_THROW(TPS_CHECK_STATUS_(ErrorKind::device, "CUDA", 0, tps_status_ == 0, describe));
}

}  // namespace
}  // namespace tps
