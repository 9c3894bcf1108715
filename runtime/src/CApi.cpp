//===- CApi.cpp - the C API over the C++ runtime --------------------------===//
//
// Every entry point catches everything: no C++ exception crosses the C boundary; the
// message goes to the thread-local last error instead.
//
//===----------------------------------------------------------------------===//
#include "attune/runtime.h"

#include "Bundle.h"
#include "Cuda.h"
#include "Json.h"
#include "Sha256.h"
#include "TuningDb.h"

#include <cstring>
#include <exception>
#include <new>
#include <string>

#ifndef ATTUNE_RUNTIME_VERSION
#define ATTUNE_RUNTIME_VERSION "0.0.0"
#endif

using namespace attune::rt;

struct attn_bundle {
  explicit attn_bundle(const std::string &dir) : impl(dir) {}
  Bundle impl;
};

namespace {

thread_local std::string lastError;
thread_local std::string canonicalText;

int failWith(const std::string &message) {
  lastError = message;
  return 1;
}

/// Runs `body`, turning exceptions into a non-zero return and the last error.
template <typename F> int guarded(const char *fn, F &&body) {
  try {
    body();
    return 0;
  } catch (const std::bad_alloc &) {
    return failWith(std::string(fn) + ": out of memory");
  } catch (const ArgError &e) {
    return failWith(e.what()); // already prefixed with the function's name
  } catch (const std::exception &e) {
    std::string msg = e.what();
    if (msg.compare(0, std::strlen(fn) + 2, std::string(fn) + ": ") == 0)
      return failWith(msg);
    return failWith(std::string(fn) + ": " + msg);
  } catch (...) {
    return failWith(std::string(fn) + ": unknown error");
  }
}

int copyOut(const char *fn, const std::string &text, char *buf, size_t n) {
  if (!buf || n < text.size() + 1)
    return failWith(std::string(fn) + ": buffer too small (" + std::to_string(text.size() + 1) +
                    " bytes needed)");
  std::memcpy(buf, text.c_str(), text.size() + 1);
  return 0;
}

bool requireBundle(const char *fn, const attn_bundle *b, const void *call = reinterpret_cast<void *>(1)) {
  if (!b) {
    failWith(std::string(fn) + ": bundle is NULL");
    return false;
  }
  if (!call) {
    failWith(std::string(fn) + ": call is NULL");
    return false;
  }
  return true;
}

} // namespace

