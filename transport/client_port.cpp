#include "transport/client_port.hpp"

#include <spdlog/spdlog.h>
#include <caf/actor_proxy.hpp>
#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/io/network/native_socket.hpp>
#include <caf/proxy_registry.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/busy_poll.hpp"
#include "messages/type_ids.hpp"
#include "security/tls.hpp"
#include "transport/guard_common.hpp"
#include "transport/send_cork.hpp"

namespace kvmesh {

namespace {

using Clock = std::chrono::steady_clock;
using rw_state = caf::io::network::rw_state;

enum class FrameKind : uint8_t { kHello = 1, kWelcome = 2, kMessage = 3, kHeartbeat = 4 };

constexpr uint32_t kMagic = 0x504d564b;  // "KVMP" in little-endian bytes
constexpr uint32_t kVersion = 1;
/// u32 size | u8 kind.
constexpr size_t kFrameHeader = 5;
/// sender, receiver, message id.
constexpr size_t kMessageHeader = 24;
/// magic, version, heartbeat.
constexpr size_t kHelloBody = 16;
/// Above this much output a connection's peer does not read (or twice its largest frame, if
/// that is more: one answer of any size must fit), it is closed: a client that sends requests and
/// never reads the replies must not fill the node's memory.
constexpr size_t kMinPendingOutputBound = size_t{64} << 20;
/// A node takes frames of at most this many bytes before the client's hello (16 bytes).
constexpr size_t kHelloFrameBound = 64;
/// Proxies of a peer's actors a connection remembers (PortConnection::ProxyOf).
constexpr size_t kMaxSenders = 1024;
/// Heartbeats go at most this often, whatever a peer asks for; the node's loop ticks at most
/// this often.
constexpr int64_t kMinHeartbeatNs = 100'000'000;
constexpr int64_t kMinTickNs = 10'000'000;
/// After a caller read the connection for its reply (PortClient::ReadFor), the reader thread
/// leaves it to callers this long: a caller's next request then finds it free.
constexpr std::chrono::milliseconds kCallerGrace{1};
/// While a caller reads, the reader thread looks every kCallerGrace this many times, then waits
/// for it to leave.
constexpr int kCallerLooks = 4;
/// How often the client port's watchdog looks whether the port thread is stuck running actors.
constexpr std::chrono::milliseconds kWatchdogPeriod{100};

void PutU32(char* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutU64(char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}
uint64_t GetU64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string Errno(int error) {
  return std::strerror(error);
}

/// Wakes the thread that polls eventfd `fd`.
void Wake(int fd) {
  uint64_t one = 1;
  (void)!::write(fd, &one, sizeof(one));
}

/// Clears eventfd `fd` once its poll said it was woken.
void ClearWake(int fd) {
  uint64_t count = 0;
  (void)!::read(fd, &count, sizeof(count));
}

void NameThisThread(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

/// The execution unit CAF's serializers need: the actor system (message types), and on a
/// client the registry that makes proxies of the node's actors named in a reply.
class PortContext final : public caf::execution_unit {
 public:
  explicit PortContext(caf::actor_system& system) : caf::execution_unit(&system) {}
  void exec_later(caf::resumable* ptr) override { system().scheduler().enqueue(ptr); }
};

/// Runs, on the port thread, the actors one request made ready, so a lone request is answered
/// without waking a CAF worker (a thread hand-off costs more than a small request's work on a
/// loaded machine): the request's enqueue names this unit, and CAF hands it the gateway shard if
/// the shard was idle, then whatever that shard and its successors make ready in turn (the
/// database actor, the shard again). Under load, with several requests read in one round, or
/// past a bound of resumes, everything goes to CAF's scheduler as before: the port thread keeps
/// reading while the workers use the cores. Only the kinds of actor the options name run here
/// (ClientPortOptions::run_on_port). Work that turns out slow (a RocksDB write stall) holds
/// every connection's reads: after a round over kSlowRound the workers take all requests for a
/// pause, 1 s, doubled (up to 64 s) by each slow round within four pauses of the last, halved by
/// each quick one after that. (The port's watchdog keeps heartbeats going meanwhile.)
class InlineRunner final : public caf::execution_unit {
 public:
  InlineRunner(caf::actor_system& system, const std::set<std::string, std::less<>>& kinds)
      : caf::execution_unit(&system), kinds_(kinds) {}

  /// When the current round of jobs started (steady clock, ns), 0 outside one; for the watchdog.
  int64_t running_since() const { return running_since_.load(std::memory_order_acquire); }

  /// The thread that runs jobs here (the port's): an actor that ran here keeps this unit as its
  /// context, and anything it makes ready from another thread goes to the scheduler.
  void set_owner(std::thread::id owner) { owner_ = owner; }

  void exec_later(caf::resumable* job) override {
    // Brokers name their multiplexer themselves; anything but an actor goes to the scheduler.
    if (job->subtype() != caf::resumable::scheduled_actor || std::this_thread::get_id() != owner_ ||
        kinds_.count(std::string_view(static_cast<caf::scheduled_actor*>(job)->name())) == 0) {
      system().scheduler().enqueue(job);
      return;
    }
    jobs_.push_back(job);
  }

  /// Runs the jobs waiting (and those they make ready) on this thread if `here` (and no slow
  /// round paused that), up to kMaxResumes of them, and hands the rest to the scheduler. True if
  /// it ran them for over kSlowRound.
  bool Finish(bool here) {
    size_t next = 0;
    bool slow = false;
    // One clock read for the pause, the watchdog and the round's length.
    const auto start = here && !jobs_.empty() ? Clock::now() : Clock::time_point{};
    if (start != Clock::time_point{} && start >= paused_until_) {
      running_since_.store(
          std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count(),
          std::memory_order_release);
      for (size_t resumes = 0; next < jobs_.size() && resumes < kMaxResumes; ++resumes) {
        caf::resumable* job = jobs_[next++];
        if (job->resume(this, kThroughput) == caf::resumable::resume_later) {
          // Its mailbox holds more: a worker takes it (and this unit's reference).
          system().scheduler().enqueue(job);
        } else {
          intrusive_ptr_release(job);
        }
      }
      running_since_.store(0, std::memory_order_release);
      const auto end = Clock::now();
      slow = end - start > kSlowRound;
      if (!slow && end > last_change_ + 4 * pause_ && pause_ > kMinPause) {
        pause_ /= 2;
        last_change_ = end;  // the next halving four pauses on
      }
      if (slow) {
        if (end < last_slow_ + 4 * pause_) pause_ = std::min(2 * pause_, kMaxPause);
        last_slow_ = last_change_ = end;
        paused_until_ = end + pause_;
        spdlog::debug(
            "the client port's thread ran a request for {} us: the workers take all "
            "requests for the next {} s",
            std::chrono::duration_cast<std::chrono::microseconds>(end - start).count(),
            std::chrono::duration_cast<std::chrono::seconds>(pause_).count());
      }
    }
    for (; next < jobs_.size(); ++next) system().scheduler().enqueue(jobs_[next]);
    jobs_.clear();
    return slow;
  }

  /// True while a slow round's pause lasts (the workers take every request).
  bool Paused() const { return Clock::now() < paused_until_; }

 private:
  /// A put is four resumes (the shard, its commit, the database actor, the shard answering).
  static constexpr size_t kMaxResumes = 16;
  static constexpr size_t kThroughput = 4;
  /// Longer than a scheduler's time slice: a round a loaded machine preempted is not slow.
  static constexpr std::chrono::milliseconds kSlowRound{10};
  static constexpr std::chrono::seconds kMinPause{1};
  static constexpr std::chrono::seconds kMaxPause{64};
  std::vector<caf::resumable*> jobs_;
  std::thread::id owner_;
  const std::set<std::string, std::less<>>& kinds_;
  std::atomic<int64_t> running_since_{0};
  Clock::time_point paused_until_{};
  Clock::time_point last_slow_{};
  Clock::time_point last_change_{};
  std::chrono::seconds pause_{kMinPause};
};

class PortConnection;

/// Stands for an actor on the other side of a connection: a message to it is written to the
/// socket on the sender's thread. One that cannot be (the connection is gone) is answered at
/// once, if it is a request, with an error, not left to its timeout.
class PortProxy final : public caf::actor_proxy {
 public:
  PortProxy(caf::actor_config& cfg, std::weak_ptr<PortConnection> connection)
      : caf::actor_proxy(cfg), connection_(std::move(connection)) {}

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* ctx) override;

  void kill_proxy(caf::execution_unit* ctx, caf::error reason) override {
    killed_ = true;
    cleanup(std::move(reason), ctx);
  }

 private:
  std::weak_ptr<PortConnection> connection_;
  std::atomic<bool> killed_{false};
};

/// Makes the PortProxies of one connection.
class ProxyMaker final : public caf::proxy_registry::backend {
 public:
  void set_connection(std::weak_ptr<PortConnection> connection) {
    connection_ = std::move(connection);
  }
  /// The connection's own (PortConnection::ProxyOf), so that a handle read in a message and
  /// the sender of a message are one proxy.
  caf::strong_actor_ptr make_proxy(caf::node_id node, caf::actor_id aid) override;
  void set_last_hop(caf::node_id*) override {}

 private:
  std::weak_ptr<PortConnection> connection_;
};

/// One connection of either side: its socket (plain or TLS), frames in and out, and the
/// proxies of the other side's actors.
///
/// Writes come from any thread (an actor sending to a proxy) and go to the socket at once under
/// the connection's mutex; what the socket does not take waits and is flushed by the reading
/// thread when the socket is writable (`wants_write` asks for that). Reads, and the input
/// buffer and proxy map they use, are the reading thread's only: one thread at a time (on a
/// client, the reader thread or a caller reading its own reply, handing over under the
/// PortClient's lead mutex). The descriptor is closed when the last reference goes, so it is
/// never reused while a writer may still hold it. A writer holding a SendCork
/// (transport/send_cork.hpp) adds its message to `corked_` instead, sent at the cork's flush or
/// before the next write made without one.
class PortConnection : public std::enable_shared_from_this<PortConnection>,
                       public SendCork::Output {
 public:
  PortConnection(caf::actor_system& system, int fd, std::unique_ptr<security::TlsSession> tls,
                 std::string description, size_t max_frame_bytes)
      : system_(system),
        fd_(fd),
        tls_(std::move(tls)),
        description_(std::move(description)),
        max_frame_bytes_(max_frame_bytes),
        max_pending_(std::max(kMinPendingOutputBound, 2 * max_frame_bytes)),
        proxies_(system, maker_),
        context_(system) {
    last_read_ns_ = last_write_ns_ = NowNs();
  }

  ~PortConnection() {
    proxies_.clear();
    ::close(fd_);
  }

  /// Must be called once, right after make_shared: the proxies hold a weak reference. A client
  /// (`client` true) decodes the node's actor handles into proxies, and registers its actors
  /// that send, so that answers addressed to them by id find them.
  void Init(bool client) {
    maker_.set_connection(weak_from_this());
    client_ = client;
    if (client) context_.proxy_registry_ptr(&proxies_);
  }

  int fd() const { return fd_; }
  /// The largest frame body the peer may announce from now on (the reading thread's): small
  /// until a node has the client's hello, then that of a message.
  void set_frame_bound(size_t bytes) { frame_bound_ = bytes; }
  size_t message_frame_bound() const { return max_frame_bytes_ + kMessageHeader; }
  const std::string& description() const { return description_; }
  PortContext& context() { return context_; }
  security::TlsSession* tls() { return tls_.get(); }
  int64_t last_read_ns() const { return last_read_ns_.load(std::memory_order_relaxed); }
  int64_t last_write_ns() const { return last_write_ns_.load(std::memory_order_relaxed); }
  /// True once the peer sent what no side of this protocol sends (a frame without a kind, or
  /// over the bound): not a kvmesh client port, or a hostile peer.
  bool protocol_error() const { return protocol_error_; }

  /// Called (under the connection's mutex, so never after Close) when output waits for the
  /// socket to become writable, or the connection broke while writing: the reading thread
  /// should look. It must not call back into the connection.
  void set_wants_write(std::function<void()> f) { wants_write_ = std::move(f); }

  /// The node id the other side's proxies carry (made up by the node for a client; the node's
  /// own for the client).
  void set_peer_node(caf::node_id node) { peer_node_ = std::move(node); }
  const caf::node_id& peer_node() const { return peer_node_; }

  /// The proxy for actor `aid` of the other side; null for 0.
  /// The reading thread's only (and the connect, before it starts). Past kMaxSenders, the
  /// proxies nobody else holds are forgotten: a peer naming ever new senders (or a client
  /// discarding actors) costs nothing lasting.
  caf::strong_actor_ptr ProxyOf(caf::actor_id aid) {
    if (aid == caf::invalid_actor_id) return nullptr;
    auto it = senders_.find(aid);
    if (it != senders_.end()) return it->second;
    if (senders_.size() >= kMaxSenders) ForgetUnused();
    caf::actor_config cfg;
    auto proxy = caf::make_actor<PortProxy, caf::strong_actor_ptr>(aid, peer_node_, &system_, cfg,
                                                                   weak_from_this());
    senders_.emplace(aid, proxy);
    return proxy;
  }

  /// Writes a frame of `kind` with `body`; false if the connection is closed or broke.
  bool SendFrame(FrameKind kind, const char* body, size_t size) {
    std::vector<char> frame(kFrameHeader + size);
    PutU32(frame.data(), static_cast<uint32_t>(size + 1));
    frame[4] = static_cast<char>(kind);
    if (size > 0) std::memcpy(frame.data() + kFrameHeader, body, size);
    return Write(frame.data(), frame.size());
  }

  /// Writes a message from `sender` to the other side's actor `receiver`; false (nothing
  /// written) if the connection is closed or broke, or the message cannot be serialized.
  bool SendMessage(const caf::strong_actor_ptr& sender, caf::actor_id receiver, caf::message_id mid,
                   const caf::message& content) {
    thread_local std::vector<char> frame;
    frame.resize(kFrameHeader + kMessageHeader);
    caf::actor_id from = caf::invalid_actor_id;
    if (sender) {
      from = sender->id();
      // The node answers by actor id: the reader finds the actor in the registry (as CAF's own
      // serialization of a handle would put it there).
      if (client_) Register(sender);
    }
    PutU64(frame.data() + kFrameHeader, from);
    PutU64(frame.data() + kFrameHeader + 8, receiver);
    PutU64(frame.data() + kFrameHeader + 16, mid.integer_value());
    {
      caf::binary_serializer sink{&context_, frame};
      if (auto err = sink(const_cast<caf::message&>(content))) {
        WarnRateLimited(guard_logs().dropped, "dropped messages",
                        "dropped a message on the connection {}: it cannot be serialized: {}",
                        description_, system_.render(err));
        return false;
      }
    }
    PutU32(frame.data(), static_cast<uint32_t>(frame.size() - 4));
    frame[4] = static_cast<char>(FrameKind::kMessage);
    const bool sent = Write(frame.data(), frame.size());
    if (frame.capacity() > (size_t{1} << 20)) std::vector<char>().swap(frame);
    return sent;
  }

  /// Sends a heartbeat if nothing was written for `interval_ns`.
  void HeartbeatIfIdle(int64_t now, int64_t interval_ns) {
    if (now - last_write_ns() >= interval_ns) SendFrame(FrameKind::kHeartbeat, nullptr, 0);
  }

  /// Writes what waits for the socket. The reading thread, when it is writable. False if the
  /// connection broke.
  bool Flush() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (broken_) return false;
    while (pending_pos_ < pending_.size()) {
      size_t wrote = 0;
      if (WriteSome(wrote, pending_.data() + pending_pos_, pending_.size() - pending_pos_) ==
          rw_state::failure) {
        broken_ = true;
        return false;
      }
      if (wrote == 0) {
        DropWritten();
        return true;
      }
      pending_pos_ += wrote;
      last_write_ns_.store(NowNs(), std::memory_order_relaxed);
    }
    pending_.clear();
    pending_pos_ = 0;
    // A buffer grown for a burst does not stay that large.
    if (pending_.capacity() > (size_t{1} << 20)) std::vector<char>().swap(pending_);
    return true;
  }

  bool HasPendingOutput() {
    std::lock_guard<std::mutex> lock(mutex_);
    return pending_pos_ < pending_.size();
  }
  bool broken() {
    std::lock_guard<std::mutex> lock(mutex_);
    return broken_ || closed_;
  }

  /// Drives a TLS handshake this side started (a client): true once established; false with
  /// `*why` when it failed. Call again when the socket is readable.
  bool DriveHandshake(bool* done, std::string* why) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t n = 0;
    if (tls_->write_some(n, fd_, nullptr, 0) == rw_state::failure) {
      *why = tls_->failure().empty() ? "the node closed the connection" : tls_->failure();
      return false;
    }
    *done = tls_->established();
    return true;
  }

