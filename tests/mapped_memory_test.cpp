// MappedMemory (storage/mapped_memory.hpp): zeroed memory, and huge pages asked for from 2 MiB on.
#include "storage/mapped_memory.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvmesh::storage {
namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

// The mapping holding `address` (/proc/self/smaps): its range and its VmFlags line ("" if no
// mapping holds it).
struct Vma {
  uintptr_t from = 0;
  uintptr_t to = 0;
  std::string flags;
};
Vma VmaAt(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::string line;
  Vma vma;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t from = 0;
    uintptr_t to = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> from >> dash >> to && dash == '-' && line.find(':') > line.find(' ')) {
      inside = from <= at && at < to;
      if (inside) vma = Vma{from, to, ""};
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      vma.flags = line;
      return vma;
    }
  }
  return Vma{};
}

std::string VmFlagsAt(const void* address) {
  return VmaAt(address).flags;
}

// Without THP in the kernel, MADV_HUGEPAGE is refused and no mapping is advised.
bool KernelHasThp() {
  return std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
}

bool HasFlag(const std::string& flags, const std::string& flag) {
  std::istringstream words(flags);
  std::string word;
  while (words >> word) {
    if (word == flag) return true;
  }
  return false;
}

// Pages of [data, data + bytes) the kernel holds (mincore), or SIZE_MAX if part is not mapped.
size_t Resident(const void* data, size_t bytes) {
  std::vector<unsigned char> held((bytes + kPage - 1) / kPage);
  if (mincore(const_cast<void*>(data), bytes, held.data()) != 0) return SIZE_MAX;
  return static_cast<size_t>(
      std::count_if(held.begin(), held.end(), [](unsigned char h) { return (h & 1) != 0; }));
}

bool Mapped(const void* data, size_t bytes) {
  return Resident(data, bytes) != SIZE_MAX;
}

// From 2 MiB on, a mapping is aligned to a huge page and advised for huge pages (VmFlags "hg");
// the extra reserved for the alignment is given back on both sides, and the whole size asked for
// (not a multiple of pages here) is usable and zeroed. Smaller mappings are plain.
TEST(MappedMemoryTest, LargeMappingsAreAlignedAndAskForHugePages) {
  if (!KernelHasThp()) GTEST_SKIP() << "this kernel has no transparent huge pages";
  const size_t bytes = 3 * MappedMemory::kHugePageBytes + 100;
  MappedMemory large = MappedMemory::Map(bytes, MappedMemory::kLazy);
  ASSERT_NE(large.data(), nullptr);
  EXPECT_EQ(large.bytes(), bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % MappedMemory::kHugePageBytes, 0u);
  EXPECT_TRUE(HasFlag(VmFlagsAt(large.data()), "hg")) << VmFlagsAt(large.data());
  EXPECT_EQ(Resident(large.data(), bytes), 0u) << "lazy: nothing faulted in yet";
  const auto* begin = static_cast<const char*>(large.data());
  // The advice covers exactly its pages.
  const size_t span = (bytes + kPage - 1) / kPage * kPage;
  const Vma vma = VmaAt(begin);
  EXPECT_EQ(vma.from, reinterpret_cast<uintptr_t>(begin));
  EXPECT_EQ(vma.to, reinterpret_cast<uintptr_t>(begin) + span);
  EXPECT_TRUE(std::all_of(begin, begin + bytes, [](char c) { return c == 0; }));
  std::memset(large.data(), 0x5a, bytes);

  MappedMemory small = MappedMemory::Map(MappedMemory::kHugePageBytes / 2, MappedMemory::kLazy);
  ASSERT_NE(small.data(), nullptr);
  EXPECT_FALSE(HasFlag(VmFlagsAt(small.data()), "hg")) << VmFlagsAt(small.data());

  // Moved, it is unmapped once, by its last owner.
  void* data = large.data();
  MappedMemory moved = std::move(large);
  EXPECT_EQ(large.data(), nullptr);
  EXPECT_EQ(moved.data(), data);
  moved = MappedMemory();
  EXPECT_FALSE(Mapped(data, kPage)) << "unmapped when dropped";
}

// The process's address space (/proc/self/status VmSize), in bytes.
size_t AddressSpace() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoul(line.substr(7)) * 1024;
  }
  return 0;
}

// A large mapping reserves a huge page more than it needs, to align, and gives the head and tail
// of that reserve back: each of eight takes its own pages of address space and no more (within
// what the test's own allocations may add between two reads).
TEST(MappedMemoryTest, TheReserveForAligningIsGivenBack) {
  const size_t bytes = MappedMemory::kHugePageBytes + 100;
  const size_t span = (bytes + kPage - 1) / kPage * kPage;
  const size_t slack = 64u << 10;  // the heap may grow or shrink meanwhile
  std::vector<MappedMemory> maps;
  maps.reserve(8);
  for (int i = 0; i < 8; ++i) {
    const size_t before = AddressSpace();
    maps.push_back(MappedMemory::Map(bytes, MappedMemory::kLazy));
    const size_t after = AddressSpace();
    ASSERT_NE(maps.back().data(), nullptr);
    ASSERT_GT(before, 0u);
    EXPECT_GT(after - before + slack, span) << i;
    EXPECT_LT(after - before, span + slack) << i << ": a reserve was kept";
  }
}

// Populated, every page of a large mapping is in at once (at least 90%: a page may be reclaimed
// before it is looked at), zeroed.
TEST(MappedMemoryTest, APopulatedLargeMappingComesWithItsPagesIn) {
  if (!KernelHasThp()) GTEST_SKIP() << "this kernel has no transparent huge pages";
  const size_t bytes = 2 * MappedMemory::kHugePageBytes;
  MappedMemory memory = MappedMemory::Map(bytes, MappedMemory::kPopulated);
  ASSERT_NE(memory.data(), nullptr);
  EXPECT_TRUE(HasFlag(VmFlagsAt(memory.data()), "hg"));
  EXPECT_GE(Resident(memory.data(), bytes) * 10, bytes / kPage * 9);
  const auto* begin = static_cast<const char*>(memory.data());
  EXPECT_TRUE(std::all_of(begin, begin + bytes, [](char c) { return c == 0; }));
  EXPECT_EQ(MappedMemory::Map(0, MappedMemory::kPopulated).data(), nullptr);
}

}  // namespace
}  // namespace kvmesh::storage
