// kvmesh's own client port (transport/client_port.hpp), with a stand-in for the gateway that
// records what reaches it, and raw peers that write and read frames byte by byte. The node's
// side of it under real clients is in client_test.cpp, daemon_test.cpp, fuzz_test.cpp and
// tls_test.cpp.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <pthread.h>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "messages/system_config.hpp"
#include "messages/type_ids.hpp"
#include "process_util.hpp"
#include "test_util.hpp"
#include "transport/client_port.hpp"
#include "transport/send_cork.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::Eventually;
using kvmesh::testing::ReadExactlyBefore;
using kvmesh::testing::SendAll;

/// A node's system has CAF's middleman (and so a node id); a client's has none.
struct TestConfig : caf::actor_system_config {
  explicit TestConfig(bool node = true) {
    ActorSystemSettings settings;
    settings.network = node;
    EXPECT_TRUE(ConfigureActorSystem(settings, this).ok());
  }
};

/// Stands for the gateway: records the id of every message the port hands it (on the port's
/// thread, synchronously), and answers each request with `reply`.
class Recorder final : public caf::monitorable_actor {
 public:
  Recorder(caf::actor_config& cfg, caf::message reply)
      : caf::monitorable_actor(cfg), reply_(std::move(reply)) {}

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* ctx) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      seen_.push_back(what->mid);
    }
    if (what->mid.is_request() && what->sender) {
      what->sender->enqueue(ctrl(), what->mid.response_id(), reply_, ctx);
    }
  }

  std::vector<caf::message_id> seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return seen_;
  }

 private:
  caf::message reply_;
  std::mutex mutex_;
  std::vector<caf::message_id> seen_;
};

caf::strong_actor_ptr MakeRecorder(caf::actor_system& system, caf::message reply) {
  caf::actor_config cfg;
  return caf::make_actor<Recorder, caf::strong_actor_ptr>(system.next_actor_id(), system.node(),
                                                          &system, cfg, std::move(reply));
}

Recorder& RecorderOf(const caf::strong_actor_ptr& ptr) {
  return *static_cast<Recorder*>(caf::actor_cast<caf::abstract_actor*>(ptr));
}

/// A client port serving `gateway` (and `shards`), requests of up to `max_message_bytes`.
std::unique_ptr<ClientPort> Serve(caf::actor_system& system, caf::strong_actor_ptr gateway,
                                  size_t max_message_bytes = size_t{1} << 20,
                                  std::vector<caf::strong_actor_ptr> shards = {},
                                  caf::timespan peer_timeout = std::chrono::seconds(3)) {
  ClientPortOptions options;
  options.peer_timeout = peer_timeout;
  options.run_on_port = {"test.naming"};
  options.limits.name = "client port";
  options.limits.max_message_bytes = max_message_bytes;
  options.gateway = std::move(gateway);
  options.shards = std::move(shards);
  options.interface = system.message_types(caf::detail::type_list<gateway_actor>{});
  std::unique_ptr<ClientPort> port;
  Status s = ClientPort::Open(system, std::move(options), &port);
  EXPECT_TRUE(s.ok()) << s;
  return port;
}

// -- raw frames (the wire format at the top of transport/client_port.hpp) -------------------------