  /// Calls `on_frame(kind, body, size)` for each complete frame buffered or read now (false
  /// from it: stop, the connection is to be closed). False, with `*why`, when the connection is
  /// closed by the peer, broke, announced a frame over the bound, or `on_frame` stopped.
  template <class OnFrame>
  bool ReadFrames(OnFrame&& on_frame, std::string* why, bool* more = nullptr) {
    if (more != nullptr) *more = false;
    if (!ParseFrames(on_frame, why)) return false;
    // At most this much per call, so one busy connection does not starve the others; `*more`
    // then says to call again soon (TLS may hold decrypted bytes no poll reports).
    size_t budget = size_t{1} << 20;
    for (;;) {
      if (in_.size() - in_end_ < 16384) {
        Compact();
        // Grown as bytes arrive, never to what a frame header claims: a peer that announces a
        // large frame and sends nothing more costs nothing.
        if (in_.size() - in_end_ < 16384) in_.resize(std::max<size_t>(65536, 2 * in_.size()));
      }
      size_t got = 0;
      const size_t room = in_.size() - in_end_;
      rw_state state;
      if (tls_) {
        // The TLS session reads and writes one state: writers wait.
        std::lock_guard<std::mutex> lock(mutex_);
        if (closed_) {
          *why = "closed";
          return false;
        }
        state = ReadSome(got, in_.data() + in_end_, room);
      } else {
        // A socket reads while another thread writes: a writer (a reply going out, a caller's
        // next request) does not wait for this read. After Close() the socket is shut down,
        // and reads the end.
        state = ReadSome(got, in_.data() + in_end_, room);
      }
      if (state == rw_state::failure) {
        std::lock_guard<std::mutex> lock(mutex_);
        broken_ = true;
      }
      if (state == rw_state::failure) {
        *why = tls_ && !tls_->failure().empty() ? tls_->failure()
                                                : std::string("the connection was closed");
        return false;
      }
      if (got == 0) break;
      in_end_ += got;
      last_read_ns_.store(NowNs(), std::memory_order_relaxed);
      if (!ParseFrames(on_frame, why)) return false;
      if (got >= budget) {
        if (more != nullptr) *more = true;
        break;
      }
      budget -= got;
      // A socket that gave less than there was room for has nothing more now (the next poll
      // says when it has): one system call less per request. TLS may hold decrypted bytes.
      if (!tls_ && got < room) break;
    }
    // A buffer grown for one large frame does not stay that large.
    if (in_end_ == 0 && in_.size() > (size_t{1} << 20)) std::vector<char>().swap(in_);
    return true;
  }

