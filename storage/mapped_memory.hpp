// MappedMemory: zeroed memory of an anonymous private mapping, for the tables the write path
// reads at random (a memtable's key table, storage/version_chain.hpp; a database's record cache,
// storage/record_cache.hpp).
//
// Huge pages: a mapping of kHugePageBytes or more is aligned to them and asks the kernel for
// transparent huge pages (madvise MADV_HUGEPAGE; Debian's default `enabled` setting is
// `madvise`, so nothing else gets them). A table of many MiB read at random missed the TLB at
// almost every lookup, and on a virtual machine each miss walks two sets of page tables: the
// record cache's prefetch of a set was 7.3% of the node's port thread in a remote bulk load
// (perf, `kvmesh-bench --targets remote --workloads batch --batch-size 1000`), nearly all of it
// waiting on that walk. A 32 MiB table takes 16 TLB entries with huge pages, 8,192 without. If
// the kernel has no huge page to give (fragmented memory, THP off) the pages are 4 KiB, as before.
// A lazy mapping (kLazy) read before it is written maps the huge zero page; kernels before 6.13
// then split it at the first write and give 4 KiB pages (khugepaged may collapse them later), so
// a table that must have huge pages from the start is mapped kPopulated.
#pragma once

#include <cstddef>
#include <utility>

namespace kvmesh::storage {

class MappedMemory {
 public:
  /// Mappings at least this large are aligned to it and ask for transparent huge pages.
  static constexpr size_t kHugePageBytes = size_t{2} << 20;

  /// How the pages of a new mapping come in.
  enum Faulting {
    /// Each page when first touched: mapping costs nothing up front. But a table's pages are
    /// mostly read before they are written (an insert looks for its key first), and a read maps
    /// the kernel's shared zero page, so the first write faults a second time to get a page of
    /// its own: twice ~1.1 us per 4 KiB page on this VM, 4.8 ms for 8 MiB, on the inserts (a
    /// huge page is one such fault per 2 MiB, each zeroing all of it).
    kLazy,
    /// Every page now, on the thread that maps it: 2.3 ms for 8 MiB of 4 KiB pages. Best effort:
    /// pages the kernel cannot give now come when touched, as with kLazy.
    kPopulated,
  };

  MappedMemory() = default;
  /// `bytes` of zeroed memory, or none (data() null) if they cannot be mapped.
  static MappedMemory Map(size_t bytes, Faulting faulting);
  MappedMemory(MappedMemory&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  MappedMemory& operator=(MappedMemory&& other) noexcept {
    if (this != &other) {
      Unmap();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  MappedMemory(const MappedMemory&) = delete;
  MappedMemory& operator=(const MappedMemory&) = delete;
  ~MappedMemory() { Unmap(); }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  MappedMemory(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  void Unmap();

  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace kvmesh::storage