void PutLe(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t GetLe(const std::string& in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
  return v;
}

std::string Frame(uint8_t kind, const std::string& body) {
  std::string out;
  PutLe(&out, body.size() + 1, 4);
  out.push_back(static_cast<char>(kind));
  return out + body;
}

/// The first 16 bytes of a hello or welcome: magic, `version`, heartbeat (1 s).
std::string HelloFields(uint32_t version = 1) {
  std::string body;
  PutLe(&body, 0x504d564b, 4);
  PutLe(&body, version, 4);
  PutLe(&body, 1000000000, 8);
  return body;
}

std::string Serialized(caf::actor_system& system, caf::message msg) {
  std::vector<char> buf;
  caf::binary_serializer sink{system, buf};
  EXPECT_FALSE(sink(msg));
  return std::string(buf.begin(), buf.end());
}

/// A welcome of protocol `version` naming gateway 1 of a made-up node.
std::string Welcome(caf::actor_system& system, uint32_t version = 1) {
  caf::node_id::default_data::host_id_type host{};
  host.fill(7);
  caf::node_id node = caf::make_node_id(4242, host);
  std::vector<char> buf;
  caf::binary_serializer sink{system, buf};
  EXPECT_FALSE(sink(node));
  std::string body = HelloFields(version);
  PutLe(&body, 1, 8);
  return Frame(2, body + std::string(buf.begin(), buf.end()));
}

/// A message frame from actor 9 to `receiver`: a request (number `n`) of `payload`.
std::string Request(uint64_t receiver, uint64_t n, const std::string& payload) {
  std::string body;
  PutLe(&body, 9, 8);
  PutLe(&body, receiver, 8);
  PutLe(&body, caf::message_id::default_async_value | n, 8);  // a request: its number set
  return Frame(3, body + payload);
}

/// Reads one frame from `fd` (within 5 s): its kind and body; kind 0 if none came.
std::pair<uint8_t, std::string> ReadFrame(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  const std::string header = ReadExactlyBefore(fd, 5, deadline);
  if (header.size() != 5) return {0, ""};
  const size_t size = GetLe(header, 0, 4);
  return {static_cast<uint8_t>(header[4]), ReadExactlyBefore(fd, size - 1, deadline)};
}

/// A client port serving a Recorder that answers hello as a gateway would, in a node's actor
/// system of its own.
struct RecordedPort {
  TestConfig config;
  caf::actor_system system{config};
  caf::strong_actor_ptr recorder =
      MakeRecorder(system, caf::make_message(uint32_t{kClientProtocolVersion}, uint64_t{7}));
  std::unique_ptr<ClientPort> port = Serve(system, recorder);

  std::tuple<caf::actor_system&, caf::strong_actor_ptr&, std::unique_ptr<ClientPort>&> parts() {
    return {system, recorder, port};
  }
};

/// A raw connection to `port` that has read the node's welcome; -1 (a test failure) if not.
int RawConnect(const ClientPort& port) {
  const int fd = testing::Connect(port.port());
  EXPECT_GE(fd, 0);
  if (fd < 0) return -1;
  EXPECT_EQ(ReadFrame(fd).first, 2) << "no welcome";
  return fd;
}

/// The client library's hello request, serialized.
std::string HelloRequest(caf::actor_system& system) {
  return Serialized(system, caf::make_message(atom::hello_v, uint32_t{kClientProtocolVersion}));
}

/// A client's connection to `port`, in `system`; null (a test failure) if it fails.
std::unique_ptr<PortClient> ConnectClient(caf::actor_system& system, const ClientPort& port,
                                          caf::strong_actor_ptr* gateway,
                                          caf::timespan peer_timeout = 3s) {
  PortConnectOptions options;
  options.max_message_bytes = size_t{1} << 20;
  options.peer_timeout = peer_timeout;
  std::unique_ptr<PortClient> connection;
  Status s = PortClient::Connect(system, "127.0.0.1", port.port(), options, &connection, gateway);
  EXPECT_TRUE(s.ok()) << s;
  return connection;
}

/// A client's actor system of its own and its connection to `port` (null: a test failure).
struct PortClientOf {
  explicit PortClientOf(const ClientPort& port, caf::timespan peer_timeout = 3s)
      : connection(ConnectClient(system, port, &proxy, peer_timeout)) {}
  ~PortClientOf() {
    if (connection) connection->Close();
  }
  TestConfig config{/*node=*/false};
  caf::actor_system system{config};
  caf::strong_actor_ptr proxy;  // the node's gateway
  std::unique_ptr<PortClient> connection;
};

// -- tests --------------------------------------------------------------------------------------

// A client only asks: a response it sends (which CAF would match to a request the gateway has
// pending, by its id alone) is dropped by the port, as is a message of a type the gateway does
// not take, which is answered unexpected_message without being decoded. Requests reach it.
TEST(ClientPortTest, OnlyRequestsOfTheGatewaysInterfaceReachIt) {
  RecordedPort served;
  auto [system, recorder, port] = served.parts();
  ASSERT_TRUE(port);
  PortClientOf client(*port);
  ASSERT_TRUE(client.connection);
  caf::actor_system& client_system = client.system;
  const caf::strong_actor_ptr& gateway = client.proxy;
  caf::scoped_actor self{client_system};

  // A response, as if to the gateway's own request number 5, of a type the gateway takes.
  const caf::message_id forged{caf::message_id::default_async_value |
                               caf::message_id::response_flag_mask | 5};
  ASSERT_TRUE(forged.is_response());
  gateway->enqueue(self->ctrl(), forged, caf::make_message(atom::hello_v, kClientProtocolVersion),
                   nullptr);
  // A request behind it on the same connection: once it is answered, the port has read both.
  uint64_t node = 0;
  self->request(caf::actor_cast<gateway_actor>(gateway), 5s, atom::hello_v, kClientProtocolVersion)
      .receive([&](uint32_t, uint64_t id) { node = id; },
               [&](caf::error& err) { ADD_FAILURE() << ToStatus(err); });
  EXPECT_EQ(node, 7u);
  // Not a request of the gateway's interface: refused, never handed over.
  caf::error foreign;
  self->request(caf::actor_cast<caf::actor>(gateway), 5s, std::string("DROP TABLE"), 42)
      .receive([](const caf::message&) {}, [&](caf::error& err) { foreign = err; });
  EXPECT_EQ(foreign, caf::sec::unexpected_message) << client_system.render(foreign);

  const auto seen = RecorderOf(recorder).seen();
  ASSERT_EQ(seen.size(), 1u) << "the forged response reached the gateway";
  EXPECT_TRUE(seen[0].is_request());
  client.connection->Close();
  port->Close();
}

// Only the gateway (and its shards) can be addressed: a request to any other actor id is
// answered with an error, and the connection stays usable.
TEST(ClientPortTest, ARequestToAnotherActorIsAnsweredWithAnError) {
  RecordedPort served;
  auto [system, recorder, port] = served.parts();
  ASSERT_TRUE(port);
  const int fd = testing::Connect(port->port());
  ASSERT_GE(fd, 0);
  auto [kind, welcome] = ReadFrame(fd);
  ASSERT_EQ(kind, 2) << "no welcome";
  const uint64_t gateway_id = GetLe(welcome, 16, 8);
  EXPECT_EQ(gateway_id, recorder->id());
  const std::string hello = HelloRequest(system);
  SendAll(fd, Frame(1, HelloFields()) + Request(gateway_id + 1000, 1, hello) +
                  Request(gateway_id, 2, hello));
  for (uint64_t n : {1, 2}) {
    auto [reply_kind, reply] = ReadFrame(fd);
    ASSERT_EQ(reply_kind, 3) << "request " << n;
    EXPECT_EQ(GetLe(reply, 8, 8), 9u) << "to the asking actor";
    EXPECT_EQ(GetLe(reply, 16, 8) & 0xffffffff, n);
    caf::message content;
    caf::binary_deserializer source{system, reply.data() + 24, reply.size() - 24};
    ASSERT_FALSE(source(content));
    if (n == 1) {
      ASSERT_TRUE(content.match_elements<caf::error>()) << to_string(content);
      EXPECT_EQ(content.get_as<caf::error>(0), caf::sec::unexpected_message);
    } else {
      EXPECT_TRUE((content.match_elements<uint32_t, uint64_t>())) << to_string(content);
    }
  }
  EXPECT_EQ(RecorderOf(recorder).seen().size(), 1u);
  ::close(fd);
  port->Close();
}

// A client that sends requests and never reads their answers cannot make the node keep them all:
// past 64 MiB of output waiting for it, its connection is closed.
TEST(ClientPortTest, AClientThatReadsNothingIsClosedAtTheOutputBound) {
  TestConfig config;
  caf::actor_system system{config};
  auto recorder = MakeRecorder(system, caf::make_message(std::string(1 << 20, 'r')));
  auto port = Serve(system, recorder);
  ASSERT_TRUE(port);
  const int fd = RawConnect(*port);
  ASSERT_GE(fd, 0);
  const std::string get = Serialized(
      system, caf::make_message(atom::get_v, std::string("/db"), std::string("/k"), Deadline{}));
  std::string requests = Frame(1, HelloFields());
  for (uint64_t n = 1; n <= 100; ++n) requests += Request(recorder->id(), n, get);
  SendAll(fd, requests);  // 100 answers of 1 MiB: more than the bound, read by no one
  EXPECT_TRUE(Eventually(2s, [&] { return port->connections() == 0; }))
      << port->connections() << " connection(s) still open";
  EXPECT_EQ(RecorderOf(recorder).seen().size(), 100u);
  ::close(fd);
  port->Close();
}

/// A stand-in for a node: accepts one connection, sends `welcome`, then reads and drops what
/// comes and sends nothing more, until it is destroyed (or at once, with `then_close`).
class SilentNode {
 public:
  explicit SilentNode(std::string welcome, bool then_close = false) : welcome_(std::move(welcome)) {
    listen_fd_ = testing::ListenLoopback(&port_);
    thread_ = std::thread([this, then_close] {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      SendAll(fd, welcome_);
      char buf[4096];
      while (!stop_ && !then_close) {  // bounded by the destructor
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) > 0 && ::recv(fd, buf, sizeof(buf), 0) <= 0) break;
      }
      ::close(fd);
    });
  }
  ~SilentNode() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }

 private:
  std::string welcome_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A node that falls silent (a stopped process, a cut cable) is noticed within the client's peer
// timeout: the gateway's proxy goes down, which the client library turns into unavailable for
// every request in flight.
TEST(ClientPortTest, ANodeThatFallsSilentIsLostWithinThePeerTimeout) {
  TestConfig config;
  caf::actor_system system{config};
  SilentNode node(Welcome(system));
  PortConnectOptions options;
  options.max_message_bytes = size_t{1} << 20;
  options.peer_timeout = 600ms;
  std::unique_ptr<PortClient> connection;
  caf::strong_actor_ptr gateway;
  Status s = PortClient::Connect(system, "127.0.0.1", node.port(), options, &connection, &gateway);
  ASSERT_TRUE(s.ok()) << s;
  caf::scoped_actor self{system};
  self->monitor(gateway);
  const auto start = std::chrono::steady_clock::now();
  bool down = false;
  self->receive([&](caf::down_msg&) { down = true; }, caf::after(10s) >> [] {});
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(down) << "a silent node went unnoticed for 10 s";
  EXPECT_GE(waited, 500ms) << "lost before the peer timeout";
  EXPECT_LT(waited, 3s);
  EXPECT_FALSE(connection->connected());
}

