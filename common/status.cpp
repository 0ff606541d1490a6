#include "common/status.hpp"

namespace kvmesh {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kNotFound:
      return "not_found";
    case Code::kNoMatchingConfig:
      return "no_matching_config";
    case Code::kSizeLimitExceeded:
      return "size_limit_exceeded";
    case Code::kValueTooLarge:
      return "value_too_large";
    case Code::kInvalidKey:
      return "invalid_key";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kInvalidConfig:
      return "invalid_config";
    case Code::kIOError:
      return "io_error";
    case Code::kCorruption:
      return "corruption";
    case Code::kTimeout:
      return "timeout";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out = CodeName(code_);
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace kvmesh
