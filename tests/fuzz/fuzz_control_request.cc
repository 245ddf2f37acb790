// libFuzzer target: the control socket's request side (ctrl/control_protocol.h)
// without the server, which needs DPDK. The input is a byte stream as a client
// would write it. A LineReader splits it, fed whole and in small pieces: the
// lines must not depend on the pieces, and a LineReader with a small limit
// must give the same lines up to the first one over it. Each line goes to
// parse_request (a payload it announces made of the line's own bytes and
// attached); what it accepts must survive the typed accessor of its verb
// and read back unchanged from request_line. A ProtocolError is the only
// allowed rejection; anything else escaping is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ctrl/control_protocol.h"

namespace {

using namespace kdp::control;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_control_request: %s\n", what);
  std::abort();
}

struct Split {
  std::vector<std::string> lines;
  bool overflowed = false;
};

// The stream through a LineReader of limit `max`, fed `piece` bytes at a
// time, taking every complete line after each feed as the server does.
Split split(std::string_view stream, size_t max, size_t piece) {
  LineReader reader(max);
  Split out;
  for (size_t at = 0; at < stream.size(); at += piece) {
    const std::string_view chunk = stream.substr(at, piece);
    reader.feed(chunk.data(), chunk.size());
    while (std::optional<std::string> line = reader.next_line()) out.lines.push_back(std::move(*line));
  }
  out.overflowed = reader.overflowed();
  return out;
}

// What a LineReader of limit `max` must give: the complete lines up to the
// first whose line with its newline is longer than `max`; overflowed when
// there is one, or when the unterminated rest already reaches `max`.
Split expected_split(std::string_view stream, size_t max) {
  Split out;
  size_t start = 0;
  for (size_t newline; (newline = stream.find('\n', start)) != std::string_view::npos; start = newline + 1) {
    if (newline - start + 1 > max) {
      out.overflowed = true;
      return out;
    }
    out.lines.emplace_back(stream.substr(start, newline - start));
  }
  out.overflowed = stream.size() - start >= max;
  return out;
}

bool same(const Split& a, const Split& b) { return a.lines == b.lines && a.overflowed == b.overflowed; }

// The typed view of each verb that has one; these read checked args and must
// not throw, nor drop what was given.
void read_typed_args(const Request& request) {
  const std::string& verb = request.verb;
  auto given = [&](const char* name) {
    return request.args.contains(name) || (request.json_payload && request.json_payload->first == name);
  };
  if (verb == "conntrack.list" || verb == "snat.list") {
    const size_t limit = list_limit(request);
    if (limit < 1 || limit > kMaxConntrackListLimit) fail("list limit out of range after checking");
  }
  if (verb == "conntrack.list" || verb == "conntrack.flush") {
    const ConntrackFilter filter =
        verb == "conntrack.list" ? conntrack_list_args(request).filter : conntrack_flush_args(request);
    if (given("dst") != filter.dst.has_value() || given("service") != filter.service.has_value())
      fail("conntrack filter lost an argument");
  } else if (verb == "service.get" || verb == "service.del") {
    (void)service_args(request);
  } else if (verb == "route.add" || verb == "route.del") {
    (void)route_args(request);
  } else if (verb == "apply") {
    const ApplyArgs args = apply_args(Request(request));
    if (args.source.empty() || given("k8s") != args.k8s.has_value()) fail("apply args misread");
  } else if (verb == "watch.event") {
    (void)watch_event_args(request);
  } else if (verb == "endpoint.add" || verb == "endpoint.del") {
    (void)endpoint_args(request);
  } else if (verb == "pod.add") {
    if (given("mac") != pod_add_args(request).mac.has_value()) fail("pod.add mac misread");
  } else if (verb == "pod.del") {
    (void)pod_del_args(request);
  }
}

void serve_line(const std::string& line) {
  Request request;
  try {
    request = parse_request(line);
  } catch (const ProtocolError& e) {
    (void)error_line(e.what());  // the reply must be writable whatever the message holds
    return;
  }
  if (!is_known_verb(request.verb)) fail("parse_request accepted an unknown verb");
  if (request.payload) {
    // The payload the server would read next: the line's own bytes, repeated
    // to the announced size (small sizes only: the fuzzer can announce 64 MiB).
    if (request.payload->bytes > 4096) return;
    std::string bytes;
    while (bytes.size() < request.payload->bytes) bytes += line.empty() ? std::string(" ") : line;
    bytes.resize(request.payload->bytes);
    try {
      attach_payload(request, std::move(bytes));
    } catch (const ProtocolError& e) {
      (void)error_line(e.what());
      return;
    }
    if (request.payload) fail("attach_payload left the payload announced");
  }
  read_typed_args(request);
  // What a client (kdpctl) would send for this request reads back the same;
  // a JSON payload is sent again as one.
  Request again;
  if (request.json_payload) {
    const auto& [name, text] = *request.json_payload;
    again = parse_request(request_line_with_payload(request.verb, request.args, name, text.size()));
    attach_payload(again, std::string(text));
  } else {
    again = parse_request(request_line(request.verb, request.args));
  }
  if (again.verb != request.verb || again.args != request.args || again.json_payload != request.json_payload)
    fail("request_line does not read back");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view stream(reinterpret_cast<const char*>(data), size);

  const Split whole = split(stream, kMaxRequestBytes, stream.size() + 1);
  if (!same(whole, expected_split(stream, kMaxRequestBytes))) fail("LineReader lines differ from the stream's");
  for (size_t piece : {1, 7})
    if (!same(split(stream, kMaxRequestBytes, piece), whole)) fail("LineReader lines depend on the pieces fed");
  // A limit the input can reach, so the overflow path is fuzzed too.
  constexpr size_t kSmallLimit = 64;
  if (!same(split(stream, kSmallLimit, 5), expected_split(stream, kSmallLimit)))
    fail("LineReader with a small limit gives other lines than expected");

  for (const std::string& line : whole.lines) serve_line(line);
  return 0;
}
