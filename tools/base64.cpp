#include "tools/base64.hpp"

#include <openssl/evp.h>

namespace kvmesh::tools {

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(n);
  return out;
}

bool Base64Decode(std::string_view text, std::string* bytes) {
  // OpenSSL's decoder is lenient (it trims whitespace and accepts '=' anywhere), so the input is
  // checked strictly first: the alphabet only, whole quads, '=' only as the last one or two.
  if (text.size() % 4 != 0) return false;
  size_t padding_start = text.size();
  while (padding_start > 0 && text[padding_start - 1] == '=') --padding_start;
  if (text.size() - padding_start > 2) return false;
  for (size_t i = 0; i < padding_start; ++i) {
    const char c = text[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/';
    if (!ok) return false;
  }
  bytes->assign(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(bytes->data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return false;
  // EVP_DecodeBlock counts the padding as zero bytes; drop them.
  size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++padding;
  bytes->resize(static_cast<size_t>(n) - padding);
  return true;
}

}  // namespace kvmesh::tools