  /// Shuts the socket down: a thread waiting to read it sees the end. Close() follows.
  void Shutdown() { ::shutdown(fd_, SHUT_RDWR); }

  /// No more reads or writes: messages to its proxies fail from now on, and they are killed
  /// (their monitors get down messages). The descriptor stays open until the last reference
  /// goes (shut down, so the peer sees the close now).
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return;
      closed_ = true;
      ::shutdown(fd_, SHUT_RDWR);
      pending_.clear();
      pending_pos_ = 0;
      corked_.clear();
    }
    // Kills them (remote_link_unreachable): their monitors learn it. The reading thread has
    // stopped reading (its caller closes), so senders_ is this thread's now.
    for (auto& [aid, proxy] : senders_) {
      static_cast<caf::actor_proxy*>(caf::actor_cast<caf::abstract_actor*>(proxy))
          ->kill_proxy(nullptr, caf::exit_reason::remote_link_unreachable);
    }
    senders_.clear();
    proxies_.clear();
  }

 private:
  /// Drops the proxies only senders_ holds. One held elsewhere (the client's gateway, a promise
  /// waiting to answer) stays, so that Close() still kills it and its monitors learn of it.
  void ForgetUnused() {
    for (auto it = senders_.begin(); it != senders_.end();) {
      if (it->second->strong_refs.load() == 1) {
        it = senders_.erase(it);
      } else {
        ++it;
      }
    }
  }

  /// Moves the unparsed bytes to the front of the input buffer.
  void Compact() {
    if (in_pos_ == 0) return;
    std::memmove(in_.data(), in_.data() + in_pos_, in_end_ - in_pos_);
    in_end_ -= in_pos_;
    in_pos_ = 0;
  }

  /// Hands each complete buffered frame to `on_frame`; see ReadFrames.
  template <class OnFrame>
  bool ParseFrames(OnFrame& on_frame, std::string* why) {
    while (in_end_ - in_pos_ >= kFrameHeader) {
      const uint32_t size = GetU32(in_.data() + in_pos_);
      if (size == 0) {
        *why = "it sent a frame without a kind";
        protocol_error_ = true;
        return false;
      }
      if (size - 1 > frame_bound_) {
        protocol_error_ = true;
        *why = "it announced a message of " + FormatSize(size - 1) + "; the maximum is " +
               FormatSize(frame_bound_);
        return false;
      }
      if (in_end_ - in_pos_ < 4 + size_t{size}) break;  // the rest is to come
      const auto kind = static_cast<FrameKind>(in_[in_pos_ + 4]);
      const char* body = in_.data() + in_pos_ + kFrameHeader;
      in_pos_ += 4 + size_t{size};
      if (!on_frame(kind, body, size_t{size} - 1)) {
        why->clear();
        return false;
      }
    }
    if (in_pos_ == in_end_) in_pos_ = in_end_ = 0;
    return true;
  }

  /// Writes `data` or keeps the rest for Flush; false if the connection is closed or broke (or
  /// its peer does not read: over max_pending_). Under a SendCork::Hold, holds it back for the
  /// cork (up to SendCork::kMaxCorkedBytes); without one, sends what was held back first.
  bool Write(const char* data, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_ || broken_) return false;
    SendCork* cork = SendCork::Current();
    // Held only for the cork that lists the connection (or the first): another one's flush
    // would not send them (gateway shards, each with a cork of its own, share connections).
    if (cork != nullptr && (listed_in_ == nullptr || listed_in_ == cork) &&
        corked_.size() + size <= SendCork::kMaxCorkedBytes) {
      if (listed_in_ == nullptr) {
        cork->Add(weak_from_this());
        listed_in_ = cork;
      }
      corked_.insert(corked_.end(), data, data + size);
      return true;
    }
    if (corked_.empty()) return WriteLocked(data, size);
    if (size > SendCork::kMaxCorkedBytes) return SendCorkedLocked() && WriteLocked(data, size);
    corked_.insert(corked_.end(), data, data + size);
    return SendCorkedLocked();
  }

  void SendCorked(SendCork* cork) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (listed_in_ != cork) return;  // not listed by it (only a misuse would call it so)
    listed_in_ = nullptr;
    if (closed_ || broken_) {
      corked_.clear();
      return;
    }
    if (!corked_.empty()) SendCorkedLocked();
  }

  /// Writes what was held back (under mutex_).
  bool SendCorkedLocked() {
    const bool ok = WriteLocked(corked_.data(), corked_.size());
    corked_.clear();
    // At most kMaxCorkedBytes and a message of at most as many; a larger buffer is not kept.
    if (corked_.capacity() > 2 * SendCork::kMaxCorkedBytes) std::vector<char>().swap(corked_);
    return ok;
  }

  /// Write without the cork (under mutex_).
  bool WriteLocked(const char* data, size_t size) {
    bool ok = true;
    bool ask_for_write = false;
    if (pending_pos_ < pending_.size()) {
      if (pending_.size() - pending_pos_ + size > max_pending_) {
        broken_ = true;
        WarnRateLimited(guard_logs().oversized, "closes",
                        "closed the connection {}: the peer has not read {} of output",
                        description_, FormatSize(pending_.size() - pending_pos_));
        ok = false;
        ask_for_write = true;
      } else {
        DropWritten();
        pending_.insert(pending_.end(), data, data + size);
      }
    } else {
      size_t done = 0;
      while (done < size) {
        size_t wrote = 0;
        if (WriteSome(wrote, data + done, size - done) == rw_state::failure) {
          broken_ = true;
          ok = false;
          break;
        }
        if (wrote == 0) break;
        done += wrote;
      }
      if (done > 0) last_write_ns_.store(NowNs(), std::memory_order_relaxed);
      if (ok && done < size) {
        pending_.assign(data + done, data + size);
        pending_pos_ = 0;
      }
      ask_for_write = !ok || done < size;
    }
    // Under the mutex: once Close() has run (it takes the mutex) nobody calls it any more, so
    // it may use what its owner closes after closing the connections.
    if (ask_for_write && wants_write_) wants_write_();
    return ok;
  }

  /// Drops the bytes of pending_ already written once they are most of it: a peer that keeps a
  /// steady backlog must not make the buffer grow by everything ever sent.
  void DropWritten() {
    if (pending_pos_ >= (size_t{1} << 20) && pending_pos_ >= pending_.size() / 2) {
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(pending_pos_));
      pending_pos_ = 0;
    }
  }

  rw_state ReadSome(size_t& got, char* buf, size_t len) {
    if (tls_) return tls_->read_some(got, fd_, buf, len);
    got = 0;
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, len, 0);
      if (n > 0) {
        got = static_cast<size_t>(n);
        return rw_state::success;
      }
      if (n == 0) return rw_state::failure;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return rw_state::success;
      return rw_state::failure;
    }
  }

  rw_state WriteSome(size_t& wrote, const char* buf, size_t len) {
    if (tls_) return tls_->write_some(wrote, fd_, buf, len);
    wrote = 0;
    for (;;) {
      const ssize_t n = ::send(fd_, buf, len, MSG_NOSIGNAL);
      if (n >= 0) {
        wrote = static_cast<size_t>(n);
        return rw_state::success;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return rw_state::success;
      return rw_state::failure;
    }
  }

  void Register(const caf::strong_actor_ptr& sender) {
    const caf::actor_id id = sender->id();
    {
      std::lock_guard<std::mutex> lock(registered_mutex_);
      if (!registered_.insert(id).second) return;
      // Actor ids are never reused: forgetting them all now and then only costs a lookup.
      if (registered_.size() > 4096) {
        registered_.clear();
        registered_.insert(id);
      }
    }
    system_.registry().put(id, sender);
  }

  caf::actor_system& system_;
  const int fd_;
  std::unique_ptr<security::TlsSession> tls_;
  const std::string description_;
  const size_t max_frame_bytes_;
  const size_t max_pending_;
  std::function<void()> wants_write_;

  std::mutex mutex_;  // guards the socket (and TLS session) and what follows
  bool closed_ = false;
  bool broken_ = false;
  std::vector<char> pending_;
  size_t pending_pos_ = 0;
  /// Held back for a SendCork, and the cork that lists this connection (null: none), which
  /// sends them at its flush. (A send that fails there is reported as a broken connection is:
  /// its proxies go down, not to the sender at once.)
  std::vector<char> corked_;
  SendCork* listed_in_ = nullptr;

  // The reading thread's.
  std::vector<char> in_;
  size_t in_pos_ = 0;
  size_t in_end_ = 0;

  bool client_ = false;
  bool protocol_error_ = false;  // the reading thread's
  /// Largest frame body the peer may announce now (the reading thread's).
  size_t frame_bound_ = max_frame_bytes_ + kMessageHeader;
  /// Proxies of the other side's actors by id (ProxyOf).
  std::unordered_map<caf::actor_id, caf::strong_actor_ptr> senders_;
  std::atomic<int64_t> last_read_ns_{0};
  std::atomic<int64_t> last_write_ns_{0};
  caf::node_id peer_node_;
  ProxyMaker maker_;
  caf::proxy_registry proxies_;
  PortContext context_;
  std::mutex registered_mutex_;
  std::unordered_set<caf::actor_id> registered_;
};

