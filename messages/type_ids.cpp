#include "messages/type_ids.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/sec.hpp>

namespace kvmesh {
namespace {

const caf::atom_value kCategory = caf::atom("kvmesh");

}  // namespace

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
