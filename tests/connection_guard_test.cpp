// The guarded transport (transport/connection_guard.hpp) under CAF's BASP broker, with peers that
// speak BASP byte by byte, so that every step is the test's: what each connection has sent, and
// which descriptor the server gave it.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/basp/version.hpp>

#include "messages/system_config.hpp"
#include "messages/type_ids.hpp"
#include "process_util.hpp"
#include "test_util.hpp"
#include "transport/connection_guard.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::Connect;
using kvmesh::testing::Eventually;
using kvmesh::testing::ReadExactlyBefore;
using kvmesh::testing::SendAll;
namespace basp = caf::io::basp;

/// The actor id a raw peer gives its asking actor.
constexpr caf::actor_id kAsker = 42;
/// The request id of that actor's request (a normal-priority request, number 1).
constexpr uint64_t kRequestId = caf::message_id::default_async_value | 1;

/// One BASP frame: a header with `payload`'s length, then `payload`.
std::string Frame(caf::actor_system& sys, basp::message_type operation, uint64_t operation_data,
                  caf::actor_id source, caf::actor_id dest, const std::vector<char>& payload) {
  basp::header header{operation,      0,      static_cast<uint32_t>(payload.size()),
                      operation_data, source, dest};
  std::vector<char> out;
  caf::binary_serializer sink{sys, out};
  EXPECT_FALSE(sink(header));
  out.insert(out.end(), payload.begin(), payload.end());
  return std::string(out.begin(), out.end());
}

/// A client handshake announcing `node`, then a message to `dest` from `source` (0: anonymous).
std::string HandshakeAndMessage(caf::actor_system& sys, const caf::node_id& node,
                                caf::actor_id source, caf::actor_id dest, uint64_t message_id,
                                const caf::message& msg) {
  std::vector<char> hello;
  caf::binary_serializer hello_sink{sys, hello};
  EXPECT_FALSE(hello_sink(node));
  std::vector<char> body;
  caf::binary_serializer body_sink{sys, body};
  EXPECT_FALSE(body_sink(std::vector<caf::strong_actor_ptr>{}, msg));
  return Frame(sys, basp::message_type::client_handshake, basp::version, 0, 0, hello) +
         Frame(sys, basp::message_type::direct_message, message_id, source, dest, body);
}

/// The port at one end of socket `fd` (`peer`: the remote end), or -1.
int PortOf(int fd, bool peer) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  auto* a = reinterpret_cast<sockaddr*>(&addr);
  if ((peer ? ::getpeername(fd, a, &len) : ::getsockname(fd, a, &len)) != 0) return -1;
  return ntohs(addr.sin_port);
}

/// This process's descriptor of the server's end of the client socket `client`, connected to
/// `server_port` (server and client are both in this process), or -1 (not accepted yet).
int ServerEndOf(int client, int server_port) {
  const int client_port = PortOf(client, false);
  for (int fd = 0; fd < 4096; ++fd) {
    if (fd != client && PortOf(fd, false) == server_port && PortOf(fd, true) == client_port) {
      return fd;
    }
  }
  return -1;
}

/// Bytes received on socket `fd` and not read yet (`sent`: sent on it and not acknowledged yet).
int Pending(int fd, bool sent) {
  int bytes = 0;
  return ::ioctl(fd, sent ? TIOCOUTQ : FIONREAD, &bytes) == 0 ? bytes : -1;
}

/// Reads BASP frames from `fd` until the reply to kAsker's request comes (its content goes to
/// `*reply`) or `timeout` passes (false). Other frames (the server's handshake, heartbeats, CAF's
/// own messages) are skipped.
bool AwaitReply(caf::actor_system& sys, int fd, std::chrono::milliseconds timeout,
                caf::message* reply) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int frames = 0; frames < 100; ++frames) {
    const std::string head = ReadExactlyBefore(fd, basp::header_size, deadline);
    if (head.size() != basp::header_size) return false;  // timed out, or closed
    basp::header header;
    caf::binary_deserializer source{sys, head.data(), head.size()};
    if (source(header)) return false;
    const std::string payload = ReadExactlyBefore(fd, header.payload_len, deadline);
    if (payload.size() != header.payload_len) return false;
    if (header.operation != basp::message_type::direct_message || header.dest_actor != kAsker ||
        header.operation_data != caf::message_id{kRequestId}.response_id().integer_value()) {
      continue;
    }
    std::vector<caf::strong_actor_ptr> stages;
    caf::binary_deserializer body{sys, payload.data(), payload.size()};
    return !body(stages, *reply);
  }
  return false;
}