// A node of another protocol version, or a service that is no kvmesh node, is named as such.
TEST(ClientPortTest, AnotherProtocolVersionGetsAClearError) {
  TestConfig config;
  caf::actor_system system{config};
  PortConnectOptions options;
  options.max_message_bytes = size_t{1} << 20;
  options.connect_timeout = 2s;
  for (const auto& [welcome, expected] : std::vector<std::pair<std::string, std::string>>{
           {Welcome(system, 9), "the node speaks client port version 9, this client 1"},
           {std::string("HTTP/1.1 400 Bad Request\r\n\r\n"), "not a kvmesh client port"}}) {
    SilentNode node(welcome);
    std::unique_ptr<PortClient> connection;
    caf::strong_actor_ptr gateway;
    Status s =
        PortClient::Connect(system, "127.0.0.1", node.port(), options, &connection, &gateway);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(expected), std::string::npos) << s;
  }
}

/// CPU ticks (user and system) the port thread of this process used so far; -1 if none runs.
long PortThreadTicks() {
  DIR* tasks = ::opendir("/proc/self/task");
  long total = -1;
  while (dirent* e = ::readdir(tasks)) {
    if (e->d_name[0] == '.') continue;
    const std::string base = std::string("/proc/self/task/") + e->d_name;
    std::ifstream comm(base + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name != "kvmesh.port") continue;
    std::ifstream stat(base + "/stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream in(line.substr(line.rfind(')') + 2));
    std::string field;
    long ticks = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14 || i == 15) ticks += std::stol(field);
    }
    total = ticks;
  }
  ::closedir(tasks);
  return total;
}

long RssKb() {
  return testing::StatusKb(::getpid(), "VmRSS");
}

/// A gateway that answers hello with `reply`, on a worker thread.
caf::actor ReplyingGateway(caf::actor_system& system, std::string reply) {
  return system.spawn([reply](caf::event_based_actor*) -> caf::behavior {
    return {[reply](atom::hello, uint32_t) { return caf::make_message(reply); }};
  });
}

// CAF files a message by its id's category, whatever it holds: a request whose id said
// "upstream stream message" was read as one, threw, and stopped the node. Such an id (or an
// urgent one, which would jump the gateway's queue) closes the connection; others are served.
TEST(ClientPortTest, AMessageIdOfAnotherCategoryClosesTheConnection) {
  RecordedPort served;
  auto [system, recorder, port] = served.parts();
  ASSERT_TRUE(port);
  const std::string hello = HelloRequest(system);
  for (uint64_t category : {uint64_t{0}, uint64_t{2}, uint64_t{3}}) {
    const int fd = RawConnect(*port);
    ASSERT_GE(fd, 0);
    std::string body;
    PutLe(&body, 9, 8);
    PutLe(&body, recorder->id(), 8);
    PutLe(&body, (category << caf::message_id::category_offset) | 1, 8);
    SendAll(fd, Frame(1, HelloFields()) + Frame(3, body + hello));
    EXPECT_TRUE(testing::WaitClosedByPeer(fd, 5s)) << "category " << category;
    ::close(fd);
  }
  EXPECT_TRUE(RecorderOf(recorder).seen().empty());
  // Still serving.
  const int fd = RawConnect(*port);
  ASSERT_GE(fd, 0);
  SendAll(fd, Frame(1, HelloFields()) + Request(recorder->id(), 1, hello));
  EXPECT_EQ(ReadFrame(fd).first, 3);
  ::close(fd);
  port->Close();
}

// Each sender a client names costs the node a proxy of it (its answers go there). A client
// naming ever new senders (or discarding actors, as the client library does with a caller
// whose request timed out) must not make the node keep them all.
TEST(ClientPortTest, TheProxiesOfAClientsSendersAreBounded) {
  RecordedPort served;
  auto [system, recorder, port] = served.parts();
  ASSERT_TRUE(port);
  const int fd = RawConnect(*port);
  ASSERT_GE(fd, 0);
  const std::string hello = HelloRequest(system);
  SendAll(fd, Frame(1, HelloFields()));
  const long before = RssKb();
  std::string frames;
  for (uint64_t i = 0; i < 300000; ++i) {
    std::string body;
    PutLe(&body, 1000 + i, 8);  // a new sender each time
    PutLe(&body, recorder->id(), 8);
    PutLe(&body, caf::message_id::default_async_value | (1 + i), 8);  // a request...
    frames += Frame(3, body);  // ...of nothing the gateway takes: answered with an error
  }
  // The answers are not read: they wait (about 10 MiB, under the output bound).
  std::thread reader([fd] {
    std::string drained;
    do {  // bounded by the node closing or 10 s of silence
      drained = testing::ReadSome(fd, size_t{1} << 20, 10s);
    } while (!drained.empty());
  });
  SendAll(fd, frames + Request(recorder->id(), 1, hello));
  ASSERT_TRUE(Eventually(30s, [&] { return RecorderOf(recorder).seen().size() == 1; }));
  const long grown_kb = RssKb() - before;
  EXPECT_LT(grown_kb, 40 * 1024) << "300,000 senders cost the node " << grown_kb << " KiB";
  ::shutdown(fd, SHUT_RDWR);
  reader.join();
  ::close(fd);
  port->Close();
}

// A client that keeps a steady backlog of answers to read (well under the output bound) must
// not make the node's output buffer keep every byte it ever sent.
TEST(ClientPortTest, AClientsBacklogDoesNotGrowTheNodesBuffer) {
  TestConfig config;
  caf::actor_system system{config};
  auto gateway = ReplyingGateway(system, std::string(size_t{1} << 20, 'r'));
  auto port = Serve(system, caf::actor_cast<caf::strong_actor_ptr>(gateway));
  ASSERT_TRUE(port);
  const int fd = RawConnect(*port);
  ASSERT_GE(fd, 0);
  const std::string hello = HelloRequest(system);
  SendAll(fd, Frame(1, HelloFields()));
  const long before = RssKb();
  constexpr int kBacklog = 24;
  constexpr int kTotal = 300;
  int sent = 0;
  for (; sent < kBacklog; ++sent) SendAll(fd, Request(gateway.id(), sent + 1, hello));
  for (int got = 0; got < kTotal; ++got) {
    ASSERT_EQ(ReadFrame(fd).first, 3) << "answer " << got;
    if (sent < kTotal) {
      SendAll(fd, Request(gateway.id(), sent + 1, hello));
      ++sent;
    }
  }
  const long grown_kb = RssKb() - before;
  EXPECT_LT(grown_kb, 150 * 1024) << "300 answers of 1 MiB with 24 waiting grew the node by "
                                  << grown_kb << " KiB";
  ::close(fd);
  port->Close();
  caf::anon_send_exit(gateway, caf::exit_reason::kill);
}

// An answer too large for the socket at once is finished by the port thread; after that the
// thread must rest (it once kept asking for writable events and spun a core while idle).
TEST(ClientPortTest, ThePortThreadRestsOnceALargeAnswerIsOut) {
  TestConfig config;
  caf::actor_system system{config};
  auto gateway = ReplyingGateway(system, std::string(size_t{4} << 20, 'r'));
  auto port = Serve(system, caf::actor_cast<caf::strong_actor_ptr>(gateway), size_t{8} << 20);
  ASSERT_TRUE(port);
  const int fd = RawConnect(*port);
  ASSERT_GE(fd, 0);
  const std::string hello = HelloRequest(system);
  SendAll(fd, Frame(1, HelloFields()));
  long most = 0;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    SendAll(fd, Request(gateway.id(), attempt, hello));
    // Read late, so that the worker's write fills the socket and the rest waits for the thread.
    std::this_thread::sleep_for(100ms);
    ASSERT_EQ(ReadFrame(fd).first, 3);
    const long before = PortThreadTicks();
    std::this_thread::sleep_for(500ms);  // what is measured is the thread's CPU over this time
    most = std::max(most, PortThreadTicks() - before);
  }
  EXPECT_LT(most, 10) << "the port thread used " << most << " ticks in 500 ms of idleness";
  ::close(fd);
  port->Close();
  caf::anon_send_exit(gateway, caf::exit_reason::kill);
}

