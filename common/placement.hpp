// Placement: which nodes hold the replicas of a database.
//
// Rendezvous (highest-random-weight) hashing: every node scores each candidate by a hash of
// (database path, node id) and takes the `max` highest. Every node that knows the same members
// computes the same answer without talking to the others, and when a node joins or leaves only
// the databases whose top-`max` set contains it move (about max/N of them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace kvmesh {

/// The weight of `node` for the database at `path`: a 64-bit mix, stable across builds and
/// machines (it decides where data lives, so it must never change).
uint64_t PlacementScore(std::string_view path, uint64_t node);

/// The `max` candidates with the highest score for `path`, best first (ties, which need equal
/// 64-bit scores, go to the lower id). Fewer if there are fewer candidates; duplicates count
/// once.
std::vector<uint64_t> PlaceReplicas(std::string_view path, std::vector<uint64_t> candidates,
                                    size_t max);

}  // namespace kvmesh