caf::strong_actor_ptr ProxyMaker::make_proxy(caf::node_id node, caf::actor_id aid) {
  auto connection = connection_.lock();
  // The node names only actors of its own; a handle of a third node has no route here.
  if (!connection || node != connection->peer_node()) return nullptr;
  return connection->ProxyOf(aid);
}

void PortProxy::enqueue(caf::mailbox_element_ptr what, caf::execution_unit* ctx) {
  caf::message content = what->move_content_to_message();
  if (!killed_) {
    if (auto connection = connection_.lock()) {
      if (connection->SendMessage(what->sender, id(), what->mid, content)) return;
    }
  }
  if (what->mid.is_request() && what->sender) {
    what->sender->enqueue(
        nullptr, what->mid.response_id(),
        caf::make_message(ToError(Status::Unavailable("lost the connection to the kvmesh node"))),
        ctx);
  }
}

/// The header fields of a message frame.
struct MessageHeader {
  caf::actor_id sender = 0;
  caf::actor_id receiver = 0;
  caf::message_id mid;
};

/// True for an id of CAF's normal category (a request, its response, or an asynchronous
/// message), not marked answered: the only ids either side sends.
bool NormalMessage(caf::message_id mid) {
  const uint64_t v = mid.integer_value();
  return (v & caf::message_id::category_flag_mask) == caf::message_id::default_async_value &&
         (v & caf::message_id::answered_flag_mask) == 0;
}

bool ParseMessageHeader(const char* body, size_t size, MessageHeader* out) {
  if (size < kMessageHeader) return false;
  out->sender = GetU64(body);
  out->receiver = GetU64(body + 8);
  out->mid = caf::message_id{GetU64(body + 16)};
  return true;
}

/// Answers a refused request from `sender` with `err`, if it was a request.
void Refuse(const caf::strong_actor_ptr& sender, caf::message_id mid, caf::error err) {
  if (sender && mid.is_request()) {
    sender->enqueue(nullptr, mid.response_id(), caf::make_message(std::move(err)), nullptr);
  }
}

/// Latency over batching (a round trip is a few small frames), and a dead peer noticed by the
/// kernel too. The BASP ports' connections are tuned by the same CAF helpers.
void TuneSocket(int fd) {
  (void)caf::io::network::tcp_nodelay(fd, true);
  (void)caf::io::network::keepalive(fd, true);
}

/// The hello or welcome's first 16 bytes.
void PutHelloFields(char* out, int64_t heartbeat_ns) {
  PutU32(out, kMagic);
  PutU32(out + 4, kVersion);
  PutU64(out + 8, static_cast<uint64_t>(heartbeat_ns));
}

int64_t HeartbeatNs(caf::timespan peer_timeout) {
  return std::max<int64_t>(std::chrono::nanoseconds(peer_timeout).count() / 3, kMinHeartbeatNs);
}

}  // namespace

// -- the node's side ------------------------------------------------------------------------------

struct ClientPort::Impl {
  caf::actor_system& system;
  ClientPortOptions options;
  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<size_t> open{0};
  std::mutex close_mutex;
  bool closed = false;

  std::shared_ptr<const std::set<std::string>> requests;
  std::unordered_map<caf::actor_id, caf::strong_actor_ptr> addressable;
  /// Node ids made up for the connections: a random host part per port, a counter.
  caf::node_id::default_data::host_id_type host_id{};
  uint32_t next_node = 1;

  struct Conn {
    std::shared_ptr<PortConnection> connection;
    std::string address;
    Clock::time_point handshake_deadline;
    bool welcome_sent = false;
    bool hello_received = false;
    bool bound = false;  // in the PeerDirectory
    bool want_write = false;
    int64_t heartbeat_ns = 0;
  };
  std::unordered_map<int, Conn> conns;
  /// Connections a writer asks the loop to look at (CheckWriters).
  std::mutex check_mutex;
  std::vector<int> to_check;
  /// Connections to read again without waiting (ReadFrames stopped at its budget).
  std::vector<int> ready;
  /// The shortest heartbeat interval of the open connections (their hellos'), as of the last
  /// tick or a hello since: the tick follows it.
  int64_t min_heartbeat_ns = INT64_MAX;
  bool accept_paused = false;
  Clock::time_point accept_resume{};
  /// When the loop next sends heartbeats and checks deadlines (Tick).
  Clock::time_point next_tick{};
  size_t pending_handshakes = 0;
  std::unique_ptr<ConnectionCounter> counter;
  RateLimitedLog silent_log;
  /// The actors the requests of a round made ready (InlineRunner), and how many requests it
  /// handed on.
  InlineRunner runner;
  size_t requests_this_round = 0;
  /// How long the loop polls before it sleeps (the port thread's only).
  BusyPoll busy_poll;

  Impl(caf::actor_system& sys, ClientPortOptions opts)
      : system(sys),
        options(std::move(opts)),
        runner(sys, options.run_on_port),
        busy_poll(std::chrono::nanoseconds(options.busy_poll).count()) {}

  /// The port thread holds it while it works on `conns`, and lets go while it runs actors
  /// (InlineRunner): then the watchdog thread may use `conns`.
  std::mutex conns_mutex;
  std::thread watchdog;
  std::mutex watchdog_mutex;
  std::condition_variable watchdog_cv;

  /// While the port thread runs actors, sends the heartbeats that come due (it cannot): a slow
  /// request run there (a RocksDB stall) must not make every client think the node silent. Wakes
  /// every kWatchdogPeriod, 10 times a second.
  void Watchdog() {
    NameThisThread("kvmesh.port.wd");
    std::unique_lock<std::mutex> lock(watchdog_mutex);
    while (!stopping.load()) {
      if (watchdog_cv.wait_for(lock, kWatchdogPeriod, [this] { return stopping.load(); })) break;
      if (runner.running_since() == 0) continue;
      // Free while actors run; taken again (or running_since 0) once the round ended.
      std::unique_lock<std::mutex> conns_lock(conns_mutex, std::try_to_lock);
      if (!conns_lock.owns_lock() || runner.running_since() == 0) continue;
      // Only heartbeats due: a short round costs nothing.
      const int64_t now = NowNs();
      const int64_t heartbeat_ns = HeartbeatNs(options.peer_timeout);
      for (auto& [fd, conn] : conns) {
        if (!conn.hello_received) continue;
        conn.connection->HeartbeatIfIdle(now, std::min(heartbeat_ns, conn.heartbeat_ns));
      }
    }
  }