// A client may ask for heartbeats more often than the node's own (a shorter peer timeout): the
// node sends them that often, so an idle connection of such a client stays up.
TEST(ClientPortTest, AClientWithAShortPeerTimeoutStaysConnectedWhileIdle) {
  RecordedPort served;  // the node's peer timeout: 3 s
  auto [system, recorder, port] = served.parts();
  ASSERT_TRUE(port);
  PortClientOf client(*port, 600ms);
  ASSERT_TRUE(client.connection);
  caf::scoped_actor self{client.system};
  self->monitor(client.proxy);
  bool lost = false;
  // Idle for five of the client's peer timeouts.
  self->receive([&](caf::down_msg&) { lost = true; }, caf::after(3s) >> [] {});
  EXPECT_FALSE(lost) << "an idle connection was lost";
  EXPECT_TRUE(client.connection->connected());
  client.connection->Close();
  port->Close();
}

// Whatever the node sends (here messages from 1,100 actors, more than a connection remembers),
// the gateway's proxy stays known to the connection, so that its loss still reaches whoever
// monitors it: the client library fails requests in flight on that down message.
TEST(ClientPortTest, TheGatewaysProxyGoesDownWithTheConnectionWhateverTheNodeSent) {
  TestConfig config;
  caf::actor_system system{config};
  caf::scoped_actor self{system};
  system.registry().put(self->id(), caf::actor_cast<caf::strong_actor_ptr>(self));
  const std::string payload = Serialized(system, caf::make_message(42));
  std::string frames = Welcome(system);
  for (uint64_t sender = 2; sender < 1102; ++sender) {
    std::string body;
    PutLe(&body, sender, 8);
    PutLe(&body, self->id(), 8);
    PutLe(&body, caf::message_id::default_async_value, 8);
    frames += Frame(3, body + payload);
  }
  SilentNode node(frames, /*then_close=*/true);
  PortConnectOptions options;
  options.max_message_bytes = size_t{1} << 20;
  std::unique_ptr<PortClient> connection;
  caf::strong_actor_ptr gateway;
  Status s = PortClient::Connect(system, "127.0.0.1", node.port(), options, &connection, &gateway);
  ASSERT_TRUE(s.ok()) << s;
  self->monitor(gateway);
  bool down = false;
  int delivered = 0;
  for (int i = 0; i < 1200 && !down; ++i) {  // the 1,100 messages, then the down message
    self->receive([&](caf::down_msg&) { down = true; }, [&](int) { ++delivered; },
                  caf::after(5s) >> [&] { i = 1200; });
  }
  EXPECT_EQ(delivered, 1100);
  EXPECT_TRUE(down) << "the gateway's proxy was not killed when the node went away";
}

// -- who runs a request: the port's thread or CAF's workers (InlineRunner) ----------------------

/// Kinds of actor: the port runs the first on its thread (Serve names it), not the other.
struct NamingState {
  static inline const char* name = "test.naming";
};
struct OtherKindState {
  static inline const char* name = "test.other";
};

/// A stand-in for the gateway or a shard, an event-based actor: answers a hello with the name of
/// the thread that ran it. Versions 997, 999 and 998 do work first that takes 20 ms, 300 ms and
/// 1.5 s (a request doing real work; a RocksDB write stall).
template <class State = NamingState>
caf::behavior NamingActor(caf::stateful_actor<State>*) {
  return {
      [](atom::hello, uint32_t version) {
        if (version == 997) std::this_thread::sleep_for(20ms);
        if (version == 999) std::this_thread::sleep_for(300ms);
        if (version == 998) std::this_thread::sleep_for(1500ms);
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof(name));
        return std::string(name);
      },
  };
}

/// The thread name in the next answer read from `fd`; "" if none came within 5 s.
std::string ThreadOfAnswer(caf::actor_system& system, int fd) {
  auto [kind, reply] = ReadFrame(fd);
  if (kind != 3 || reply.size() < 24) return "";
  caf::message content;
  caf::binary_deserializer source{system, reply.data() + 24, reply.size() - 24};
  if (source(content) || !content.match_elements<std::string>()) return "";
  return content.get_as<std::string>(0);
}

/// Sends request number `++*n` of `payload` to `actor` on `fd` until one is answered on the
/// port's thread, within 5 s: a request that finds the actor still starting, or comes while a
/// round that a loaded machine made slow pauses running there, goes to the workers.
bool AnsweredOnThePortsThread(caf::actor_system& system, int fd, caf::actor_id actor, uint64_t* n,
                              const std::string& payload) {
  return Eventually(5s, [&] {
    SendAll(fd, Request(actor, ++*n, payload));
    return ThreadOfAnswer(system, fd) == "kvmesh.port";
  });
}

/// True if `fd` has bytes to read now.
bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

/// Four workers: a slow request on one leaves others free.
struct WorkersConfig : TestConfig {
  WorkersConfig() { set("scheduler.max-threads", size_t{4}); }
};

/// A client port in a node's actor system of its own, serving a NamingActor as the gateway and
/// `Shard` ones as its shards, with peer timeout `peer_timeout`; raw connections from Connect.
/// Closes them and the port, and stops the actors, when it goes.
template <class Shard = NamingState>
struct NamedPort {
  explicit NamedPort(size_t shard_count = 0, caf::timespan peer_timeout = 3s) {
    for (size_t i = 0; i < shard_count; ++i) {
      shards.push_back(caf::actor_cast<caf::strong_actor_ptr>(system.spawn(NamingActor<Shard>)));
    }
    port = Serve(system, gateway, size_t{1} << 20, shards, peer_timeout);
  }
  ~NamedPort() {
    for (int fd : fds) ::close(fd);
    if (port) port->Close();
    caf::anon_send_exit(gateway, caf::exit_reason::user_shutdown);
    for (auto& shard : shards) caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
  }
  /// A raw connection that has read the welcome and sent its hello; -1 (a test failure) if not.
  int Connect() {
    const int fd = RawConnect(*port);
    if (fd >= 0) {
      SendAll(fd, Frame(1, HelloFields()));
      fds.push_back(fd);
    }
    return fd;
  }
  /// The hello request `version` serialized (NamingActor's slow versions).
  std::string Hello(uint32_t version = kClientProtocolVersion) {
    return Serialized(system, caf::make_message(atom::hello_v, version));
  }

  WorkersConfig config;
  caf::actor_system system{config};
  caf::strong_actor_ptr gateway =
      caf::actor_cast<caf::strong_actor_ptr>(system.spawn(NamingActor<>));
  std::vector<caf::strong_actor_ptr> shards;
  std::unique_ptr<ClientPort> port;
  std::vector<int> fds;
};

// A lone request is answered on the port's own thread, with no hand-off to a CAF worker and
// back (which costs more than a small request's work); requests that arrive together go to the
// workers, which use the cores while the port's thread goes on reading.
TEST(ClientPortTest, ALoneRequestIsAnsweredOnThePortsThreadAndABurstByTheWorkers) {
  NamedPort<> served;
  ASSERT_TRUE(served.port);
  const int fd = served.Connect();
  ASSERT_GE(fd, 0);
  const caf::actor_id gateway = served.gateway->id();
  const std::string hello = served.Hello();
  uint64_t n = 0;
  EXPECT_TRUE(AnsweredOnThePortsThread(served.system, fd, gateway, &n, hello))
      << "no lone request was answered on the port's thread";
  const uint64_t first = ++n;
  const uint64_t second = ++n;
  SendAll(fd, Request(gateway, first, hello) + Request(gateway, second, hello));
  EXPECT_EQ(ThreadOfAnswer(served.system, fd), "caf.worker");
  EXPECT_EQ(ThreadOfAnswer(served.system, fd), "caf.worker");
}

