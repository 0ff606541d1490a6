// Helpers for tests of the storage layer.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <functional>

#include "storage/database_store.hpp"

namespace kvmesh::testing {

/// Lists `db` page by page from `options` on (each next page resumes at the last one's
/// next_token), handing each page to `on_page`, until the last page or the first error, which
/// fails the test (non-fatally). Returns the number of pages listed successfully.
inline size_t ListAllPages(const storage::DatabaseStore& db, ListOptions options,
                           const std::function<void(const ListPage&)>& on_page) {
  size_t pages = 0;
  while (true) {  // ends at the last page: each page resumes after the keys already listed
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
