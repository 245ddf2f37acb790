#include "dataplane/counters.h"

namespace kdp {

const char* drop_reason_name(DropReason r) {
  switch (r) {
#define KDP_X(name, text) \
  case DropReason::name:  \
    return text;
    KDP_DROP_REASONS(KDP_X)
#undef KDP_X
    case DropReason::Count: break;
  }
  return "?";
}

}  // namespace kdp
