// Helpers for tests of the storage layer.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

#include "storage/database_store.hpp"
#include "storage/store.hpp"

namespace kvmesh::testing {

/// A wall clock the test moves (StoreOptions::wall_clock).
struct FakeClock {
  std::shared_ptr<std::chrono::system_clock::time_point> now =
      std::make_shared<std::chrono::system_clock::time_point>(std::chrono::system_clock::now());
  storage::StoreOptions Options() const {
    storage::StoreOptions options;
    auto clock = now;
    options.wall_clock = [clock] { return *clock; };
    return options;
  }
  void Advance(std::chrono::milliseconds by) { *now += by; }
};

/// Lists `db` page by page from `options` on (each next page resumes at the last one's
/// next_token), handing each page to `on_page`, until the last page or the first error, which
/// fails the test (non-fatally). Returns the number of pages listed successfully. More than
/// `max_pages` pages fail the test too: a token that does not advance would page forever.
inline size_t ListAllPages(const storage::DatabaseStore& db, ListOptions options,
                           const std::function<void(const ListPage&)>& on_page,
                           size_t max_pages = 100000) {
  size_t pages = 0;
  while (true) {  // ends at the last page, or after max_pages
    if (pages >= max_pages) {
      ADD_FAILURE() << "still more after " << max_pages << " pages";
      break;
    }
    ListPage page;
    Status s = db.List(options, &page);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    ++pages;
    on_page(page);
    if (!page.has_more()) break;
    options.start_after = page.next_token;
  }
  return pages;
}

}  // namespace kvmesh::testing
