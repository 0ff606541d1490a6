// Every type that crosses a node boundary survives CAF's serializer. An unregistered type does
// not fail loudly across nodes (the receiver just sees an unexpected message), so this is checked
// here, type by type.
#include <gtest/gtest.h>

#include <random>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "actor_test_util.hpp"
#include "messages/cluster.pb.h"
#include "messages/remote_exits.hpp"

namespace kvmesh {
namespace {

class MessagesTest : public ::testing::Test {
 protected:
  MessagesTest() : system_(config_) {}

  // Serializes `value` inside a message and reads it back.
  template <class T>
  T RoundTrip(const T& value) {
    std::vector<char> buffer;
    caf::binary_serializer sink{system_, buffer};
    caf::message out = caf::make_message(value);
    EXPECT_FALSE(sink(out)) << "cannot serialize " << typeid(T).name();
    EXPECT_FALSE(buffer.empty()) << typeid(T).name() << " is not registered";
    caf::message in;
    caf::binary_deserializer source{system_, buffer};
    EXPECT_FALSE(source(in));
    if (!in.match_elements<T>()) {
      ADD_FAILURE() << typeid(T).name() << " did not come back";
      return T{};
    }
    return in.get_as<T>(0);
  }

  kvmesh::testing::TestSystemConfig config_;
  caf::actor_system system_;
};

TEST_F(MessagesTest, EveryWireTypeRoundTrips) {
  WriteBatch batch;
  batch.Put(std::string("/k\0", 3), std::string("\xff\0", 2)).Erase("/gone");
  WriteBatch batch_back = RoundTrip(batch);
  ASSERT_EQ(batch_back.ops.size(), 2u);
  EXPECT_EQ(batch_back.ops[0].key, std::string("/k\0", 3));
  EXPECT_EQ(batch_back.ops[0].value, std::string("\xff\0", 2));
  EXPECT_EQ(batch_back.ops[1].kind, WriteOp::Kind::kErase);
  WriteBatch conditional;
  conditional.Check("/c", "1-2-3").Put("/c", "v", 30000);
  WriteBatch conditional_back = RoundTrip(conditional);
  ASSERT_EQ(conditional_back.ops.size(), 2u);
  EXPECT_EQ(conditional_back.ops[0].kind, WriteOp::Kind::kCheck);
  EXPECT_EQ(conditional_back.ops[0].value, "1-2-3");
  EXPECT_EQ(conditional_back.ops[1].ttl_ms, 30000u);
  // A shared batch crosses nodes as its batch and arrives as one of its own (nothing shared:
  // an empty one).
  const SharedWriteBatch shared{std::make_shared<const WriteBatch>(batch)};
  const SharedWriteBatch shared_back = RoundTrip(shared);
  ASSERT_NE(shared_back.batch, nullptr);
  EXPECT_NE(shared_back.batch, shared.batch);
  ASSERT_EQ(shared_back.batch->ops.size(), 2u);
  EXPECT_EQ(shared_back.batch->ops[0].value, std::string("\xff\0", 2));
  ASSERT_NE(RoundTrip(SharedWriteBatch{}).batch, nullptr);
  EXPECT_TRUE(RoundTrip(SharedWriteBatch{}).batch->ops.empty());
  const SharedWriteBatches several{
      std::make_shared<const std::vector<WriteBatch>>(std::vector<WriteBatch>{conditional, batch})};
  const SharedWriteBatches several_back = RoundTrip(several);
  ASSERT_NE(several_back.batches, nullptr);
  ASSERT_EQ(several_back.batches->size(), 2u);
  EXPECT_EQ(several_back.batches->at(0).ops[1].ttl_ms, 30000u);
  EXPECT_EQ(several_back.batches->at(1).ops[1].key, "/gone");

  ListOptions options{"/p", "/p/3", 7, true};
  ListOptions options_back = RoundTrip(options);
  EXPECT_EQ(options_back.start_after, "/p/3");
  EXPECT_EQ(options_back.limit, 7u);
  EXPECT_TRUE(options_back.with_values);
  options.with_versions = true;
  EXPECT_TRUE(RoundTrip(options).with_versions);
  options.start = "/p/1";
  options.end = "/p/9";
  options.reverse = true;
  options_back = RoundTrip(options);
  EXPECT_EQ(options_back.start, "/p/1");
  EXPECT_EQ(options_back.end, "/p/9");
  EXPECT_TRUE(options_back.reverse);

  ListPage page{{"/a", "/b"}, {"1", "2"}, "/b", {"v1", "v2"}};
  EXPECT_EQ(RoundTrip(page).next_token, "/b");
  EXPECT_EQ(RoundTrip(page).versions, page.versions);
  DatabaseStats stats{"/db", "cfg", 3, 4, 5, 6};
  EXPECT_EQ(RoundTrip(stats).limit_bytes, 6u);
  std::vector<DatabaseInfo> infos{{"/db", "cfg", 3, 99}};
  EXPECT_EQ(RoundTrip(infos).at(0).created_ms, 99u);
  std::vector<ConfigInfo> configs{{"id", "d", {"t1", "t2"}, "/m/*", "wildcard", 1, 3, 42, "f:1"}};
  auto configs_back = RoundTrip(configs);
  ASSERT_EQ(configs_back.size(), 1u);
  EXPECT_EQ(configs_back[0].tags, (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(configs_back[0].replication_max, 3u);
  // Actor handles travel too (the gateway hands none out today, but its interface must be known).
  ReplicationStatus status;
  status.path = "/p";
  status.replicas = {1, 2};
  status.entries_applied = 7;
  status.peers.push_back(PeerReplicaStatus{2, true, "{2:3}", 3, 1});
  auto status_back = RoundTrip(status);
  EXPECT_EQ(status_back.replicas, status.replicas);
  EXPECT_EQ(status_back.entries_applied, 7u);
  EXPECT_EQ(status_back.peers.at(0).version_vector, "{2:3}");
  const MemberStatus member_back = RoundTrip(std::vector<MemberStatus>{MemberStatus{
                                                 5, "h:1", 2, true, false, 9, "always", true, 7}})
                                       .at(0);
  EXPECT_EQ(member_back.silent_ms, 9u);
  EXPECT_EQ(member_back.sync, "always");
  EXPECT_TRUE(member_back.low_space);
  EXPECT_EQ(member_back.free_disk_bytes, 7u);
  EXPECT_EQ(RoundTrip(ReplicaSet{{1, 2}, {2}, 2, 2, 3}).unreachable, std::vector<uint64_t>{2});
  RoundTrip(peer_actor{});
  RoundTrip(gateway_actor{});
  RoundTrip(database_peer_actor{});  // the slice that crosses nodes
  RoundTrip(database_actor{});
  RoundTrip(matcher_supervisor_actor{});
}

TEST_F(MessagesTest, StatusSurvivesAsAnError) {
  Status original = Status::SizeLimitExceeded("database \"/x\" is full");
  caf::error err = ToError(original);
  std::vector<char> buffer;
  caf::binary_serializer sink{system_, buffer};
  ASSERT_FALSE(sink(err));
  caf::error back;
  caf::binary_deserializer source{system_, buffer};
  ASSERT_FALSE(source(back));
  EXPECT_EQ(ToStatus(back), original);
  EXPECT_EQ(system_.render(back), "kvmesh: size_limit_exceeded: database \"/x\" is full");
  EXPECT_EQ(ToStatus(caf::make_error(caf::sec::request_timeout)).code(), Code::kTimeout);
  EXPECT_EQ(ToStatus(caf::make_error(caf::sec::request_receiver_down)).code(), Code::kUnavailable);
  EXPECT_EQ(ToStatus(caf::make_error(caf::sec::cannot_connect_to_node)).code(), Code::kUnavailable);
  EXPECT_EQ(Result<int>(Status::OK()).status().code(), Code::kInternal);
}

// A write batch is decoded by CAF before any check of ours runs, so the operations it keeps while
// decoding are bounded: one past kMaxBatchOps (so every receiver refuses it as over the limit,
// FuzzTest.MalformedClientMessages), not the ~160 bytes of memory per 11 on the wire that each
// further operation would cost.
TEST_F(MessagesTest, AWriteBatchKeepsAtMostOneOperationPastTheLimitWhileDecoding) {
  auto decode = [&](size_t ops) {
    WriteBatch batch;
    for (size_t i = 0; i < ops; ++i) batch.Erase("/k/" + std::to_string(i));
    std::vector<char> buffer;
    caf::binary_serializer sink{system_, buffer};
    caf::message out = caf::make_message(batch);
    EXPECT_FALSE(sink(out));
    caf::message in;
    caf::binary_deserializer source{system_, buffer};
    EXPECT_FALSE(source(in));
    EXPECT_TRUE(in.match_elements<WriteBatch>()) << "no batch came back";
    return in.match_elements<WriteBatch>() ? in.get_as<WriteBatch>(0) : WriteBatch{};
  };
  EXPECT_EQ(decode(kMaxBatchOps).ops.size(), kMaxBatchOps);
  WriteBatch over = decode(kMaxBatchOps + 5000);
  ASSERT_EQ(over.ops.size(), kMaxBatchOps + 1);
  EXPECT_EQ(over.ops.front().key, "/k/0");
  EXPECT_EQ(over.ops.back().key, "/k/" + std::to_string(kMaxBatchOps));
  // A shared batch is decoded as its batch, within the same bound.
  auto many = std::make_shared<WriteBatch>();
  for (size_t i = 0; i < kMaxBatchOps + 5000; ++i) many->Erase("/k/" + std::to_string(i));
  std::vector<char> buffer;
  caf::binary_serializer sink{system_, buffer};
  ASSERT_FALSE(sink(caf::make_message(SharedWriteBatch{many})));
  caf::message in;
  caf::binary_deserializer source{system_, buffer};
  ASSERT_FALSE(source(in));
  ASSERT_TRUE(in.match_elements<SharedWriteBatch>());
  const SharedWriteBatch& shared = in.get_as<SharedWriteBatch>(0);
  ASSERT_NE(shared.batch, nullptr);
  EXPECT_EQ(shared.batch->ops.size(), kMaxBatchOps + 1);
}

// The operations' vector is sized once from the count a batch announces, but never beyond what
// the bytes that follow could hold: a batch that claims the limit in a few bytes gets a few
// operations' worth of memory, not the limit's.
TEST_F(MessagesTest, AWriteBatchsCountReservesNoMoreThanItsBytesCouldHold) {
  {
    std::vector<char> buffer;
    caf::binary_serializer sink{system_, buffer};
    WriteOp empty;
    ASSERT_FALSE(sink(empty));
    EXPECT_EQ(buffer.size(), kMinWriteOpBytes) << "the smallest operation on the wire";
  }
  std::vector<char> buffer;
  caf::binary_serializer sink{system_, buffer};
  size_t claimed = kMaxBatchOps;
  ASSERT_FALSE(sink.begin_sequence(claimed));
  for (int i = 0; i < 3; ++i) {
    WriteOp op;
    op.key = "/k";
    ASSERT_FALSE(sink(op));
  }
  caf::binary_deserializer source{system_, buffer};
  std::vector<WriteOp> ops;
  EXPECT_TRUE(LoadWriteOps(static_cast<caf::deserializer&>(source), ops)) << "it ends early";
  EXPECT_EQ(ops.size(), 4u) << "three read, the fourth failed";
  // Room for what the bytes could hold (3), doubled once by the fourth: not the 100,000 claimed.
  EXPECT_LE(ops.capacity(), 2 * (buffer.size() / kMinWriteOpBytes));
  // An honest batch: sized once.
  WriteBatch batch;
  for (int i = 0; i < 1000; ++i) batch.Put("/k/" + std::to_string(i), "v");
  std::vector<char> honest;
  caf::binary_serializer honest_sink{system_, honest};
  ASSERT_FALSE(honest_sink(batch.ops));
  caf::binary_deserializer honest_source{system_, honest};
  std::vector<WriteOp> read;
  ASSERT_FALSE(LoadWriteOps(static_cast<caf::deserializer&>(honest_source), read));
  EXPECT_EQ(read.size(), 1000u);
  EXPECT_LT(read.capacity(), 1024u) << "sized once, not by doubling";
}

// One operation of every kind byte, keys and values of lengths on both sides of the first two
// varbyte steps (127/128, 16383/16384) and empty, ttls using all 8 bytes; `seed` picks them.
std::vector<WriteOp> EveryKindOfOperation(uint64_t seed) {
  std::mt19937_64 random(seed);
  const size_t sizes[] = {0, 1, 127, 128, 129, 16383, 16384, 70000};
  std::vector<WriteOp> ops;
  for (int kind = 0; kind < 256; ++kind) {
    WriteOp op;
    op.kind = static_cast<WriteOp::Kind>(kind);
    op.key = std::string(sizes[random() % 8], static_cast<char>(random()));
    op.value = std::string(sizes[random() % 8], static_cast<char>(random()));
    op.ttl_ms = kind % 3 == 0 ? 0 : random();
    ops.push_back(std::move(op));
  }
  return ops;
}

// ReadWriteOp reads CAF's binary format directly; what it reads must be what CAF's own decoding
// of the same bytes gives (the inspector, field by field), with the read position after it in the
// same place: every kind byte, lengths on both sides of each varbyte step (127/128, 16383/16384),
// empty strings, ttls using all 8 bytes. Cut short anywhere, or given a length that does not end
// within 5 bytes, it fails and leaves the position where it was.
TEST_F(MessagesTest, AnOperationReadDirectlyIsWhatCafDecodes) {
  std::vector<WriteOp> ops = EveryKindOfOperation(17);
  std::vector<char> buffer;
  caf::binary_serializer sink{system_, buffer};
  for (WriteOp& op : ops) ASSERT_FALSE(sink(op));
  caf::binary_deserializer direct{system_, buffer};
  caf::binary_deserializer by_caf{system_, buffer};
  for (size_t i = 0; i < ops.size(); ++i) {
    WriteOp a;
    WriteOp b;
    ASSERT_TRUE(ReadWriteOp(direct, a)) << i;
    ASSERT_FALSE(by_caf(b)) << i;
    EXPECT_EQ(static_cast<int>(a.kind), static_cast<int>(b.kind)) << i;
    EXPECT_EQ(a.key, b.key) << i;
    EXPECT_EQ(a.value, b.value) << i;
    EXPECT_EQ(a.ttl_ms, b.ttl_ms) << i;
    EXPECT_EQ(static_cast<int>(a.kind), static_cast<int>(ops[i].kind)) << i;
    EXPECT_EQ(a.key, ops[i].key) << i;
    EXPECT_EQ(a.ttl_ms, ops[i].ttl_ms) << i;
    ASSERT_EQ(direct.remaining(), by_caf.remaining()) << i;
  }
  EXPECT_EQ(direct.remaining(), 0u);
  // One operation, cut short at every length.
  std::vector<char> one;
  caf::binary_serializer one_sink{system_, one};
  WriteOp op{WriteOp::Kind::kPut, std::string(200, 'k'), std::string(300, 'v'), 12345};
  ASSERT_FALSE(one_sink(op));
  for (size_t cut = 0; cut < one.size(); ++cut) {
    caf::binary_deserializer source{system_, one.data(), cut};
    WriteOp read;
    EXPECT_FALSE(ReadWriteOp(source, read)) << cut;
    EXPECT_EQ(source.remaining(), cut) << cut;
  }
  // A key length that never ends within 32 bits.
  std::vector<char> endless = {0, '\xff', '\xff', '\xff', '\xff', '\xff', '\x01'};
  endless.resize(100, 'x');
  caf::binary_deserializer source{system_, endless};
  WriteOp read;
  EXPECT_FALSE(ReadWriteOp(source, read));
  EXPECT_EQ(source.remaining(), endless.size());
}

// SaveWriteOps writes a batch's operations straight into a binary serializer's buffer; the bytes
// must be CAF's own for the same operations (the vector through the inspector, operation by
// operation), with what comes before and after in the same message in place, and must read back
// as the same batch.
TEST_F(MessagesTest, ABatchWrittenDirectlyIsWhatCafWrites) {
  WriteBatch batch;
  batch.ops = EveryKindOfOperation(23);
  for (size_t count : {size_t{0}, size_t{1}, size_t{200}, batch.ops.size()}) {
    WriteBatch part;
    part.ops.assign(batch.ops.begin(), batch.ops.begin() + static_cast<std::ptrdiff_t>(count));
    std::string before = "before";
    std::string after = "after";
    std::vector<char> direct;
    caf::binary_serializer direct_sink{system_, direct};
    ASSERT_FALSE(direct_sink(before, part, after));
    std::vector<char> by_caf;
    caf::binary_serializer caf_sink{system_, by_caf};
    ASSERT_FALSE(caf_sink(before, part.ops, after));
    EXPECT_EQ(direct, by_caf) << count << " operations";
    caf::binary_deserializer source{system_, direct};
    std::string read_before;
    WriteBatch read;
    std::string read_after;
    ASSERT_FALSE(source(read_before, read, read_after)) << count;
    EXPECT_EQ(read_before, before);
    EXPECT_EQ(read_after, after);
    ASSERT_EQ(read.ops.size(), count);
    for (size_t i = 0; i < count; ++i) {
      EXPECT_EQ(static_cast<int>(read.ops[i].kind), static_cast<int>(part.ops[i].kind)) << i;
      EXPECT_EQ(read.ops[i].key, part.ops[i].key) << i;
      EXPECT_EQ(read.ops[i].value, part.ops[i].value) << i;
      EXPECT_EQ(read.ops[i].ttl_ms, part.ops[i].ttl_ms) << i;
    }
  }
}

// The exit filter's rule inside one process (over the network: FuzzTest.ExitsFromAPeerStopNoActor):
// an exit is honoured only from a local actor that no peer can name. Anonymous exits, and exits
// from a local actor in the actor registry (any actor whose handle crossed the network; a routed
// BASP message can name it as its sender), are dropped.
TEST(RemoteExitFilterTest, OnlyLocalActorsNoPeerCanNameStopAFilteredActor) {
  caf::actor_system_config cfg;
  caf::actor_system system{cfg};
  auto target = SpawnNetworkFacing(
      system, [](caf::event_based_actor*) -> caf::behavior { return {[](int x) { return x; }}; });
  caf::scoped_actor named{system};
  // As if its handle had crossed the network.
  system.registry().put(named->id(), caf::actor_cast<caf::strong_actor_ptr>(named));
  named->send_exit(target, caf::exit_reason::kill);
  caf::anon_send_exit(target, caf::exit_reason::kill);
  caf::anon_send(target, caf::exit_msg{target.address(), caf::exit_reason::kill});
  bool answered = false;
  named->request(target, std::chrono::seconds(5), 7)
      .receive([&](int x) { answered = x == 7; },
               [&](caf::error& err) { ADD_FAILURE() << "target stopped: " << to_string(err); });
  EXPECT_TRUE(answered);
  system.registry().erase(named->id());
  // A local actor no peer can name stops it (the node's own shutdown does this).
  caf::scoped_actor watcher{system};
  watcher->monitor(target);
  StopLocally(system, target, caf::exit_reason::kill);
  bool down = false;
  watcher->receive([&](caf::down_msg& msg) { down = msg.reason == caf::exit_reason::kill; },
                   caf::after(std::chrono::seconds(5)) >> [] {});
  EXPECT_TRUE(down) << "a local exit did not stop the filtered actor";
}

// Found in review: node summaries carried database paths in proto3 `string` fields, which
// protobuf refuses to parse unless they are UTF-8; a path may hold any byte but control
// characters, so one such database stopped anti-entropy with that peer for good.
TEST(NodeSummaryWireTest, PathsWithAnyByteRoundTrip) {
  const std::string path("/users/\xff\xfe/x", 11);
  proto::NodeSummaryRequest request;
  request.set_page(true);
  request.set_after(path);
  request.set_until(path + "z");
  proto::SummaryEntry* entry = request.add_entries();
  entry->set_path(path);
  entry->set_digest(7);
  proto::NodeSummaryRequest request_back;
  ASSERT_TRUE(request_back.ParseFromString(request.SerializeAsString()));
  EXPECT_EQ(request_back.entries(0).path(), path);
  EXPECT_EQ(request_back.after(), path);
  proto::NodeSummaryReply reply;
  reply.add_differ(path);
  reply.set_compared_until(path);
  proto::NodeSummaryReply reply_back;
  ASSERT_TRUE(reply_back.ParseFromString(reply.SerializeAsString()));
  EXPECT_EQ(reply_back.differ(0), path);
  EXPECT_EQ(reply_back.compared_until(), path);
}

}  // namespace
}  // namespace kvmesh
