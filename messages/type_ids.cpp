#include "messages/type_ids.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/sec.hpp>

#include <cstring>

namespace kvmesh {
namespace {

const caf::atom_value kCategory = caf::atom("kvmesh");

/// A length as binary_deserializer::begin_sequence reads it: 7 bits a byte, low first, while the
/// top bit is set, into 32 bits (a fifth byte's high bits are dropped, as there).
bool ReadVarbyte(const uint8_t*& at, const uint8_t* end, size_t* out) {
  uint32_t x = 0;
  for (int n = 0; n < 5; ++n) {
    if (at == end) return false;
    const uint8_t low7 = *at++;
    x |= static_cast<uint32_t>(low7 & 0x7F) << (7 * n);
    if ((low7 & 0x80) == 0) {
      *out = x;
      return true;
    }
  }
  return false;  // CAF would shift past 32 bits: no length a sender of ours writes
}

bool ReadString(const uint8_t*& at, const uint8_t* end, std::string* out) {
  size_t size = 0;
  if (!ReadVarbyte(at, end, &size) || static_cast<size_t>(end - at) < size) return false;
  out->assign(reinterpret_cast<const char*>(at), size);
  at += size;
  return true;
}

/// A length as binary_serializer::begin_sequence writes it (ReadVarbyte's format; CAF keeps the
/// low 32 bits).
char* WriteVarbyte(size_t size, char* out) {
  auto x = static_cast<uint32_t>(size);
  while (x > 0x7f) {
    *out++ = static_cast<char>((x & 0x7f) | 0x80);
    x >>= 7;
  }
  *out++ = static_cast<char>(x);
  return out;
}

size_t VarbyteSize(size_t size) {
  auto x = static_cast<uint32_t>(size);
  size_t n = 1;
  for (; x > 0x7f; x >>= 7) ++n;
  return n;
}

}  // namespace

void SaveWriteOps(caf::binary_serializer& out, const std::vector<WriteOp>& ops) {
  size_t bytes = VarbyteSize(ops.size());
  for (const WriteOp& op : ops) {
    bytes += 1 + VarbyteSize(op.key.size()) + op.key.size() + VarbyteSize(op.value.size()) +
             op.value.size() + 8;
  }
  // Room made at the write position (past the end: the buffer grows once), then filled.
  const size_t at = out.write_pos();
  out.skip(bytes);
  char* p = out.buf().data() + at;
  p = WriteVarbyte(ops.size(), p);
  for (const WriteOp& op : ops) {
    *p++ = static_cast<char>(op.kind);
    p = WriteVarbyte(op.key.size(), p);
    std::memcpy(p, op.key.data(), op.key.size());
    p += op.key.size();
    p = WriteVarbyte(op.value.size(), p);
    std::memcpy(p, op.value.data(), op.value.size());
    p += op.value.size();
    for (int shift = 56; shift >= 0; shift -= 8) *p++ = static_cast<char>(op.ttl_ms >> shift);
  }
}

bool ReadWriteOp(caf::binary_deserializer& in, WriteOp& op) {
  const caf::span<const caf::byte> bytes = in.remainder();
  const auto* start = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t* end = start + bytes.size();
  const uint8_t* at = start;
  if (at == end) return false;
  op.kind = static_cast<WriteOp::Kind>(*at++);
  if (!ReadString(at, end, &op.key) || !ReadString(at, end, &op.value)) return false;
  if (end - at < 8) return false;
  uint64_t ttl = 0;
  for (int i = 0; i < 8; ++i) ttl = ttl << 8 | at[i];  // network order
  op.ttl_ms = ttl;
  at += 8;
  in.skip(static_cast<size_t>(at - start));
  return true;
}

caf::error ToError(const Status& status) {
  if (status.ok()) return caf::error{};
  return caf::error{static_cast<uint8_t>(status.code()), kCategory,
                    caf::make_message(status.message())};
}

Status ToStatus(const caf::error& error) {
  if (!error) return Status::OK();
  if (error.category() == kCategory) {
    std::string message;
    const caf::message& ctx = error.context();
    if (ctx.match_elements<std::string>()) message = ctx.get_as<std::string>(0);
    return Status(static_cast<Code>(error.code()), std::move(message));
  }
  if (error == caf::sec::request_timeout) return Status::Timeout("the request timed out");
  if (error == caf::sec::request_receiver_down || error.category() == caf::atom("exit")) {
    return Status::Unavailable("the actor serving the request is gone (" + to_string(error) + ")");
  }
  // Connection-level failures: the node cannot be reached (now).
  for (caf::sec code : {caf::sec::cannot_connect_to_node, caf::sec::disconnect_during_handshake,
                        caf::sec::no_route_to_receiving_node, caf::sec::connection_timeout,
                        caf::sec::socket_disconnected, caf::sec::remote_lookup_failed,
                        caf::sec::network_syscall_failed}) {
    if (error == code) return Status::Unavailable("connection failed: " + to_string(error));
  }
  return Status::Internal(to_string(error));
}

void RegisterMessageTypes(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::kvmesh>();
  cfg.add_error_category(kCategory, [](uint8_t code, caf::atom_value, const caf::message& ctx) {
    std::string message;
    if (ctx.match_elements<std::string>()) message = ctx.get_as<std::string>(0);
    return "kvmesh: " + Status(static_cast<Code>(code), std::move(message)).ToString();
  });
}

}  // namespace kvmesh