  void Run() {
    NameThisThread("kvmesh.port");
    runner.set_owner(std::this_thread::get_id());
    // Actors run here (InlineRunner): the node's thread hooks see this thread as its own, as they
    // see CAF's workers (a callback that would destroy the node from it is caught).
    system.thread_started();
    const int64_t heartbeat_ns = HeartbeatNs(options.peer_timeout);
    const int64_t base_tick_ns = std::max<int64_t>(
        kMinTickNs,
        std::chrono::nanoseconds(
            std::min<caf::timespan>(options.limits.handshake_timeout, options.peer_timeout))
                .count() /
            4);
    next_tick = Clock::now() + std::chrono::nanoseconds(base_tick_ns);
    std::vector<epoll_event> events(256);
    // The last round read one request and nothing else waits: requests come one at a time.
    bool lone = false;
    // Let go only while actors run here (the watchdog's turn).
    std::unique_lock<std::mutex> conns_lock(conns_mutex);
    while (!stopping.load()) {
      // Connections a read left with more to read (a budget ran out) are read again at once.
      const auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now());
      const int timeout_ms =
          ready.empty() ? static_cast<int>(std::max<int64_t>(0, wait.count()) + 1) : 0;
      // Polls only after a request that came alone: under a burst of requests, sleeping lets the
      // next ones gather, to be read (and answered) together, and leaves the CPU to the workers
      // serving them (polling there made gets with 50 in flight 0.74x as fast).
      const int n = busy_poll.Run(
          [&](int timeout) {
            return ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), timeout);
          },
          timeout_ms, lone);
      if (n < 0 && errno != EINTR) {
        spdlog::error("the {} stopped: epoll_wait: {}", options.limits.name, Errno(errno));
        break;
      }
      std::vector<int> again;
      again.swap(ready);
      requests_this_round = 0;
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == wake_fd) {
          ClearWake(wake_fd);
          CheckWriters();
          continue;
        }
        if (fd == listen_fd) {
          Accept();
          continue;
        }
        auto it = conns.find(fd);
        if (it == conns.end()) continue;
        if (events[i].events & EPOLLOUT) {
          if (!it->second.connection->Flush()) {
            CloseConn(fd, "");
            continue;
          }
        }
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
          again.erase(std::remove(again.begin(), again.end(), fd), again.end());
          ReadConn(fd);
          it = conns.find(fd);
          if (it == conns.end()) continue;
        }
        UpdateInterest(it->second);
      }
      for (int fd : again) {
        if (conns.count(fd) == 0) continue;
        ReadConn(fd);
        auto it = conns.find(fd);
        if (it != conns.end()) UpdateInterest(it->second);
      }
      // One request read, and nothing more waiting to be read: answered on this thread. After a
      // slow one, the connections are read before any is judged silent: what they sent meanwhile
      // waits unread.
      lone = requests_this_round == 1 && ready.empty();
      conns_lock.unlock();
      const bool slow = runner.Finish(lone);
      conns_lock.lock();
      // After a slow round the requests go to the workers for a while (InlineRunner, which the
      // slow round paused): no polling that would take a CPU from them.
      if (lone && runner.Paused()) lone = false;
      if (!slow && Clock::now() >= next_tick) {
        Tick(heartbeat_ns);
        // Often enough for the shortest heartbeat a client asked for.
        next_tick =
            Clock::now() + std::chrono::nanoseconds(std::min(
                               base_tick_ns, std::max<int64_t>(kMinTickNs, min_heartbeat_ns / 2)));
      }
    }
    std::vector<int> fds;
    for (auto& [fd, conn] : conns) fds.push_back(fd);
    for (int fd : fds) CloseConn(fd, "");
    system.thread_terminates();
  }

  /// Looks at the connections writers asked about (wants_write): closes the broken ones, and
  /// asks for writable events for those with output waiting. Only this thread changes what
  /// epoll watches, so the watch always matches Conn::want_write.
  void CheckWriters() {
    std::vector<int> fds;
    {
      std::lock_guard<std::mutex> lock(check_mutex);
      fds.swap(to_check);
    }
    for (int fd : fds) {
      auto it = conns.find(fd);
      if (it == conns.end()) continue;  // closed meanwhile (or its descriptor reused: harmless)
      if (it->second.connection->broken()) {
        CloseConn(fd, "");
      } else {
        UpdateInterest(it->second);
      }
    }
  }

  void UpdateInterest(Conn& conn) {
    const bool want = conn.connection->HasPendingOutput() || conn.connection->broken();
    if (want == conn.want_write) return;
    conn.want_write = want;
    epoll_event ev{};
    ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
    ev.data.fd = conn.connection->fd();
    (void)::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, ev.data.fd, &ev);
  }

  /// Stops watching the listening socket until `until`: it stays readable while the process
  /// has no descriptor left to accept with, which would spin this thread.
  void PauseAccepting(Clock::time_point until) {
    if (accept_paused) return;
    accept_paused = true;
    accept_resume = until;
    next_tick = std::min(next_tick, until);
    (void)::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
  }
  void ResumeAccepting() {
    accept_paused = false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listen_fd;
    (void)::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
  }

  void Accept() {
    for (int accepted = 0; accepted < 64; ++accepted) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          WarnRateLimited(guard_logs().refusals, "refusals", "the {} {} could not accept: {}",
                          options.limits.name, port, Errno(errno));
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            PauseAccepting(Clock::now() + std::chrono::milliseconds(100));
          }
        }
        return;
      }
      // As the BASP ports name a peer (transport/connection_guard.cpp), so both count alike.
      auto address = caf::io::network::remote_addr_of_fd(fd);
      const std::string from = address ? *address : std::string("an unknown address");
      if (!counter->Admit(from, pending_handshakes, port)) {
        ::close(fd);
        continue;
      }
      TuneSocket(fd);
      std::unique_ptr<security::TlsSession> session;
      if (options.security.tls) {
        session = security::TlsSession::Accept(options.security.tls, fd, /*nodes_only=*/false,
                                               options.security.admit);
        if (!session) {
          counter->Release(from);
          ::close(fd);
          continue;
        }
      }
      const std::string description =
          "from " + from + " to the " + options.limits.name + " " + std::to_string(port);
      auto connection = std::make_shared<PortConnection>(
          system, fd, std::move(session), description, options.limits.max_message_bytes);
      connection->Init(/*client=*/false);
      connection->set_frame_bound(kHelloFrameBound);
      caf::node_id node = caf::make_node_id(next_node++, host_id);
      connection->set_peer_node(node);
      connection->set_wants_write([this, fd] {
        // From a writer's thread (under the connection's mutex, so never after its Close):
        // the loop looks at it (CheckWriters). A descriptor reused meanwhile is looked at for
        // nothing.
        {
          std::lock_guard<std::mutex> lock(check_mutex);
          to_check.push_back(fd);
        }
        Wake(wake_fd);
      });
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        counter->Release(from);
        continue;  // the connection's destructor closes fd
      }
      Conn conn;
      conn.connection = std::move(connection);
      conn.address = from;
      conn.handshake_deadline = Clock::now() + options.limits.handshake_timeout;
      ++pending_handshakes;
      open.fetch_add(1);
      Conn& added = conns.emplace(fd, std::move(conn)).first->second;
      if (!SendWelcome(added)) CloseConn(fd, "");
    }
  }

  void ReadConn(int fd) {
    Conn& conn = conns.at(fd);
    std::string why;
    bool more = false;
    const bool ok =
        conn.connection->ReadFrames([&](FrameKind kind, const char* body,
                                        size_t size) { return OnFrame(conn, kind, body, size); },
                                    &why, &more);
    if (!ok) {
      CloseConn(fd, why);
      return;
    }
    if (more) ready.push_back(fd);
    // With TLS the welcome goes once the session is established (the reads drive it).
    if (!conn.welcome_sent && !SendWelcome(conn)) CloseConn(fd, "");
  }

  /// Sends the welcome once the connection may carry data (at once, or once TLS verified the
  /// peer): the node speaks first, so a refused TLS peer reads the refusal (an alert) rather
  /// than a reset of the bytes it sent meanwhile. False if the connection is to be closed.
  bool SendWelcome(Conn& conn) {
    PortConnection& connection = *conn.connection;
    if (connection.tls() && !connection.tls()->established()) return true;
    conn.welcome_sent = true;
    // With TLS: bound to the certificate the handshake verified (and admit took).
    if (connection.tls() && options.security.directory) {
      const auto& identity = connection.tls()->peer();
      if (!identity) return false;
      if (!options.security.directory->Bind(connection.peer_node(), *identity)) {
        WarnRateLimited(guard_logs().refusals, "refusals",
                        "closed the connection {}: its node id is taken", connection.description());
        return false;
      }
      conn.bound = true;
    }
    std::vector<char> welcome(kHelloBody + 8);
    PutHelloFields(welcome.data(), HeartbeatNs(options.peer_timeout));
    PutU64(welcome.data() + kHelloBody, options.gateway->id());
    caf::binary_serializer sink{&connection.context(), welcome};
    caf::node_id own = system.node();
    if (sink(own)) return false;
    return connection.SendFrame(FrameKind::kWelcome, welcome.data(), welcome.size());
  }

  bool OnFrame(Conn& conn, FrameKind kind, const char* body, size_t size) {
    PortConnection& connection = *conn.connection;
    if (!conn.hello_received) {
      if (!conn.welcome_sent || kind != FrameKind::kHello || size < kHelloBody ||
          GetU32(body) != kMagic) {
        WarnRateLimited(guard_logs().refusals, "refusals",
                        "closed the connection {}: it is not a kvmesh client (no hello)",
                        connection.description());
        return false;
      }
      if (GetU32(body + 4) != kVersion) {
        // The client learnt this node's version from the welcome, and says so to its user.
        WarnRateLimited(guard_logs().refusals, "refusals",
                        "closed the connection {}: it speaks client port version {}, this node {}",
                        connection.description(), GetU32(body + 4), kVersion);
        return false;
      }
      conn.hello_received = true;
      --pending_handshakes;
      connection.set_frame_bound(connection.message_frame_bound());
      conn.heartbeat_ns = std::min<int64_t>(HeartbeatNs(options.peer_timeout),
                                            std::max<int64_t>(GetU64(body + 8), kMinHeartbeatNs));
      min_heartbeat_ns = std::min(min_heartbeat_ns, conn.heartbeat_ns);
      next_tick =
          std::min(next_tick, Clock::now() + std::chrono::nanoseconds(conn.heartbeat_ns / 2));
      return true;
    }
    switch (kind) {
      case FrameKind::kHeartbeat:
        return true;
      case FrameKind::kMessage:
        return OnMessage(conn, body, size);
      default:
        WarnRateLimited(guard_logs().refusals, "refusals",
                        "closed the connection {}: a frame of unknown kind {}",
                        connection.description(), static_cast<int>(kind));
        return false;
    }
  }

  bool OnMessage(Conn& conn, const char* body, size_t size) {
    PortConnection& connection = *conn.connection;
    MessageHeader header;
    if (!ParseMessageHeader(body, size, &header)) {
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: a message frame without its header",
                      connection.description());
      return false;
    }
    if (!NormalMessage(header.mid)) {
      // CAF files a message by its id's category: an "upstream" one is read as a stream
      // message whatever it holds (a request so marked threw and stopped the node), an urgent
      // one jumps the gateway's queue. The client library sends neither.
      WarnRateLimited(guard_logs().refusals, "refusals",
                      "closed the connection {}: a message id of category {}",
                      connection.description(),
                      (header.mid.integer_value() & caf::message_id::category_flag_mask) >>
                          caf::message_id::category_offset);
      return false;
    }
    if (header.mid.is_response()) {
      // A client only asks. CAF would match a response to the gateway's own pending requests
      // (to the supervisor, to database actors) by its id alone.
      WarnRateLimited(guard_logs().dropped, "dropped messages",
                      "dropped a response on the connection {}: clients send requests only",
                      connection.description());
      return true;
    }
    auto target = addressable.find(header.receiver);
    if (target == addressable.end()) {
      WarnRateLimited(guard_logs().dropped, "dropped messages",
                      "refused a message on the connection {}: it is addressed to actor {}, and "
                      "only the gateway ({}) and its shards may be addressed",
                      connection.description(), header.receiver, options.gateway->id());
      Refuse(connection.ProxyOf(header.sender), header.mid,
             caf::make_error(caf::sec::unexpected_message));
      return true;
    }
    const char* payload = body + kMessageHeader;
    const size_t payload_size = size - kMessageHeader;
    // Checked before CAF decodes it: CAF makes what the type names say.
    std::string type;
    {
      caf::binary_deserializer source{&connection.context(), payload, payload_size};
      uint16_t type_number = 0;
      if (source.begin_object(type_number, type) || type_number != 0 || !requests->count(type)) {
        WarnRateLimited(guard_logs().dropped, "dropped messages",
                        "refused a message on the connection {}: the gateway takes no {}",
                        connection.description(), type.empty() ? "unreadable message" : type);
        Refuse(connection.ProxyOf(header.sender), header.mid,
               caf::make_error(caf::sec::unexpected_message));
        return true;
      }
    }
    caf::message content;
    caf::binary_deserializer source{&connection.context(), payload, payload_size};
    if (auto err = source(content); err || source.remaining() != 0) {
      WarnRateLimited(guard_logs().dropped, "dropped messages",
                      "refused a message on the connection {}: it cannot be decoded ({})",
                      connection.description(),
                      err ? system.render(err) : std::string("bytes left over"));
      Refuse(connection.ProxyOf(header.sender), header.mid,
             caf::make_error(caf::sec::unexpected_message));
      return true;
    }
    target->second->enqueue(connection.ProxyOf(header.sender), header.mid, std::move(content),
                            &runner);
    // A second request this round: the workers take them all, at once.
    if (++requests_this_round > 1) runner.Finish(/*here=*/false);
    return true;
  }

  void Tick(int64_t heartbeat_ns) {
    const auto now = Clock::now();
    if (accept_paused && now >= accept_resume) ResumeAccepting();
    const int64_t now_ns = NowNs();
    const int64_t silent_ns = std::chrono::nanoseconds(options.peer_timeout).count();
    std::vector<std::pair<int, std::string>> expired;
    int64_t shortest = INT64_MAX;
    size_t silent = 0;
    std::string silent_from;
    for (auto& [fd, conn] : conns) {
      if (!conn.hello_received) {
        if (now >= conn.handshake_deadline) {
          ++silent;
          silent_from = conn.address;
          expired.emplace_back(fd, "");
        }
        continue;
      }
      if (conn.connection->broken() || now_ns - conn.connection->last_read_ns() > silent_ns) {
        expired.emplace_back(fd, "");
        continue;
      }
      conn.connection->HeartbeatIfIdle(now_ns, std::min(heartbeat_ns, conn.heartbeat_ns));
      shortest = std::min(shortest, conn.heartbeat_ns);
    }
    // Of the connections open now: one that asked for short heartbeats and left costs nothing.
    min_heartbeat_ns = shortest;
    if (silent > 0) {
      uint64_t suppressed = 0;
      if (silent_log.Allow(&suppressed)) {
        spdlog::info(
            "closed {} connection(s) to the {} {} (one from {}) that sent no handshake within "
            "{} ms{}",
            silent, options.limits.name, port, silent_from,
            std::chrono::duration_cast<std::chrono::milliseconds>(options.limits.handshake_timeout)
                .count(),
            MoreSince(suppressed, "such closes"));
      }
    }
    for (auto& [fd, why] : expired) CloseConn(fd, why);
  }

  void CloseConn(int fd, const std::string& why) {
    auto it = conns.find(fd);
    if (it == conns.end()) return;
    Conn conn = std::move(it->second);
    conns.erase(it);
    (void)::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    if (!why.empty() && why != "the connection was closed") {
      WarnRateLimited(guard_logs().refusals, "refusals", "closed the connection {}: {}",
                      conn.connection->description(), why);
    }
    if (!conn.hello_received) --pending_handshakes;
    counter->Release(conn.address);
    if (conn.bound) options.security.directory->Unbind(conn.connection->peer_node());
    conn.connection->Close();
    open.fetch_sub(1);
  }
};