/// Relays the first connection accepted on a loopback port (port()) to 127.0.0.1:`server_port`,
/// but connects to the server only `delay` after accepting. A BASP server sends its handshake
/// first, so the connecting side hears nothing for `delay`: a server slow to answer (loaded, or
/// busy with TLS). Relays until destroyed (at most 20 s).
class DelayingRelay {
 public:
  DelayingRelay(int server_port, std::chrono::milliseconds delay)
      : listener_(kvmesh::testing::ListenLoopback(&port_)),
        thread_([this, server_port, delay] { Run(server_port, delay); }) {}
  ~DelayingRelay() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }

 private:
  void Run(int server_port, std::chrono::milliseconds delay) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    auto running = [&] { return !stop_ && std::chrono::steady_clock::now() < deadline; };
    int client = -1;
    while (client < 0 && running()) {  // bounded by the deadline
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 50) == 1) client = ::accept(listener_, nullptr, nullptr);
    }
    if (client < 0) return;
    // The delay is the point of this relay (the server's handshake held back), not a wait for
    // something to happen.
    std::this_thread::sleep_for(delay);
    const int server = kvmesh::testing::Connect(server_port);
    char buf[4096];
    while (server >= 0 && running()) {  // bounded by the deadline
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (p[i].revents == 0) continue;
        const ssize_t n = ::recv(p[i].fd, buf, sizeof(buf), 0);
        if (n <= 0) stop_ = true;
        if (n > 0) kvmesh::testing::SendAll(p[1 - i].fd, std::string(buf, static_cast<size_t>(n)));
      }
    }
    if (server >= 0) ::close(server);
    ::close(client);
  }

  int port_ = 0;
  const int listener_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// An actor system for the guarded transport with `peer_timeout` (CAF's heartbeats every third
/// of it, and its connection timeout).
std::unique_ptr<caf::actor_system> NetworkSystem(caf::actor_system_config* cfg,
                                                 caf::timespan peer_timeout) {
  ActorSystemSettings settings;
  settings.network = true;
  settings.worker_threads = 1;
  settings.peer_timeout = peer_timeout;
  EXPECT_TRUE(ConfigureActorSystem(settings, cfg).ok());
  return std::make_unique<caf::actor_system>(*cfg);
}

/// Publishes an actor that answers hello on a guarded port of `sys` (goes to `*port`); stop it
/// with anon_send_exit.
caf::actor PublishAnswerer(caf::actor_system& sys, uint16_t* port) {
  auto answerer = sys.spawn([]() -> caf::behavior {
    return {[](atom::hello, uint32_t version) { return caf::make_message(version, uint64_t{7}); }};
  });
  ListenerLimits limits;
  limits.name = "test port";
  limits.max_message_bytes = 1 << 20;
  std::shared_ptr<ConnectionGuard> guard;
  EXPECT_TRUE(PublishGuarded(sys, caf::actor_cast<caf::strong_actor_ptr>(answerer), {}, "127.0.0.1",
                             0, limits, TransportSecurity{}, port, &guard)
                  .ok());
  return answerer;
}

