#include "actors/database_actor.hpp"

#include <caf/all.hpp>

namespace kvmesh {

database_actor::behavior_type database_actor_impl(
    database_actor::stateful_pointer<database_state> self,
    std::shared_ptr<storage::DatabaseStore> store, matcher_supervisor_actor supervisor,
    caf::timespan idle_timeout) {
  self->state.store = std::move(store);
  if (idle_timeout.count() > 0) self->delayed_send(self, idle_timeout, atom::tick_v);
  // Runs a storage call and turns its Status into the reply or a "kvmesh" error.
  auto serve = [self](auto&& call) -> Status {
    ++self->state.requests_since_tick;
    return call(*self->state.store);
  };
  return {
      [=](atom::put, const std::string& key, const std::string& value) -> caf::result<atom::ok> {
        Status s = serve([&](storage::DatabaseStore& db) { return db.Put(key, value); });
        if (!s.ok()) return ToError(s);
        return atom::ok_v;
      },
      [=](atom::get, const std::string& key) -> caf::result<std::string> {
        std::string value;
        Status s = serve([&](storage::DatabaseStore& db) { return db.Get(key, &value); });
        if (!s.ok()) return ToError(s);
        return value;
      },
      [=](atom::erase, const std::string& key) -> caf::result<atom::ok> {
        Status s = serve([&](storage::DatabaseStore& db) { return db.Erase(key); });
        if (!s.ok()) return ToError(s);
        return atom::ok_v;
      },
      [=](atom::list, const ListOptions& options) -> caf::result<ListPage> {
        ListPage page;
        Status s = serve([&](storage::DatabaseStore& db) { return db.List(options, &page); });
        if (!s.ok()) return ToError(s);
        return page;
      },
      [=](atom::batch, const WriteBatch& batch) -> caf::result<atom::ok> {
        Status s = serve([&](storage::DatabaseStore& db) { return db.Write(batch); });
        if (!s.ok()) return ToError(s);
        return atom::ok_v;
      },
      [=](atom::stats) -> DatabaseStats {
        ++self->state.requests_since_tick;
        return self->state.store->Stats();
      },
      [=](atom::limit, uint64_t bytes) { self->state.store->set_size_limit(bytes); },
      [=](atom::tick) {
        if (self->state.requests_since_tick == 0) {
          self->send(supervisor, atom::idle_v, self->state.store->path(),
                     caf::actor_cast<database_actor>(self));
        }
        self->state.requests_since_tick = 0;
        self->delayed_send(self, idle_timeout, atom::tick_v);
      },
      [=](atom::passivate) { self->quit(); },
  };
}

}  // namespace kvmesh
