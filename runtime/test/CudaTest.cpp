//===- CudaTest.cpp - driver loading, and checks before any device call ---===//
#include "Bundle.h"
#include "Cuda.h"
#include "TestUtil.h"

#include <gtest/gtest.h>

using namespace attune::rt;
using namespace attune::rt::test;

TEST(Cuda, MissingLibraryGivesTheClearMessage) {
  cu::Driver d = cu::loadDriver("/nonexistent/libcuda.so.1");
  EXPECT_FALSE(d.loaded);
  EXPECT_EQ(d.error.rfind("no CUDA driver: /nonexistent/libcuda.so.1 could not be loaded: ", 0), 0u)
      << d.error;
  EXPECT_NE(d.error.find("No such file"), std::string::npos) << d.error;
}

TEST(Cuda, ALibraryThatIsNotTheDriverIsRejected) {
  // libc has none of the driver's entry points.
  cu::Driver d = cu::loadDriver("libc.so.6");
  EXPECT_FALSE(d.loaded);
  EXPECT_EQ(d.error.rfind("no usable CUDA driver: libc.so.6 lacks cuInit, ", 0), 0u) << d.error;
}

TEST(Cuda, ProcessDriverEitherLoadsOrSaysWhy) {
  if (const cu::Driver *d = cu::driverIfLoaded()) {
    EXPECT_TRUE(d->cuLaunchKernel && d->cuMemAlloc && d->cuEventElapsedTime);
    return;
  }
  try {
    cu::driver();
    FAIL() << "driver() must throw when driverIfLoaded() is null";
  } catch (const cu::CudaError &e) {
    std::string msg = e.what();
    bool noLib = msg.rfind("no CUDA driver: libcuda.so.1 could not be loaded: ", 0) == 0;
    bool noDevice = msg.rfind("CUDA driver present but unusable: cuInit: ", 0) == 0;
    EXPECT_TRUE(noLib || noDevice || getenv("ATTUNE_LIBCUDA")) << msg;
  }
}

// Arguments are checked before the device: a bad call is refused with its argument
// error even where no driver exists, and a good call only then reaches the driver.
TEST(Cuda, ArgumentErrorsComeBeforeDeviceErrors) {
  TempDir dir;
  writeTestBundle(dir.path());
  Bundle b(dir.path());
  TestCall t;
  t.call.k.shape[2] = 299;
  try {
    b.launch(t.call);
    FAIL();
  } catch (const ArgError &e) {
    EXPECT_EQ(std::string(e.what()).rfind("attn_launch: v: expected shape", 0), 0u) << e.what();
  }
  try {
    b.tune(t.call, 5, false);
    FAIL();
  } catch (const ArgError &e) {
    EXPECT_EQ(std::string(e.what()).rfind("attn_tune: v: expected shape", 0), 0u) << e.what();
  }
  // A good call reaches the driver: without one it fails with the no-driver message;
  // with one, loading the bundle's placeholder PTX fails.
  TestCall good;
  try {
    b.launch(good.call);
    FAIL();
  } catch (const cu::CudaError &e) {
    if (!cu::driverIfLoaded())
      EXPECT_EQ(std::string(e.what()).rfind("no CUDA driver: ", 0), 0u) << e.what();
  }
}
