// libFuzzer target: the TOML config loader. Any input must either parse into
// a Config or be rejected with a ConfigError; nothing else may escape, and
// sanitizers watch memory and undefined behaviour on the way.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ctrl/config.h"
#include "ctrl/services.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    kdp::Config config = kdp::parse_config(text, "fuzz.toml");
    // A valid config must compile into Services without throwing.
    (void)kdp::compile_services(config);
  } catch (const kdp::ConfigError&) {
    // rejected with a message: the expected outcome for most inputs
  }
  return 0;
}