ClientPort::ClientPort(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ClientPort::~ClientPort() {
  Close();
}

uint16_t ClientPort::port() const {
  return impl_->port;
}

size_t ClientPort::connections() const {
  return impl_->open.load();
}

BusyPoll::Stats ClientPort::busy_poll_stats() const {
  return impl_->busy_poll.stats();
}

void ClientPort::Close() {
  std::lock_guard<std::mutex> lock(impl_->close_mutex);
  if (impl_->closed) return;
  impl_->closed = true;
  impl_->stopping = true;
  Wake(impl_->wake_fd);
  if (impl_->thread.joinable()) impl_->thread.join();
  {
    std::lock_guard<std::mutex> lock(impl_->watchdog_mutex);
    impl_->watchdog_cv.notify_all();
  }
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
  ::close(impl_->listen_fd);
  ::close(impl_->epoll_fd);
  ::close(impl_->wake_fd);
  impl_->addressable.clear();
  impl_->options.gateway = nullptr;
  impl_->options.shards.clear();
}

Status ClientPort::Open(caf::actor_system& system, ClientPortOptions options,
                        std::unique_ptr<ClientPort>* out) {
  const std::string where = options.host + ":" + std::to_string(options.port);
  if (!system.node()) {
    // Handles of the node's actors in replies (the gateway's shards) carry its node id, which
    // a client must tell from its own: CAF gives an actor system one with its middleman only.
    return Status::InvalidArgument(
        "a client port needs an actor system with a node id (CAF's "
        "middleman loaded)");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(options.port);
  if (int rc = ::getaddrinfo(options.host.empty() ? nullptr : options.host.c_str(), service.c_str(),
                             &hints, &found);
      rc != 0) {
    return Status::IOError(where + ": " + ::gai_strerror(rc));
  }
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = Errno(errno);
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) break;
    why = Errno(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(found);
  if (fd < 0) return Status::IOError(where + ": " + why);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  uint16_t actual = options.port;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
    actual = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  auto impl = std::make_unique<Impl>(system, std::move(options));
  impl->listen_fd = fd;
  impl->port = actual;
  impl->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  impl->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->epoll_fd < 0 || impl->wake_fd < 0) {
    const std::string error = Errno(errno);
    ::close(fd);
    if (impl->epoll_fd >= 0) ::close(impl->epoll_fd);
    if (impl->wake_fd >= 0) ::close(impl->wake_fd);
    return Status::IOError(where + ": " + error);
  }
  for (int watched : {impl->listen_fd, impl->wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = watched;
    (void)::epoll_ctl(impl->epoll_fd, EPOLL_CTL_ADD, watched, &ev);
  }
  impl->requests = RequestTypes(impl->options.interface);
  impl->addressable.emplace(impl->options.gateway->id(), impl->options.gateway);
  for (const auto& shard : impl->options.shards) impl->addressable.emplace(shard->id(), shard);
  std::random_device random;
  for (auto& byte : impl->host_id) byte = static_cast<uint8_t>(random());
  impl->counter = std::make_unique<ConnectionCounter>(impl->options.limits);
  Impl* raw = impl.get();
  out->reset(new ClientPort(std::move(impl)));
  raw->thread = std::thread([raw] { raw->Run(); });
  raw->watchdog = std::thread([raw] { raw->Watchdog(); });
  return Status::OK();
}

// -- the client's side ----------------------------------------------------------------------------

struct PortClient::Impl {
  caf::actor_system& system;
  std::shared_ptr<PortConnection> connection;
  int wake_fd = -1;
  std::thread reader;
  std::atomic<bool> stopping{false};
  std::atomic<bool> up{false};
  std::mutex close_mutex;
  bool closed = false;
  int64_t silent_ns = 0;
  int64_t heartbeat_ns = 0;
  bool heartbeats = true;
  /// How long a caller reading for its reply (ReadFor) polls before it sleeps: used by the one
  /// caller reading at a time (handed on under lead_mutex).
  BusyPoll busy_poll;

  /// Who reads the connection now: the reader thread, or a caller waiting for its reply (ReadFor).
  /// One at a time: the connection's input and its proxies of senders are the reader's.
  enum class Reader { kNone, kThread, kCaller };
  std::mutex lead_mutex;
  /// The reader thread waits here while callers read.
  std::condition_variable lead_cv;
  Reader reading = Reader::kNone;
  /// Callers waiting for a message to their actor (Expect), and whether it came: a reply read
  /// by another thread before its caller looks is not waited for again.
  struct Waiting {
    bool arrived = false;
    /// Another thread was reading when the caller looked (ReadFor): the reader thread reads
    /// for it until its message came.
    bool following = false;
  };
  std::unordered_map<caf::actor_id, Waiting> waiting;
  std::atomic<size_t> waiting_count{0};
  /// Followers whose message has not come yet.
  size_t unserved = 0;
  /// A caller found the reader thread reading: it stops once its followers are served.
  bool caller_wants_to_read = false;
  /// The reader thread waits for a caller that reads long: it leaving wakes the thread.
  bool parked = false;
  /// When a caller last read or asked to: the reader thread waits kCallerGrace after it before
  /// it reads again, so that a caller's next request finds the connection free.
  Clock::time_point caller_active{};
  /// A caller found the connection broken (`failure` says why), or the reader thread stopped:
  /// no caller reads any more.
  bool failed = false;
  std::string failure;

  Impl(caf::actor_system& sys, caf::timespan poll)
      : system(sys), busy_poll(std::chrono::nanoseconds(poll).count()) {}

  ~Impl() {
    if (wake_fd >= 0) ::close(wake_fd);
  }

  void Wake() { kvmesh::Wake(wake_fd); }

  /// Delivers a message frame from the node to the actor it names, and says which it was in
  /// `*receiver`.
  bool Deliver(const char* body, size_t size, caf::actor_id* receiver_id) {
    MessageHeader header;
    if (!ParseMessageHeader(body, size, &header) || !NormalMessage(header.mid)) return false;
    *receiver_id = header.receiver;
    caf::strong_actor_ptr receiver = system.registry().get(header.receiver);
    caf::message content;
    caf::binary_deserializer source{&connection->context(), body + kMessageHeader,
                                    size - kMessageHeader};
    if (auto err = source(content)) {
      spdlog::warn("dropped a message from the kvmesh node {}: it cannot be decoded: {}",
                   connection->description(), system.render(err));
      return true;
    }
    if (receiver) {
      receiver->enqueue(connection->ProxyOf(header.sender), header.mid, std::move(content),
                        nullptr);
    }
    return true;
  }

  /// Reads what the connection has now and delivers it (the current reader's). True if a
  /// message for `waiter` was among it (`*ok` false, with `*why`: the connection is gone).
  bool ReadAndDeliver(caf::actor_id waiter, bool* ok, std::string* why, bool* more) {
    bool got = false;
    *ok = connection->ReadFrames(
        [&](FrameKind kind, const char* body, size_t size) {
          if (kind != FrameKind::kMessage) return kind == FrameKind::kHeartbeat;
          caf::actor_id receiver = caf::invalid_actor_id;
          if (!Deliver(body, size, &receiver)) return false;
          got = got || receiver == waiter;
          if (waiting_count.load(std::memory_order_acquire) > 0) {
            std::lock_guard<std::mutex> lock(lead_mutex);
            auto it = waiting.find(receiver);
            if (it != waiting.end() && !it->second.arrived) {
              it->second.arrived = true;
              if (it->second.following) --unserved;
            }
          }
          return true;
        },
        why, more);
    return got;
  }

  /// Waits for the reader thread's turn to read (false: stop). Meanwhile it sends heartbeats
  /// and watches for silence (`*why`), whoever reads.
  bool AwaitTurn(std::string* why) {
    std::unique_lock<std::mutex> lock(lead_mutex);
    for (;;) {
      if (stopping.load() || failed) {
        if (failed) *why = failure;
        return false;
      }
      const auto now = Clock::now();
      if (reading == Reader::kNone && (unserved > 0 || now >= caller_active + kCallerGrace)) {
        reading = Reader::kThread;
        caller_wants_to_read = false;
        return true;
      }
      lock.unlock();
      if (!Housekeeping(why)) return false;
      lock.lock();
      // While a caller reads, look again every kCallerGrace for the first few: a caller that
      // got its reply soon leaves without waking this thread (that would cost a wake-up per
      // call), and whatever comes for others after it (asynchronous replies, down messages)
      // waits at most about that. A caller reading longer wakes this thread when it leaves.
      auto until = now + std::chrono::nanoseconds(heartbeat_ns / 2);
      parked = false;
      if (reading == Reader::kNone) {
        until = std::min(until, caller_active + kCallerGrace);
      } else if (now < caller_active + kCallerLooks * kCallerGrace) {
        until = std::min(until, now + kCallerGrace);
      } else {
        parked = true;
      }
      lead_cv.wait_until(lock, until);
      parked = false;
    }
  }

  /// Heartbeats when idle; false with `*why` once the node was silent for the peer timeout.
  bool Housekeeping(std::string* why) {
    const int64_t now = NowNs();
    if (now - connection->last_read_ns() > silent_ns) {
      *why = "the node was silent for " + std::to_string(silent_ns / 1000000) + " ms";
      return false;
    }
    if (heartbeats) connection->HeartbeatIfIdle(now, heartbeat_ns);
    return true;
  }

  void Run() {
    NameThisThread("kvmesh.reader");
    std::string why;
    while (AwaitTurn(&why)) {
      pollfd fds[2];
      fds[0].fd = connection->fd();
      fds[0].events = POLLIN | (connection->HasPendingOutput() ? POLLOUT : 0);
      fds[0].revents = 0;
      fds[1].fd = wake_fd;
      fds[1].events = POLLIN;
      fds[1].revents = 0;
      const int wait_ms = static_cast<int>(std::max<int64_t>(1, heartbeat_ns / 2000000));
      const int n = ::poll(fds, 2, wait_ms);
      if (stopping.load()) break;
      if (n < 0 && errno != EINTR) {
        why = "poll: " + Errno(errno);
        break;
      }
      if (fds[1].revents & POLLIN) ClearWake(wake_fd);
      if (connection->broken()) {
        why = "the connection broke";
        break;
      }
      if ((fds[0].revents & POLLOUT) && !connection->Flush()) {
        why = "the connection broke";
        break;
      }
      if (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) {
        bool ok = true;
        // Until nothing is left: a TLS session may hold decrypted bytes no poll reports.
        bool more = true;
        while (ok && more) ReadAndDeliver(caf::invalid_actor_id, &ok, &why, &more);
        if (!ok) break;
      }
      if (!Housekeeping(&why)) break;
      std::lock_guard<std::mutex> lock(lead_mutex);
      reading = Reader::kNone;
      // A caller asked to read: its next request finds the connection free, once the callers
      // that wait on this thread are served.
      if (caller_wants_to_read && unserved == 0) caller_active = Clock::now();
    }
    // A caller reading now sees the end (its poll returns), and none starts.
    connection->Shutdown();
    {
      std::unique_lock<std::mutex> lock(lead_mutex);
      failed = true;
      // The caller's poll sees the shutdown at once (and polls at most 100 ms in any case).
      while (reading == Reader::kCaller) lead_cv.wait_for(lock, std::chrono::milliseconds(10));
    }
    up = false;
    if (!stopping.load() && !why.empty()) {
      spdlog::debug("lost the connection {}: {}", connection->description(), why);
    }
    connection->Close();
  }

  /// See PortClient::Expect.
  void Expect(caf::actor_id waiter) {
    std::lock_guard<std::mutex> lock(lead_mutex);
    Waiting& entry = waiting[waiter];
    if (entry.following && !entry.arrived) --unserved;  // expected again without DoneWaiting
    entry = Waiting{};
    waiting_count.store(waiting.size(), std::memory_order_release);
  }

  /// See PortClient::ReadFor.
  bool ReadFor(caf::actor_id waiter, Clock::time_point deadline) {
    {
      std::lock_guard<std::mutex> lock(lead_mutex);
      auto it = waiting.find(waiter);
      if (it == waiting.end()) return false;  // not expected: nothing to read for
      if (it->second.arrived) return true;
      if (stopping.load() || failed) return false;
      caller_active = Clock::now();
      if (reading != Reader::kNone) {
        if (!it->second.following) {
          it->second.following = true;
          ++unserved;
        }
        if (reading == Reader::kThread) caller_wants_to_read = true;
        return false;
      }
      reading = Reader::kCaller;
    }
    bool got = false;
    bool ok = true;
    bool more = false;
    std::string why;
    while (!got && ok && !stopping.load()) {
      if (more) {
        // The last read stopped at its budget (TLS may hold decrypted bytes no poll reports).
        got = ReadAndDeliver(waiter, &ok, &why, &more);
        continue;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      // The wake descriptor too: a writer that left output waiting says so there.
      pollfd p[2] = {
          {connection->fd(),
           static_cast<short>(POLLIN | (connection->HasPendingOutput() ? POLLOUT : 0)), 0},
          {wake_fd, POLLIN, 0}};
      // Bounded too: Close() and the reader thread's silence check end it by shutting the socket
      // down, which a poll sees at once; this is only a backstop.
      const int n = busy_poll.Run([&](int timeout) { return ::poll(p, 2, timeout); },
                                  static_cast<int>(std::min<int64_t>(left + 1, 100)));
      if (n < 0 && errno != EINTR) {
        why = "poll: " + Errno(errno);
        ok = false;
        break;
      }
      if (p[1].revents & POLLIN) {
        ClearWake(wake_fd);
        if (connection->broken()) {
          why = "the connection broke";
          ok = false;
          break;
        }
      }
      if ((p[0].revents & POLLOUT) && !connection->Flush()) {
        why = "the connection broke";
        ok = false;
        break;
      }
      if (p[0].revents & (POLLIN | POLLERR | POLLHUP)) {
        got = ReadAndDeliver(waiter, &ok, &why, &more);
      }
    }
    // Nothing left behind that the next reader's poll would not see.
    while (ok && more) ReadAndDeliver(waiter, &ok, &why, &more);
    std::lock_guard<std::mutex> lock(lead_mutex);
    reading = Reader::kNone;
    caller_active = Clock::now();
    if (!ok) {
      failed = true;
      failure = why;
    }
    // The reader thread takes over: for the callers waiting, or to close the connection.
    if (!ok || failed || parked || unserved > 0 || stopping.load()) lead_cv.notify_all();
    return got;
  }

  /// See PortClient::DoneWaiting.
  void DoneWaiting(caf::actor_id waiter) {
    std::lock_guard<std::mutex> lock(lead_mutex);
    auto it = waiting.find(waiter);
    if (it == waiting.end()) return;
    if (it->second.following && !it->second.arrived) --unserved;
    waiting.erase(it);
    waiting_count.store(waiting.size(), std::memory_order_release);
  }
};

PortClient::PortClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PortClient::~PortClient() {
  Close();
}

bool PortClient::connected() const {
  return impl_->up.load();
}

void PortClient::Expect(caf::actor_id waiter) {
  impl_->Expect(waiter);
}

bool PortClient::ReadFor(caf::actor_id waiter, std::chrono::steady_clock::time_point deadline) {
  return impl_->ReadFor(waiter, deadline);
}

void PortClient::DoneWaiting(caf::actor_id waiter) {
  impl_->DoneWaiting(waiter);
}

BusyPoll::Stats PortClient::busy_poll_stats() const {
  return impl_->busy_poll.stats();
}

void PortClient::Close() {
  std::lock_guard<std::mutex> lock(impl_->close_mutex);
  if (impl_->closed) return;
  impl_->closed = true;
  impl_->stopping = true;
  impl_->Wake();
  {
    std::lock_guard<std::mutex> lead(impl_->lead_mutex);
    impl_->lead_cv.notify_all();
  }
  if (impl_->reader.joinable()) impl_->reader.join();
  impl_->connection->Close();
}

namespace {

/// A non-blocking socket connected to `host`:`port` by `deadline`, or -1 with `*why`.
int ConnectSocket(const std::string& host, uint16_t port, Clock::time_point deadline,
                  std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    *why = "cannot resolve " + host + ": " + ::gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  *why = "no address for " + host;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      *why = Errno(errno);
      continue;
    }
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      *why = Errno(errno);
      ::close(fd);
      fd = -1;
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    int error = 0;
    socklen_t len = sizeof(error);
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
      error = ETIMEDOUT;
    } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
      error = errno;
    }
    if (error != 0) {
      *why = Errno(error);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  return fd;
}

/// Waits until `fd` is readable or `deadline`; false at the deadline.
bool WaitReadable(int fd, Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return false;
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(left)) > 0;
}

}  // namespace

