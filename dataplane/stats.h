// Counters gathered from every worker and the control thread, as JSON (the
// one source) and as the readable summary kdp prints on exit.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "dataplane/control.h"
#include "dataplane/worker.h"

namespace kdp {

nlohmann::json collect_stats(const NodeTables& tables, const std::vector<std::unique_ptr<WorkerContext>>& workers,
                             const Control& control);
std::string format_summary(const nlohmann::json& stats);

}  // namespace kdp