/// What the connector answers a connect to 127.0.0.1:`port` from `sys`: none (connected) or the
/// error; `*took` is how long it took.
caf::error ConnectThroughConnector(caf::actor_system& sys, int port,
                                   std::chrono::milliseconds* took) {
  const caf::timespan timeout = std::chrono::seconds(10);
  auto connector = SpawnConnector(sys, TransportSecurity{}, 1 << 20, timeout);
  caf::scoped_actor self{sys};
  caf::error result = caf::make_error(caf::sec::request_timeout);
  const auto start = std::chrono::steady_clock::now();
  self->request(connector, timeout + std::chrono::seconds(1), caf::connect_atom_v,
                std::string("127.0.0.1"), static_cast<uint16_t>(port))
      .receive([&](const caf::node_id&, caf::strong_actor_ptr&,
                   const std::set<std::string>&) { result = caf::none; },
               [&](caf::error& err) { result = std::move(err); });
  *took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                start);
  return result;
}

// CAF's BASP broker cleans a closed connection up (its route, its node's proxies, its state) only
// once every message read before the close has been delivered, but the descriptor is closed at
// once, and the next connection accepted reuses its number. CAF names a connection by its
// descriptor, so that late cleanup hit the new connection: a client that disconnected while the
// node was still delivering (a busy node; the fuzz test's attacker) made the next client's
// requests arrive without a sender, never answered. Here the node's one scheduler thread is held,
// so a message read from the first connection stays undelivered while it closes and a second one
// takes its descriptor.
TEST(GuardedTransportTest, AConnectionThatReusesAClosedOnesDescriptorIsServed) {
  caf::actor_system_config cfg;
  ActorSystemSettings settings;
  settings.network = true;
  settings.worker_threads = 1;
  settings.peer_timeout = std::chrono::seconds(30);  // no heartbeat closes a quiet raw peer
  ASSERT_TRUE(ConfigureActorSystem(settings, &cfg).ok());
  caf::actor_system sys{cfg};
  auto answerer = sys.spawn([]() -> caf::behavior {
    return {[](atom::hello, uint32_t version) { return caf::make_message(version, uint64_t{7}); }};
  });
  ListenerLimits limits;
  limits.name = "test port";
  limits.max_message_bytes = 1 << 20;
  uint16_t port = 0;
  std::shared_ptr<ConnectionGuard> guard;
  ASSERT_TRUE(PublishGuarded(sys, caf::actor_cast<caf::strong_actor_ptr>(answerer), {}, "127.0.0.1",
                             0, limits, TransportSecurity{}, &port, &guard)
                  .ok());
  // Holds the scheduler's one thread until released (also when an assertion returns early).
  std::promise<void> holding;
  std::promise<void> release;
  auto hold = sys.spawn([&holding, done = release.get_future().share()]() -> caf::behavior {
    return {[&holding, done](atom::ok) {
      holding.set_value();
      done.wait_for(30s);
    }};
  });
  // Releases the thread and stops both actors (a published actor that is not stopped blocks the
  // system's destructor), also when an assertion returns early.
  struct Cleanup {
    std::promise<void>* release;
    std::vector<caf::actor> actors;
    bool released = false;
    void Release() {
      if (!released) release->set_value();
      released = true;
    }
    ~Cleanup() {
      Release();
      for (auto& actor : actors) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    }
  } cleanup{&release, {answerer, hold}};
  const caf::message request = caf::make_message(atom::hello_v, uint32_t{3});

  // The first connection: a message the node reads but cannot deliver yet, then a message over
  // the size limit, on which the guard closes the connection.
  const int first = Connect(port);
  ASSERT_GE(first, 0);
  int first_server_end = -1;
  ASSERT_TRUE(Eventually(5s, [&] { return (first_server_end = ServerEndOf(first, port)) >= 0; }));
  caf::anon_send(hold, atom::ok_v);
  ASSERT_EQ(holding.get_future().wait_for(5s), std::future_status::ready);
  SendAll(first,
          HandshakeAndMessage(sys, *caf::make_node_id(1001, std::string(40, 'a')), 0, answerer.id(),
                              caf::make_message_id().integer_value(), request) +
              Frame(sys, basp::message_type::direct_message, 0, 0, answerer.id(),
                    std::vector<char>(limits.max_message_bytes + 1)));
  ASSERT_TRUE(kvmesh::testing::WaitClosedByPeer(first, 5s));
  ::close(first);
  ASSERT_TRUE(Eventually(5s, [&] { return ::fcntl(first_server_end, F_GETFD) == -1; }))
      << "the node kept the closed connection's descriptor";

  // The second connection gets the same descriptor on the node's side (the lowest free ones).
  const int second = Connect(port);
  ASSERT_GE(second, 0);
  int second_server_end = -1;
  ASSERT_TRUE(Eventually(5s, [&] { return (second_server_end = ServerEndOf(second, port)) >= 0; }));
  ASSERT_EQ(second_server_end, first_server_end)
      << "the premise: the new connection reuses the closed one's descriptor";
  // A request, read by the node (every byte taken) while the first message is still undelivered.
  SendAll(second, HandshakeAndMessage(sys, *caf::make_node_id(1002, std::string(40, 'b')), kAsker,
                                      answerer.id(), kRequestId, request));
  ASSERT_TRUE(Eventually(
      5s, [&] { return Pending(second, true) == 0 && Pending(second_server_end, false) == 0; }));
  cleanup.Release();

  caf::message reply;
  ASSERT_TRUE(AwaitReply(sys, second, 5s, &reply))
      << "the request on the connection that took over a closed one's descriptor got no answer";
  EXPECT_TRUE((reply.match_elements<uint32_t, uint64_t>())) << to_string(reply);
  ::close(second);
}

