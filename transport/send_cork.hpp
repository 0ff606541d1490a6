// Messages a thread writes to client port connections in a burst (a gateway's replies, a
// client's requests), sent to each connection together.
//
// Why: a message on a client port connection is one send() on it, made on the sending actor's
// thread (transport/client_port.hpp). With many databases, or many clients, the replies of a
// burst went to the same connection one send each: 64 databases behind 4 connections with 50
// requests in flight made a send per reply (102,000 sends for 109,000 puts), a quarter of the
// node's CPU, and as many wake-ups of the client's reader; the client sent its requests to those
// databases one send each too. One database's puts and replies were already one message per
// group.
//
// How: while a SendCork::Hold lives on a thread, what that thread writes to a client port
// connection is added to the connection's output and listed in the cork, and sent at
// SendCork::Flush with one send per connection; any write to the connection made without a hold
// (or under another cork than the one listing the connection) sends it first, and a connection
// holds at most kMaxCorkedBytes before it sends. The client gateway answers through
// SendCork::Answer: it holds its cork while more messages wait in its mailbox, and flushes it
// when none do, or when a message it sent itself behind them arrives
// (actors/client_gateway.cpp). A client's connection actor holds its cork while a commit sends
// the requests waiting for many databases, and flushes it after (client/client.cpp).
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace kvmesh {

class SendCork {
 public:
  /// A connection's output held by a cork (the client port's connections).
  class Output {
   public:
    virtual ~Output() = default;
    /// Sends what `cork` held back (once the socket takes it; else when it is writable). Does
    /// nothing if `cork` does not list it.
    virtual void SendCorked(SendCork* cork) = 0;
  };

  /// Bytes a connection holds back at most; past them it sends at once.
  static constexpr size_t kMaxCorkedBytes = 64 * 1024;

  /// Holds `cork` on this thread while it lives (holds nest: the innermost counts).
  class Hold {
   public:
    explicit Hold(SendCork& cork);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    SendCork* previous_;
  };

  /// No cork on this thread while it lives: what it writes goes at once (after what a cork held
  /// for the same connection). For calls on behalf of someone else that must not wait for the
  /// holder's flush: a user's callback run while a client's connection actor holds its cork,
  /// which makes a blocking call or connects.
  class Suspend {
   public:
    Suspend();
    ~Suspend();
    Suspend(const Suspend&) = delete;
    Suspend& operator=(const Suspend&) = delete;

   private:
    SendCork* previous_;
  };

  SendCork() = default;
  SendCork(const SendCork&) = delete;
  SendCork& operator=(const SendCork&) = delete;
  /// Flush()es.
  ~SendCork();

  /// The cork held on this thread, or null.
  static SendCork* Current();

  /// For an Output: it holds bytes back until Flush (listed once until then).
  void Add(std::weak_ptr<Output> output);

  /// True if an Output holds bytes back for it.
  bool holding() const { return !held_.empty(); }

  /// Sends what every Output listed holds back. From the thread that holds it.
  void Flush();

  /// For an actor answering requests, the one rule: `deliver()` answers (writing replies to
  /// clients). With nothing else waiting for the actor (`more_waiting` false) the replies go at
  /// once, with everything held before them. Otherwise they are held, and the first time since
  /// the last Uncorked(true) `queue_flush()` is called: it must send the actor a message behind
  /// those waiting, whose handler calls Uncorked(true), so held replies wait for no more than the
  /// messages that were waiting when they were made.
  template <class Deliver, class QueueFlush>
  void Answer(bool more_waiting, Deliver&& deliver, QueueFlush&& queue_flush) {
    if (!more_waiting) {
      deliver();
      Flush();
      return;
    }
    {
      Hold hold(*this);
      deliver();
    }
    if (holding() && !flush_queued_) {
      queue_flush();
      flush_queued_ = true;
    }
  }

  /// The message queue_flush() sent arrived (`own`; one from anyone else only flushes sooner).
  void Uncorked(bool own) {
    if (own) flush_queued_ = false;
    Flush();
  }

 private:
  std::vector<std::weak_ptr<Output>> held_;
  bool flush_queued_ = false;
};

}  // namespace kvmesh