extern "C" {

ATTN_API const char *attn_last_error(void) { return lastError.c_str(); }

ATTN_API const char *attn_version(void) { return ATTUNE_RUNTIME_VERSION; }

ATTN_API int attn_bundle_load(const char *dir, attn_bundle **out) {
  if (!out)
    return failWith("attn_bundle_load: out is NULL");
  *out = nullptr;
  if (!dir)
    return failWith("attn_bundle_load: dir is NULL");
  return guarded("attn_bundle_load", [&] { *out = new attn_bundle(dir); });
}

ATTN_API void attn_bundle_free(attn_bundle *bundle) { delete bundle; }

ATTN_API int attn_launch(attn_bundle *bundle, const attn_call *call) {
  if (!requireBundle("attn_launch", bundle, call))
    return 1;
  return guarded("attn_launch", [&] { bundle->impl.launch(*call); });
}

ATTN_API int attn_tune(attn_bundle *bundle, const attn_call *call, int repeats, int verbose) {
  if (!requireBundle("attn_tune", bundle, call))
    return 1;
  return guarded("attn_tune", [&] { bundle->impl.tune(*call, repeats, verbose != 0); });
}

ATTN_API int attn_backward(attn_bundle *bundle, const attn_backward_call *call) {
  if (!bundle)
    return failWith("attn_backward: bundle is NULL");
  if (!call)
    return failWith("attn_backward: call is NULL");
  return guarded("attn_backward", [&] { bundle->impl.backward(*call); });
}

ATTN_API int attn_check(attn_bundle *bundle, const attn_call *call) {
  if (!requireBundle("attn_check", bundle, call))
    return 1;
  return guarded("attn_check", [&] { bundle->impl.check(*call, "attn_check"); });
}

ATTN_API int attn_select_variant(attn_bundle *bundle, const attn_call *call, char *buf, size_t n) {
  if (!requireBundle("attn_select_variant", bundle, call))
    return 1;
  std::string name;
  if (int rc = guarded("attn_select_variant", [&] { name = bundle->impl.selected(*call); }))
    return rc;
  return copyOut("attn_select_variant", name, buf, n);
}

ATTN_API int attn_tuned_variant(attn_bundle *bundle, const attn_call *call, char *buf, size_t n) {
  if (!requireBundle("attn_tuned_variant", bundle, call))
    return -1;
  std::optional<std::string> name;
  if (guarded("attn_tuned_variant", [&] { name = bundle->impl.tunedChoice(*call); }))
    return -1;
  if (!name)
    return 0;
  if (buf && copyOut("attn_tuned_variant", *name, buf, n))
    return -1;
  return 1;
}

ATTN_API int attn_bundle_num_host_variants(const attn_bundle *bundle) {
  return bundle ? int(bundle->impl.manifest().hostVariants.size()) : 0;
}

ATTN_API const char *attn_bundle_host_variant_name(const attn_bundle *bundle, int i) {
  if (!bundle || i < 0 || size_t(i) >= bundle->impl.manifest().hostVariants.size())
    return nullptr;
  return bundle->impl.manifest().hostVariants[size_t(i)].name.c_str();
}

ATTN_API int attn_bundle_num_variants(const attn_bundle *bundle) {
  return bundle ? int(bundle->impl.manifest().variants.size()) : 0;
}

ATTN_API const char *attn_bundle_variant_name(const attn_bundle *bundle, int i) {
  if (!bundle || i < 0 || size_t(i) >= bundle->impl.manifest().variants.size())
    return nullptr;
  return bundle->impl.manifest().variants[size_t(i)].name.c_str();
}

ATTN_API const char *attn_bundle_info_json(const attn_bundle *bundle) {
  return bundle ? bundle->impl.infoJson().c_str() : nullptr;
}

ATTN_API int attn_device_info(int ordinal, char *buf, size_t n) {
  std::string text;
  int rc = guarded("attn_device_info", [&] {
    const cu::Driver &d = cu::driver();
    int count = 0;
    cu::check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (ordinal < 0 || ordinal >= count)
      throw std::runtime_error("no CUDA device " + std::to_string(ordinal) + " (there are " +
                               std::to_string(count) + ")");
    cu::CUdevice dev = 0;
    cu::check(d.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    const cu::DeviceInfo &info = cu::deviceInfo(dev);
    int version = 0;
    d.cuDriverGetVersion(&version);
    Json j = Json::object();
    j.set("ordinal", ordinal);
    j.set("name", info.name);
    j.set("compute_capability", std::to_string(info.major) + "." + std::to_string(info.minor));
    j.set("sm_count", info.smCount);
    j.set("total_memory", uint64_t(info.totalMem));
    j.set("max_shared_memory_per_block_optin", info.maxSmemOptin);
    j.set("l2_bytes", info.l2Bytes);
    j.set("driver_version", std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10));
    text = j.dump();
  });
  if (rc)
    return rc;
  return copyOut("attn_device_info", text, buf, n);
}

ATTN_API const char *attn_canonical_json(const char *json_text) {
  if (!json_text) {
    failWith("attn_canonical_json: json_text is NULL");
    return nullptr;
  }
  std::string text;
  if (guarded("attn_canonical_json", [&] { text = Json::parse(json_text).canonical(); }))
    return nullptr;
  canonicalText = std::move(text);
  return canonicalText.c_str();
}

ATTN_API int attn_spec_hash(const char *json_text, char out[65]) {
  if (!json_text || !out)
    return failWith("attn_spec_hash: json_text or out is NULL");
  std::string hex;
  if (int rc = guarded("attn_spec_hash", [&] { hex = sha256Hex(Json::parse(json_text).canonical()); }))
    return rc;
  std::memcpy(out, hex.c_str(), 65);
  return 0;
}

ATTN_API int attn_bundle_cache_key(const char *spec_hash, const char *compiler_version,
                                   const char *archs, const char *configs, char out[65]) {
  if (!spec_hash || !compiler_version || !archs || !out)
    return failWith("attn_bundle_cache_key: spec_hash, compiler_version, archs and out must not "
                    "be NULL");
  std::string hex;
  if (int rc = guarded("attn_bundle_cache_key", [&] {
        std::string c = configs ? configs : "";
        hex = bundleCacheKey(spec_hash, compiler_version, archs, configs ? &c : nullptr);
      }))
    return rc;
  std::memcpy(out, hex.c_str(), 65);
  return 0;
}

ATTN_API int attn_cache_root(char *buf, size_t n) {
  std::string root;
  if (int rc = guarded("attn_cache_root", [&] { root = cacheRoot(); }))
    return rc;
  return copyOut("attn_cache_root", root, buf, n);
}

} // extern "C"