// Only the kinds of actor the port is told are quick run on its thread: a lone request to another
// (the node's supervisor, which opens, drops and backs up databases) goes to the workers.
TEST(ClientPortTest, OnlyTheKindsOfActorNamedRunOnThePortsThread) {
  NamedPort<OtherKindState> served(/*shard_count=*/1);
  ASSERT_TRUE(served.port);
  const int fd = served.Connect();
  ASSERT_GE(fd, 0);
  const std::string hello = served.Hello();
  uint64_t n = 0;
  ASSERT_TRUE(AnsweredOnThePortsThread(served.system, fd, served.gateway->id(), &n, hello));
  for (int i = 0; i < 3; ++i) {
    SendAll(fd, Request(served.shards[0]->id(), ++n, hello));
    EXPECT_EQ(ThreadOfAnswer(served.system, fd), "caf.worker");
  }
}

// Work that turns out slow does not hold every connection again: after one slow request on the
// port's thread, the workers take the requests for a while, so a quick request to another actor
// (a shard) is answered while the next slow one is still being worked on.
TEST(ClientPortTest, AfterASlowRequestTheNextDoesNotHoldOtherConnections) {
  NamedPort<> served(/*shard_count=*/1);
  ASSERT_TRUE(served.port);
  const int slow_fd = served.Connect();
  const int quick_fd = served.Connect();
  ASSERT_GE(slow_fd, 0);
  ASSERT_GE(quick_fd, 0);
  const caf::actor_id gateway = served.gateway->id();
  const std::string slow = served.Hello(999);
  uint64_t n = 0;
  ASSERT_TRUE(AnsweredOnThePortsThread(served.system, slow_fd, gateway, &n, slow))
      << "no slow request ran on the port's thread";
  SendAll(slow_fd, Request(gateway, ++n, slow));
  SendAll(quick_fd, Request(served.shards[0]->id(), 1, served.Hello()));
  EXPECT_EQ(ThreadOfAnswer(served.system, quick_fd), "caf.worker");
  EXPECT_FALSE(Readable(slow_fd)) << "the quick request waited for the slow one";
  EXPECT_EQ(ThreadOfAnswer(served.system, slow_fd), "caf.worker");
}

// A request that turns out slow on the port's thread (here 1.5 s, longer than the peer timeouts
// of both sides) costs the other connections nothing: the port's watchdog sends them heartbeats
// meanwhile, and what they sent meanwhile is read before the port judges any of them silent.
TEST(ClientPortTest, ASlowRequestOnThePortsThreadCostsNoOtherConnection) {
  NamedPort<> served(/*shard_count=*/0, /*peer_timeout=*/1s);
  ASSERT_TRUE(served.port);
  // Both sides heartbeat every 333 ms, and give up after 1 s of silence.
  PortClientOf idle(*served.port, 1s);
  ASSERT_TRUE(idle.connection);
  caf::scoped_actor watcher{idle.system};
  watcher->monitor(idle.proxy);
  const int fd = served.Connect();
  ASSERT_GE(fd, 0);
  const caf::actor_id gateway = served.gateway->id();
  const std::string hello = served.Hello();
  const std::string slow = served.Hello(998);
  uint64_t n = 0;
  bool on_port = false;
  // The slow request must be the port thread's: right after a quick one that was.
  for (int attempt = 0; attempt < 3 && !on_port; ++attempt) {
    ASSERT_TRUE(AnsweredOnThePortsThread(served.system, fd, gateway, &n, hello));
    SendAll(fd, Request(gateway, ++n, slow));
    on_port = ThreadOfAnswer(served.system, fd) == "kvmesh.port";
  }
  ASSERT_TRUE(on_port) << "the slow request never ran on the port's thread";
  bool down = false;
  watcher->receive([&](caf::down_msg&) { down = true; }, caf::after(1500ms) >> [] {});
  EXPECT_FALSE(down) << "an idle client lost the node, or the node closed it";
  EXPECT_TRUE(idle.connection->connected());
}

// -- a blocking caller reading its own reply (PortClient::ReadFor) ------------------------------

// A caller doing one request after another reads the replies off the connection itself (no
// hand-off from the reader thread), and a reply that another caller's read delivered before its
// own caller looked is not waited for again.
TEST(ClientPortTest, ACallerReadsItsOwnRepliesAndOneAlreadyReadIsNotWaitedFor) {
  RecordedPort served;
  ASSERT_TRUE(served.port);
  PortClientOf client(*served.port);
  ASSERT_TRUE(client.connection);
  caf::actor_system& client_system = client.system;
  PortClient* connection = client.connection.get();
  auto gateway = caf::actor_cast<gateway_actor>(client.proxy);
  caf::scoped_actor a{client_system};
  caf::scoped_actor b{client_system};
  // One after another: once the reader thread has seen a caller ask, it leaves the connection
  // to callers (PortClient::ReadFor), so most are read by their caller.
  int read_by_caller = 0;
  for (int i = 0; i < 20; ++i) {
    connection->Expect(a->id());
    auto handle = a->request(gateway, 5s, atom::hello_v, kClientProtocolVersion);
    if (connection->ReadFor(a->id(), std::chrono::steady_clock::now() + 5s)) ++read_by_caller;
    handle.receive([](uint32_t, uint64_t) {},
                   [&](caf::error& err) { ADD_FAILURE() << client_system.render(err); });
    connection->DoneWaiting(a->id());
  }
  EXPECT_GE(read_by_caller, 10) << "callers read few of their own replies";
  // b's reply comes first, delivered by whoever reads for a.
  connection->Expect(a->id());
  connection->Expect(b->id());
  auto for_b = b->request(gateway, 5s, atom::hello_v, kClientProtocolVersion);
  auto for_a = a->request(gateway, 5s, atom::hello_v, kClientProtocolVersion);
  connection->ReadFor(a->id(), std::chrono::steady_clock::now() + 5s);
  for_a.receive([](uint32_t, uint64_t) {},
                [&](caf::error& err) { ADD_FAILURE() << client_system.render(err); });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(connection->ReadFor(b->id(), start + 5s)) << "b's reply was not known to have come";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << "b waited for a reply that had come";
  for_b.receive([](uint32_t, uint64_t) {},
                [&](caf::error& err) { ADD_FAILURE() << client_system.render(err); });
  connection->DoneWaiting(a->id());
  connection->DoneWaiting(b->id());
}