Status PortClient::Connect(caf::actor_system& system, const std::string& host, uint16_t port,
                           const PortConnectOptions& options, std::unique_ptr<PortClient>* out,
                           caf::strong_actor_ptr* gateway) {
  const auto deadline = Clock::now() + options.connect_timeout;
  const std::string where = host + ":" + std::to_string(port);
  std::string why;
  const int fd = ConnectSocket(host, port, deadline, &why);
  if (fd < 0) return Status::Unavailable(why);
  TuneSocket(fd);
  std::unique_ptr<security::TlsSession> session;
  if (options.security.tls) {
    session = security::TlsSession::Connect(options.security.tls, fd, host);
    if (!session) {
      ::close(fd);
      return Status::Unavailable("cannot start TLS");
    }
  }
  auto impl = std::make_unique<Impl>(system, options.busy_poll);
  impl->connection = std::make_shared<PortConnection>(system, fd, std::move(session), "to " + where,
                                                      options.max_message_bytes);
  impl->connection->Init(/*client=*/true);
  PortConnection& connection = *impl->connection;
  if (connection.tls()) {
    bool done = false;
    while (!done) {
      if (!connection.DriveHandshake(&done, &why)) return Status::Unavailable(why);
      if (!done && !WaitReadable(fd, deadline)) {
        return Status::Unavailable("the TLS handshake did not finish in time");
      }
    }
  }
  const int64_t own_heartbeat = HeartbeatNs(options.peer_timeout);
  // The node speaks first, its welcome: its heartbeat, its gateway and its node id. (With TLS
  // 1.3 the node's verdict on this side's certificate, an alert if refused, comes here too.)
  bool welcomed = false;
  Status refused;
  while (!welcomed) {
    if (!WaitReadable(fd, deadline)) {
      return Status::Unavailable(
          "the node sent no welcome within " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(options.connect_timeout)
                  .count()) +
          " ms");
    }
    const bool ok = connection.ReadFrames(
        [&](FrameKind kind, const char* body, size_t size) {
          if (kind != FrameKind::kWelcome || size < kHelloBody + 8 || GetU32(body) != kMagic) {
            refused = Status::InvalidArgument("not a kvmesh client port");
            return false;
          }
          if (GetU32(body + 4) != kVersion) {
            refused = Status::InvalidArgument("the node speaks client port version " +
                                              std::to_string(GetU32(body + 4)) + ", this client " +
                                              std::to_string(kVersion));
            return false;
          }
          caf::node_id node;
          caf::binary_deserializer source{&connection.context(), body + kHelloBody + 8,
                                          size - kHelloBody - 8};
          if (source(node) || !node || node == system.node()) {
            refused = Status::InvalidArgument("the node's welcome names no valid node id");
            return false;
          }
          connection.set_peer_node(node);
          impl->heartbeat_ns =
              std::min(own_heartbeat, std::max<int64_t>(GetU64(body + 8), kMinHeartbeatNs));
          *gateway = connection.ProxyOf(GetU64(body + kHelloBody));
          welcomed = true;
          return false;  // the rest is the reader's
        },
        &why);
    if (!refused.ok()) return refused;
    if (!ok && !welcomed && connection.protocol_error()) {
      return Status::InvalidArgument("not a kvmesh client port (" + why + ")");
    }
    if (!ok && !welcomed) return Status::Unavailable(why);
  }
  char hello[kHelloBody];
  PutHelloFields(hello, own_heartbeat);
  if (!connection.SendFrame(FrameKind::kHello, hello, sizeof(hello))) {
    return Status::Unavailable("the connection was closed");
  }
  impl->silent_ns = std::chrono::nanoseconds(options.peer_timeout).count();
  impl->heartbeats = options.heartbeats;
  impl->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->wake_fd < 0) return Status::Unavailable("eventfd: " + Errno(errno));
  Impl* raw = impl.get();
  connection.set_wants_write([raw] { raw->Wake(); });
  impl->up = true;
  out->reset(new PortClient(std::move(impl)));
  raw->reader = std::thread([raw] { raw->Run(); });
  return Status::OK();
}

}  // namespace kvmesh