// CAF's BASP broker gives a connection it is asked to open (the connector's) a "last seen" time
// of the clock's epoch until its first bytes arrive, and its heartbeat tick closes every
// connection not seen for middleman.connection-timeout (peer_timeout): a tick between the TCP
// connect and the server's handshake failed the connect with connection_timeout (seen under
// load, at a client's or node's first connect). A handshake that comes after a tick, but within
// peer_timeout, must be waited for.
TEST(GuardedTransportTest, AConnectWhoseHandshakeComesAfterAHeartbeatSucceeds) {
  caf::actor_system_config server_cfg;
  auto server = NetworkSystem(&server_cfg, std::chrono::seconds(30));
  uint16_t port = 0;
  auto answerer = PublishAnswerer(*server, &port);
  // Heartbeat ticks every 500 ms: the 750 ms the relay holds the handshake back span one at
  // least, and leave 750 ms to the timeout.
  caf::actor_system_config client_cfg;
  auto client = NetworkSystem(&client_cfg, std::chrono::milliseconds(1500));
  {
    DelayingRelay relay(port, 750ms);
    std::chrono::milliseconds took{0};
    const caf::error err = ConnectThroughConnector(*client, relay.port(), &took);
    EXPECT_FALSE(err) << "the connect failed after " << took.count()
                      << " ms: " << client->render(err);
    if (!err) {
      EXPECT_GE(took.count(), 750) << "the premise: the handshake was held back";
    }
  }
  caf::anon_send_exit(answerer, caf::exit_reason::user_shutdown);
}

// Yet a connection whose server never answers is still closed by the heartbeat check, once it
// has heard nothing for peer_timeout (not at the first tick), well before the connector's own
// timeout (10 s here).
TEST(GuardedTransportTest, AConnectToASilentServerFailsAfterPeerTimeout) {
  caf::actor_system_config client_cfg;
  auto client = NetworkSystem(&client_cfg, std::chrono::milliseconds(900));
  int port = 0;
  const int listener = kvmesh::testing::ListenLoopback(&port);  // the kernel accepts; nothing sends
  std::chrono::milliseconds took{0};
  const caf::error err = ConnectThroughConnector(*client, port, &took);
  ::close(listener);
  EXPECT_EQ(err, caf::sec::connection_timeout) << client->render(err);
  EXPECT_GE(took.count(), 900) << "closed before peer_timeout passed";
  EXPECT_LT(took.count(), 5000) << "the silent connection was not closed";
}

}  // namespace
}  // namespace kvmesh
