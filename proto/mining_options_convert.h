// The one conversion between the wire's hardneg.v1.MiningOptions and the
// domain's hardneg::MiningOptions (mining/options.h), both directions side
// by side: the client encodes with it and the server decodes with it, so an
// option added to the proto and the domain is converted here and nowhere
// else.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_PROTO_MINING_OPTIONS_CONVERT_H_
#define HARDNEG_PROTO_MINING_OPTIONS_CONVERT_H_

#include "absl/status/status.h"
#include "hardneg/v1/miner.pb.h"
#include "mining/options.h"

namespace hardneg {

// Every field of `options` into `out` (an unset optional stays unset).
void MiningOptionsToProto(const MiningOptions& options, v1::MiningOptions* out);

// Every field of `in` into `out`. INVALID_ARGUMENT naming the field for a
// value the domain has no name for (an unknown sampling); the options'
// other rules are ValidateMiningOptions's.
absl::Status MiningOptionsFromProto(const v1::MiningOptions& in,
                                    MiningOptions* out);

}  // namespace hardneg

#endif  // HARDNEG_PROTO_MINING_OPTIONS_CONVERT_H_
