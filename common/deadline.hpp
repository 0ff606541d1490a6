// Deadline: the moment after which a request must not be applied, carried with the request to
// the database actor that applies it.
//
// A requester that gives up on a request (its timeout) must be able to rely on the request not
// being applied later: otherwise a write that timed out could land after a newer write of the same
// key made once the caller saw the timeout (a paused node holding it queued, say). So every
// request carries its deadline, and every hop (gateway, database actor) refuses a request whose
// deadline has passed, before applying it.
//
// The deadline is wall-clock time (nanoseconds since the Unix epoch), not a remaining duration: a
// duration could only be converted to a local deadline when the request is handled, so the time
// it waited before that (in a socket buffer or a mailbox of a stopped process) would not count.
// Wall clocks of the nodes are assumed synchronised, as the last-writer-wins timestamps already
// assume (storage/hlc.hpp); a node whose clock is ahead by more than a request's budget refuses
// the requests other nodes forward to it. A client, whose clock need not be synchronised, converts
// its own deadline into the clock of its node (client/client.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvmesh {

struct Deadline {
  /// Wall-clock nanoseconds since the Unix epoch; zero: no deadline.
  int64_t wall_ns = 0;

  /// Wall-clock nanoseconds since the Unix epoch, now.
  static int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  /// The deadline `budget` from now.
  static Deadline In(std::chrono::nanoseconds budget) { return Deadline{NowNs() + budget.count()}; }
  /// True if the deadline is set and has passed.
  bool Passed() const { return wall_ns != 0 && NowNs() >= wall_ns; }

  friend bool operator==(const Deadline& a, const Deadline& b) { return a.wall_ns == b.wall_ns; }
};

/// Requests sent together as one message (a client's puts, a gateway's writes to one database)
/// carry one deadline, the earliest of theirs, and fail whole once it passes; so they share a
/// message only if their deadlines lie this close (else one short deadline would fail the
/// others). A request may thus fail at most this much before its own deadline.
inline constexpr int64_t kCoalescedDeadlineSpreadNs = 10'000'000;

/// The message of the error for a request refused because its deadline passed before `where`
/// (e.g. "the database applied it") could act on it.
inline std::string DeadlinePassedMessage(const std::string& where) {
  return "deadline exceeded: the request's deadline passed before " + where +
         "; it was not applied";
}

}  // namespace kvmesh