// Requests made one at a time, each as soon as the last reply came, find the port's thread still
// polling (no wake-up: common/busy_poll.hpp), and so do the replies that their callers read;
// once requests stop, the port polls no more (its waits, ended by heartbeats and ticks, sleep);
// with polling off (0) every wait sleeps. The bound is so long (2 s: windows of 0.5 s, each cut
// to the time to the port's next tick, ~67 ms) that a slow machine cannot make a request miss
// one; polling that finds the CPU wanted backs off (common/busy_poll.hpp), so on a loaded
// machine few of the 40 may find the other side polling, but some always do.
TEST(ClientPortTest, RequestsOneAtATimeFindBothSidesPollingUnlessItIsOff) {
  for (const bool on : {true, false}) {
    SCOPED_TRACE(on ? "polling on" : "polling off");
    const caf::timespan bound = on ? caf::timespan{2s} : caf::timespan{0};
    TestConfig config;
    caf::actor_system system{config};
    caf::strong_actor_ptr recorder =
        MakeRecorder(system, caf::make_message(uint32_t{kClientProtocolVersion}, uint64_t{7}));
    ClientPortOptions options;
    options.limits.name = "client port";
    options.limits.max_message_bytes = size_t{1} << 20;
    options.gateway = recorder;
    options.interface = system.message_types(caf::detail::type_list<gateway_actor>{});
    options.busy_poll = bound;
    options.peer_timeout = 400ms;  // ticks every ~67 ms (the client's heartbeat: 133 ms)
    std::unique_ptr<ClientPort> port;
    ASSERT_TRUE(ClientPort::Open(system, std::move(options), &port).ok());

    TestConfig client_config{/*node=*/false};
    caf::actor_system client_system{client_config};
    PortConnectOptions connect;
    connect.max_message_bytes = size_t{1} << 20;
    connect.busy_poll = bound;
    std::unique_ptr<PortClient> connection;
    caf::strong_actor_ptr proxy;
    ASSERT_TRUE(
        PortClient::Connect(client_system, "127.0.0.1", port->port(), connect, &connection, &proxy)
            .ok());
    auto gateway = caf::actor_cast<gateway_actor>(proxy);
    const BusyPoll::Stats port_before = port->busy_poll_stats();
    {
      caf::scoped_actor a{client_system};
      for (int i = 0; i < 40; ++i) {
        connection->Expect(a->id());
        auto handle = a->request(gateway, 5s, atom::hello_v, kClientProtocolVersion);
        connection->ReadFor(a->id(), std::chrono::steady_clock::now() + 5s);
        handle.receive([](uint32_t, uint64_t) {},
                       [&](caf::error& err) { ADD_FAILURE() << client_system.render(err); });
        connection->DoneWaiting(a->id());
      }
    }
    const BusyPoll::Stats served = port->busy_poll_stats();
    const BusyPoll::Stats read = connection->busy_poll_stats();
    // Idle: after three more waits have slept, none polls (bounded: ticks come every ~67 ms).
    auto slept_since = [&](uint64_t before) {
      return Eventually(5s, [&] { return port->busy_poll_stats().slept >= before + 3; });
    };
    ASSERT_TRUE(slept_since(served.slept));
    const BusyPoll::Stats idle = port->busy_poll_stats();
    ASSERT_TRUE(slept_since(idle.slept));
    EXPECT_EQ(port->busy_poll_stats().polling_ns, idle.polling_ns) << "it polls while idle";
    EXPECT_EQ(port->busy_poll_stats().found_polling, idle.found_polling);
    connection->Close();
    port->Close();
    const uint64_t found = served.found_polling - port_before.found_polling;
    if (on) {
      EXPECT_GE(found, 2u) << "requests found the port's thread asleep";
      EXPECT_GT(served.polling_ns, 0);
      // Callers read most replies themselves (the reader thread reads the others).
      EXPECT_GE(read.found_polling, 2u) << "replies found their callers asleep";
    } else {
      EXPECT_EQ(found, 0u);
      EXPECT_EQ(served.polling_ns, 0);
      // Each request slept for; the wait that reads the first one may have begun (and been
      // counted) before port_before was read.
      EXPECT_GE(served.slept - port_before.slept, 39u);
      EXPECT_EQ(read.found_polling, 0u);
      EXPECT_EQ(read.polling_ns, 0);
    }
  }
}

// After a caller read its own reply (one the node took a while to make), a reply no caller waits
// for (an asynchronous call's, which the connection actor receives) is read soon, not when the
// reader thread next wakes on its own (half a heartbeat interval).
TEST(ClientPortTest, AReplyNoCallerWaitsForIsReadSoonAfterACallersRead) {
  NamedPort<> served;
  ASSERT_TRUE(served.port);
  PortClientOf client(*served.port);
  ASSERT_TRUE(client.connection);
  caf::actor_system& client_system = client.system;
  PortClient* connection = client.connection.get();
  auto gateway = caf::actor_cast<caf::actor>(client.proxy);
  caf::scoped_actor a{client_system};
  caf::scoped_actor b{client_system};
  int64_t worst_ms = 0;
  int read_by_caller = 0;
  for (int round = 0; round < 5; ++round) {
    // A quick call first: the reader thread, reading for it, then leaves the socket to callers
    // for a while, so the slow one after it is read by its caller.
    for (uint32_t version : {kClientProtocolVersion, uint32_t{997}}) {
      connection->Expect(a->id());
      auto handle = a->request(gateway, 5s, atom::hello_v, version);
      const bool read = connection->ReadFor(a->id(), std::chrono::steady_clock::now() + 5s);
      if (read && version == 997) ++read_by_caller;
      handle.receive([](const std::string&) {},
                     [&](caf::error& err) { ADD_FAILURE() << client_system.render(err); });
      connection->DoneWaiting(a->id());
    }
    const auto start = std::chrono::steady_clock::now();
    b->request(gateway, 5s, atom::hello_v, kClientProtocolVersion)
        .receive([](const std::string&) {},
                 [&](caf::error& err) { ADD_FAILURE() << client_system.render(err); });
    worst_ms = std::max<int64_t>(worst_ms, std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::steady_clock::now() - start)
                                               .count());
  }
  EXPECT_GT(read_by_caller, 0) << "no caller read its own reply: the case is not exercised";
  EXPECT_LT(worst_ms, 150) << "a reply waited for the reader thread's own wake-up";
}

// Callers waiting for replies that never come (reading the connection, or waiting while another
// thread reads) are released promptly when the connection is closed, and when the node falls
// silent for the peer timeout; the gateway's monitors learn of the loss either way.
TEST(ClientPortTest, CallersWaitingToReadAreReleasedWhenTheConnectionEnds) {
  for (bool silence : {false, true}) {
    SCOPED_TRACE(silence ? "the node falls silent" : "the client closes");
    TestConfig config;
    caf::actor_system system{config};
    SilentNode node(Welcome(system));
    PortConnectOptions options;
    options.max_message_bytes = size_t{1} << 20;
    options.peer_timeout = silence ? 600ms : 30s;
    std::unique_ptr<PortClient> connection;
    caf::strong_actor_ptr gateway;
    Status s =
        PortClient::Connect(system, "127.0.0.1", node.port(), options, &connection, &gateway);
    ASSERT_TRUE(s.ok()) << s;
    caf::scoped_actor watcher{system};
    watcher->monitor(gateway);
    // Two callers, each asking again whenever its wait ends (at once, when the other reads),
    // until the connection is gone: the longest single wait is what a caller would see.
    std::atomic<int64_t> longest_ms{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 2; ++c) {
      callers.emplace_back([&] {
        caf::scoped_actor self{system};
        const auto stop = std::chrono::steady_clock::now() + 10s;
        while (connection->connected() && std::chrono::steady_clock::now() < stop) {
          connection->Expect(self->id());
          anon_send(caf::actor_cast<caf::actor>(gateway), atom::hello_v, kClientProtocolVersion);
          const auto start = std::chrono::steady_clock::now();
          connection->ReadFor(self->id(), start + 20s);
          const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count();
          if (ms > longest_ms.load()) longest_ms = ms;
          connection->DoneWaiting(self->id());
          std::this_thread::yield();
        }
      });
    }
    const auto start = std::chrono::steady_clock::now();
    if (!silence) {
      std::this_thread::sleep_for(200ms);  // the callers take turns reading meanwhile
      connection->Close();
    }
    bool down = false;
    watcher->receive([&](caf::down_msg&) { down = true; }, caf::after(10s) >> [] {});
    for (auto& t : callers) t.join();
    EXPECT_TRUE(down);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    EXPECT_LT(longest_ms.load(), 3000) << "a caller kept reading a connection that had ended";
    EXPECT_FALSE(connection->connected());
  }
}

