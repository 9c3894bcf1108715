//===- HostLaunch.cpp - running the host (CPU) kernels over threads -------===//
#include "HostLaunch.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>

namespace attune::rt {

MemrefDescriptor::MemrefDescriptor(void *data, const std::vector<int64_t> &shape) {
  size_t n = shape.size();
  words_.assign(3 + 2 * n, 0);
  words_[0] = static_cast<int64_t>(reinterpret_cast<intptr_t>(data));
  words_[1] = words_[0];
  int64_t stride = 1;
  for (size_t d = n; d-- > 0;) {
    words_[3 + d] = shape[d];
    words_[3 + n + d] = stride;
    stride *= std::max<int64_t>(shape[d], 1);
  }
}

MemrefDescriptor::MemrefDescriptor(void *data, const std::vector<int64_t> &shape,
                                   const std::vector<int64_t> &strides)
    : MemrefDescriptor(data, shape) {
  size_t n = shape.size();
  for (size_t d = 0; d < n && d < strides.size(); ++d)
    words_[3 + n + d] = strides[d];
}

int hostThreads(int requested) {
  if (requested > 0)
    return requested;
  if (const char *env = std::getenv("ATTUNE_NUM_THREADS")) {
    char *end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= 4096)
      return static_cast<int>(v);
  }
  unsigned cores = std::thread::hardware_concurrency();
  return cores ? static_cast<int>(cores) : 1;
}

void runHostItems(HostEntryFn entry, const std::vector<void *> &args, int64_t total, int threads,
                  const std::vector<std::pair<int64_t, int64_t>> &serial) {
  if (total <= 0)
    return;
  // The parallel items: [0, total) without the serial ranges, as a list of runs.
  std::vector<std::pair<int64_t, int64_t>> runs, whole;
  {
    std::vector<std::pair<int64_t, int64_t>> cut;
    for (auto [b, e] : serial) {
      b = std::clamp<int64_t>(b, 0, total), e = std::clamp<int64_t>(e, 0, total);
      if (b < e)
        cut.push_back({b, e});
    }
    std::sort(cut.begin(), cut.end());
    int64_t at = 0;
    for (auto [b, e] : cut) {
      if (b > at)
        runs.push_back({at, b});
      whole.push_back({std::max(b, at), e});
      at = std::max(at, e);
    }
    if (at < total)
      runs.push_back({at, total});
  }
  int64_t parallelItems = 0;
  for (auto [b, e] : runs)
    parallelItems += e - b;
  // Chunks of a few items: small enough to balance causal rows (whose items differ
  // in cost), large enough that claiming one costs nothing.
  int n = std::max(1, threads);
  int64_t chunk = std::max<int64_t>(1, parallelItems / (int64_t(n) * 8));
  std::atomic<int64_t> next{0};
  std::atomic<size_t> nextWhole{0};
  auto work = [&] {
    std::vector<void *> a = args;
    int64_t begin = 0, end = 0;
    a.push_back(&begin);
    a.push_back(&end);
    // Serial ranges first (each is long), then parallel chunks.
    for (size_t w; (w = nextWhole.fetch_add(1)) < whole.size();) {
      begin = whole[w].first, end = whole[w].second;
      entry(a.data());
    }
    for (;;) {
      int64_t k = next.fetch_add(chunk);
      if (k >= parallelItems)
        break;
      int64_t kEnd = std::min(k + chunk, parallelItems);
      // Map [k, kEnd) of the parallel items onto the runs.
      int64_t skipped = 0;
      for (auto [b, e] : runs) {
        int64_t len = e - b;
        int64_t lo = std::max(k - skipped, int64_t(0)), hi = std::min(kEnd - skipped, len);
        if (lo < hi) {
          begin = b + lo, end = b + hi;
          entry(a.data());
        }
        skipped += len;
      }
    }
  };
  int extra = static_cast<int>(std::min<int64_t>(n, parallelItems + int64_t(whole.size()))) - 1;
  std::vector<std::thread> pool;
  pool.reserve(size_t(std::max(extra, 0)));
  for (int t = 0; t < extra; ++t)
    pool.emplace_back(work);
  work();
  for (std::thread &t : pool)
    t.join();
}

} // namespace attune::rt
