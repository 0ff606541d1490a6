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

// The VmFlags line of the mapping holding `address` (/proc/self/smaps), or "" if none does.
std::string VmFlagsAt(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t from = 0;
    uintptr_t to = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> from >> dash >> to && dash == '-' && line.find(':') > line.find(' ')) {
      inside = from <= at && at < to;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
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
  const size_t bytes = 3 * MappedMemory::kHugePageBytes + 100;
  MappedMemory large = MappedMemory::Map(bytes, MappedMemory::kLazy);
  ASSERT_NE(large.data(), nullptr);
  EXPECT_EQ(large.bytes(), bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % MappedMemory::kHugePageBytes, 0u);
  EXPECT_TRUE(HasFlag(VmFlagsAt(large.data()), "hg")) << VmFlagsAt(large.data());
  EXPECT_EQ(Resident(large.data(), bytes), 0u) << "lazy: nothing faulted in yet";
  const auto* begin = static_cast<const char*>(large.data());
  EXPECT_FALSE(Mapped(begin - kPage, kPage)) << "the head reserved for aligning is unmapped";
  const size_t span = (bytes + kPage - 1) / kPage * kPage;
  EXPECT_FALSE(Mapped(begin + span, kPage)) << "and so is the tail";
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

// Populated, every page of a large mapping is in at once (at least 90%: a page may be reclaimed
// before it is looked at), zeroed.
TEST(MappedMemoryTest, APopulatedLargeMappingComesWithItsPagesIn) {
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