// -- replies held by a SendCork (transport/send_cork.hpp) ---------------------------------------

/// What a test makes a CorkingGateway wait for: each message kind that blocks says it arrived,
/// then waits until the test lets it go on.
struct Latches {
  std::promise<void> entered[2];
  std::promise<void> go_on[2];
  std::shared_future<void> go[2] = {go_on[0].get_future().share(), go_on[1].get_future().share()};
};

/// A gateway that keeps the hello requests it gets and answers them (each with `reply`) when
/// asked: `put` answers the first `held` under its SendCork and the rest without, in order;
/// `batch` answers all through SendCork::Answer, as the client gateway does. `get` says how
/// many it keeps, `commit` flushes the cork, `sync` and `sweep` block (Latches 0 and 1).
struct CorkingState {
  SendCork cork;
  std::vector<caf::response_promise> waiting;
};
caf::behavior CorkingGateway(caf::stateful_actor<CorkingState>* self, std::string reply,
                             Latches* latches) {
  return {
      [self](atom::hello, uint32_t) {
        self->state.waiting.push_back(self->make_response_promise());
        return self->state.waiting.back();
      },
      [self](atom::get) { return self->state.waiting.size(); },
      [self, reply](atom::put, size_t held) {
        std::vector<caf::response_promise> waiting;
        waiting.swap(self->state.waiting);
        for (size_t i = 0; i < waiting.size(); ++i) {
          if (i < held) {
            SendCork::Hold hold(self->state.cork);
            waiting[i].deliver(reply);
          } else {
            waiting[i].deliver(reply);
          }
        }
        return self->state.cork.holding();
      },
      [self, reply](atom::batch) {
        std::vector<caf::response_promise> waiting;
        waiting.swap(self->state.waiting);
        for (auto& promise : waiting) {
          self->state.cork.Answer(
              !self->mailbox().empty(), [&] { promise.deliver(reply); },
              [self] { self->send(self, atom::uncork_v); });
        }
      },
      [self](atom::uncork) { self->state.cork.Uncorked(self->current_sender() == self->ctrl()); },
      [self](atom::commit) { self->state.cork.Flush(); },
      [latches](atom::sync) {
        latches->entered[0].set_value();
        latches->go[0].wait();
      },
      [latches](atom::sweep) {
        latches->entered[1].set_value();
        latches->go[1].wait();
      },
  };
}

