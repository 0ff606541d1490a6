#include "storage/mapped_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

// Linux 5.14 (uapi asm-generic/mman-common.h); older headers lack it, the kernel then says EINVAL.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace kvmesh::storage {
namespace {

size_t PageBytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

size_t RoundUp(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

}  // namespace

MappedMemory MappedMemory::Map(size_t bytes, Faulting faulting) {
  if (bytes == 0) return MappedMemory();
  if (bytes < kHugePageBytes) {
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS | (faulting == kPopulated ? MAP_POPULATE : 0);
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    return memory == MAP_FAILED ? MappedMemory() : MappedMemory(memory, bytes);
  }
  // A huge page's worth more than needed, then the unaligned head and the tail given back.
  const size_t span = RoundUp(bytes, PageBytes());
  const size_t reserved = span + kHugePageBytes;
  void* raw = mmap(nullptr, reserved, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return MappedMemory();
  const auto base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = RoundUp(base, kHugePageBytes);
  if (start > base) munmap(raw, start - base);
  if (const size_t tail = base + reserved - (start + span); tail > 0) {
    munmap(reinterpret_cast<void*>(start + span), tail);
  }
  void* memory = reinterpret_cast<void*>(start);
  // Refused (THP not built in): 4 KiB pages, as a mapping without the advice gets.
  madvise(memory, span, MADV_HUGEPAGE);
  // After the advice (MAP_POPULATE would have faulted 4 KiB pages in before it). A kernel older
  // than 5.14 does not know MADV_POPULATE_WRITE (EINVAL): then a write to each page faults it
  // in. Any other failure (no memory for every page now) leaves the rest to come when touched,
  // as MAP_POPULATE did, rather than forcing them in.
  if (faulting == kPopulated && madvise(memory, span, MADV_POPULATE_WRITE) != 0 &&
      errno == EINVAL) {
    auto* bytes_in = static_cast<volatile char*>(memory);
    for (size_t at = 0; at < span; at += PageBytes()) bytes_in[at] = 0;
  }
  return MappedMemory(memory, bytes);
}

void MappedMemory::Unmap() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

}  // namespace kvmesh::storage