/// A raw client of a port serving a CorkingGateway and a shard of the same kind, and a scoped
/// actor to drive them. Heartbeats are 20 s apart: none sends what a cork holds.
struct CorkedPort {
  explicit CorkedPort(std::string reply = "r")
      : gateway(system.spawn(CorkingGateway, reply, &latches)),
        shard(system.spawn(CorkingGateway, reply, &latches)),
        port(Serve(system, caf::actor_cast<caf::strong_actor_ptr>(gateway), size_t{1} << 20,
                   {caf::actor_cast<caf::strong_actor_ptr>(shard)}, 60s)),
        fd(port ? RawConnect(*port) : -1) {
    std::string fields = HelloFields().substr(0, 8);
    PutLe(&fields, uint64_t{30'000'000'000}, 8);  // heartbeats every 30 s
    if (fd >= 0) SendAll(fd, Frame(1, fields));
  }
  ~CorkedPort() {
    for (auto& go : latches.go_on) {
      try {
        go.set_value();
      } catch (const std::future_error&) {
      }
    }
    if (fd >= 0) ::close(fd);
    if (port) port->Close();
    caf::anon_send_exit(gateway, caf::exit_reason::kill);
    caf::anon_send_exit(shard, caf::exit_reason::kill);
  }
  /// Sends `n` requests numbered from `first` to `to` (the gateway by default), and waits until
  /// it keeps them (it keeps none when they come).
  bool Ask(uint64_t first, int n, caf::actor to = {}) {
    if (!to) to = gateway;
    std::string requests;
    for (int i = 0; i < n; ++i) requests += Request(to.id(), first + i, hello);
    SendAll(fd, requests);
    return Eventually(5s, [&] { return Call<size_t>(to, atom::get_v) == static_cast<size_t>(n); });
  }
  /// Has the gateway (or `to`) answer what it keeps, the first `held` under its cork; true if
  /// it holds some.
  bool AnswerHolding(size_t held, caf::actor to = {}) {
    return Call<bool>(to ? to : gateway, atom::put_v, held);
  }
  void Flush(caf::actor to = {}) { Call<void>(to ? to : gateway, atom::commit_v); }
  /// The request number each of the next `n` answers answers (0: none came within 5 s, or not
  /// an answer).
  std::vector<uint64_t> Answers(int n) {
    std::vector<uint64_t> out;
    for (int i = 0; i < n; ++i) {
      auto [kind, body] = ReadFrame(fd);
      out.push_back(kind == 3 && body.size() >= 24
                        ? GetLe(body, 16, 8) & caf::message_id::request_id_mask
                        : 0);
    }
    return out;
  }
  template <class Reply, class... Ts>
  Reply Call(const caf::actor& to, Ts... xs) {
    caf::scoped_actor self{system};
    if constexpr (std::is_void_v<Reply>) {
      self->request(to, 5s, xs...)
          .receive([] {}, [](caf::error& err) { FAIL() << caf::to_string(err); });
    } else {
      Reply out{};
      self->request(to, 5s, xs...)
          .receive([&](Reply& r) { out = r; },
                   [](caf::error& err) { FAIL() << caf::to_string(err); });
      return out;
    }
  }

  Latches latches;  // before the actor system, whose destructor waits for the actors using it
  TestConfig config;
  caf::actor_system system{config};
  caf::actor gateway;
  caf::actor shard;
  std::unique_ptr<ClientPort> port;
  int fd = -1;
  std::string hello = HelloRequest(system);
};

// Replies written under a cork stay on the node (on loopback a send is normally readable when it
// returns) until the cork is flushed, then leave together, in order.
TEST(ClientPortTest, RepliesHeldByACorkLeaveAtItsFlushInOrder) {
  CorkedPort c;
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(c.Ask(1, 3));
  EXPECT_TRUE(c.AnswerHolding(3)) << "the cork lists no connection";
  EXPECT_FALSE(Readable(c.fd)) << "a held reply was sent";
  c.Flush();
  EXPECT_EQ(c.Answers(3), (std::vector<uint64_t>{1, 2, 3}));
  // Once flushed, the cork holds nothing: the next replies go the same way.
  ASSERT_TRUE(c.Ask(4, 2));
  EXPECT_TRUE(c.AnswerHolding(2));
  EXPECT_FALSE(Readable(c.fd));
  c.Flush();
  EXPECT_EQ(c.Answers(2), (std::vector<uint64_t>{4, 5}));
}

// A reply written without the cork sends the ones held before it first: none waits for the
// flush behind it, and the order holds.
TEST(ClientPortTest, AReplyWrittenWithoutTheCorkSendsTheHeldOnesFirst) {
  CorkedPort c;
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(c.Ask(1, 3));
  c.AnswerHolding(2);  // 1 and 2 held, 3 written at once
  EXPECT_EQ(c.Answers(3), (std::vector<uint64_t>{1, 2, 3}));
  c.Flush();  // nothing left: sends nothing
  EXPECT_FALSE(Readable(c.fd));
}

// A connection holds back at most SendCork::kMaxCorkedBytes: a burst of large replies goes out
// as it grows, not all at the end.
TEST(ClientPortTest, ACorkHoldsBackAtMostItsBound) {
  CorkedPort c(std::string(SendCork::kMaxCorkedBytes / 2 + 100, 'r'));
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(c.Ask(1, 3));
  c.AnswerHolding(3);  // the second does not fit beside the first: both leave
  EXPECT_EQ(c.Answers(2), (std::vector<uint64_t>{1, 2}));
  EXPECT_FALSE(Readable(c.fd)) << "the third was not held";
  c.Flush();
  EXPECT_EQ(c.Answers(1), (std::vector<uint64_t>{3}));
}

// Two actors with corks of their own (the gateway and a shard) answer on one connection: a reply
// the shard holds while the gateway's cork lists the connection goes at once, with the ones held
// before it, rather than wait for the gateway's flush.
TEST(ClientPortTest, AReplyHeldUnderAnotherActorsCorkWaitsForNoOneElse) {
  CorkedPort c;
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(c.Ask(1, 1));
  ASSERT_TRUE(c.Ask(2, 1, c.shard));
  EXPECT_TRUE(c.AnswerHolding(1));  // the gateway holds 1
  c.AnswerHolding(1, c.shard);      // 2, under the shard's cork
  EXPECT_EQ(c.Answers(2), (std::vector<uint64_t>{1, 2}));
  c.Flush(c.shard);
  c.Flush();
  EXPECT_FALSE(Readable(c.fd));
}

// SendCork::Answer in an actor, as the gateway answers: with a message waiting behind the
// answering one its replies are held, and the message it sends itself behind that one sends them.
TEST(ClientPortTest, RepliesMadeWhileMessagesWaitLeaveBehindThem) {
  CorkedPort c;
  ASSERT_GE(c.fd, 0);
  ASSERT_TRUE(c.Ask(1, 3));
  // The gateway blocks in `sync` while `batch` and `sweep` queue behind it.
  caf::anon_send(c.gateway, atom::sync_v);
  ASSERT_EQ(c.latches.entered[0].get_future().wait_for(5s), std::future_status::ready);
  caf::anon_send(c.gateway, atom::batch_v);
  caf::anon_send(c.gateway, atom::sweep_v);
  c.latches.go_on[0].set_value();
  // `batch` answered with `sweep` waiting: held. `sweep` now blocks, before the uncork behind it.
  ASSERT_EQ(c.latches.entered[1].get_future().wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(Readable(c.fd)) << "replies made while a message waited were sent at once";
  c.latches.go_on[1].set_value();
  EXPECT_EQ(c.Answers(3), (std::vector<uint64_t>{1, 2, 3})) << "the uncork sent nothing";
}

/// A client's connection to a raw node of the test's: `fd` is the node's end, the client's hello
/// read; heartbeats 20 s apart both ways.
struct RawNodeClient {
  RawNodeClient() {
    int port = 0;
    const int listen_fd = testing::ListenLoopback(&port);
    if (listen_fd < 0) return;
    std::thread node([&] {
      fd = ::accept(listen_fd, nullptr, nullptr);
      if (fd < 0) return;
      const std::string welcome = Welcome(system);
      std::string body = HelloFields().substr(0, 8);
      PutLe(&body, uint64_t{30'000'000'000}, 8);  // heartbeats at most every 30 s
      SendAll(fd, Frame(2, body + welcome.substr(5 + 16)));
    });
    PortConnectOptions options;
    options.max_message_bytes = size_t{1} << 20;
    options.peer_timeout = 60s;
    caf::strong_actor_ptr proxy;
    Status s = PortClient::Connect(system, "127.0.0.1", port, options, &connection, &proxy);
    node.join();
    ::close(listen_fd);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok() || fd < 0) return;
    gateway = caf::actor_cast<caf::actor>(proxy);
    EXPECT_EQ(ReadFrame(fd).first, 1) << "no hello";
  }
  ~RawNodeClient() {
    if (connection) connection->Close();
    if (fd >= 0) ::close(fd);
  }
  bool ok() const { return connection && fd >= 0 && gateway; }
  /// The numbers the next `n` hello requests the node reads carry (0: none came within 5 s).
  std::vector<uint32_t> Hellos(int n) {
    std::vector<uint32_t> out;
    for (int i = 0; i < n; ++i) {
      auto [kind, body] = ReadFrame(fd);
      caf::message content;
      bool read = kind == 3 && body.size() > 24;
      if (read) {
        caf::binary_deserializer source{system, body.data() + 24, body.size() - 24};
        read = !source(content) && content.match_elements<atom::hello, uint32_t>();
      }
      out.push_back(read ? content.get_as<uint32_t>(1) : 0);
    }
    return out;
  }

  TestConfig config;
  caf::actor_system system{config};
  std::unique_ptr<PortClient> connection;
  caf::actor gateway;
  int fd = -1;
};

// A client holds its connection's output the same way (its connection actor does while a commit
// sends the requests waiting for many databases): what it sends under a cork leaves at the flush,
// in order; a write under SendCork::Suspend goes at once, after what was held.
TEST(ClientPortTest, RequestsAClientSendsUnderACorkLeaveAtItsFlush) {
  RawNodeClient c;
  ASSERT_TRUE(c.ok());
  SendCork cork;
  {
    SendCork::Hold hold(cork);
    for (uint32_t i = 1; i <= 3; ++i) caf::anon_send(c.gateway, atom::hello_v, i);
  }
  EXPECT_TRUE(cork.holding());
  EXPECT_FALSE(Readable(c.fd)) << "a request held by the cork was sent";
  cork.Flush();
  EXPECT_EQ(c.Hellos(3), (std::vector<uint32_t>{1, 2, 3}));
  {
    SendCork::Hold hold(cork);
    caf::anon_send(c.gateway, atom::hello_v, uint32_t{4});
    SendCork::Suspend not_held;
    caf::anon_send(c.gateway, atom::hello_v, uint32_t{5});
  }
  EXPECT_EQ(c.Hellos(2), (std::vector<uint32_t>{4, 5})) << "a write under Suspend was held";
  cork.Flush();
  EXPECT_FALSE(Readable(c.fd));
}

// SendCork::Answer's rule, step by step: with nothing waiting an answer goes at once; with
// something waiting it is held and the flush message is asked for once, until Uncorked(true)
// sends what is held.
TEST(ClientPortTest, AnswersAreHeldOnlyWhileMoreWaitsAndOneFlushIsAskedFor) {
  RawNodeClient c;
  ASSERT_TRUE(c.ok());
  SendCork cork;
  int flushes_asked = 0;
  auto answer = [&](bool more_waiting, uint32_t n) {
    cork.Answer(
        more_waiting, [&] { caf::anon_send(c.gateway, atom::hello_v, n); },
        [&] { ++flushes_asked; });
  };
  answer(false, 1);
  EXPECT_TRUE(Readable(c.fd)) << "held with nothing waiting";
  EXPECT_EQ(c.Hellos(1), (std::vector<uint32_t>{1}));
  answer(true, 2);
  answer(true, 3);
  EXPECT_FALSE(Readable(c.fd)) << "sent with more waiting";
  EXPECT_EQ(flushes_asked, 1);
  cork.Uncorked(/*own=*/true);
  EXPECT_EQ(c.Hellos(2), (std::vector<uint32_t>{2, 3}));
  answer(true, 4);
  EXPECT_EQ(flushes_asked, 2) << "no flush asked for after the last one arrived";
  answer(false, 5);  // the last of the burst sends the held ones first
  EXPECT_EQ(c.Hellos(2), (std::vector<uint32_t>{4, 5}));
}

}  // namespace
}  // namespace kvmesh
