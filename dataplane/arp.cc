// Arp: answers requests for our address on each side (gateway IP to pods,
// node IP on the uplink, every address but the node's to the node's own
// stack on the host port) and gleans senders into the neighbour table
// through the control thread.
#include "dataplane/packet_build.h"
#include "dataplane/stages.h"

namespace kdp {

void Arp::process(Burst& burst) {
  const NodeTables& tables = ctx_.tables;
  const Ipv4Prefix& pod_cidr = tables.config.node.pod_cidr;
  const unsigned n = burst.n;  // replies appended below are not revisited
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = burst.pkts[i];
    PacketMeta& md = meta(m);
    const bool also_flood = md.flags & kFlagAlsoFlood;
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    const uint16_t op = rte_be_to_cpu_16(arp->arp_opcode);
    if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || arp->arp_hlen != RTE_ETHER_ADDR_LEN ||
        arp->arp_plen != 4 || (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY) ||
        rte_is_multicast_ether_addr(&arp->arp_data.arp_sha)) {
      if (also_flood) burst.output(i, kFloodPort, md.flood_exclude);  // the bridge still carries it
      else burst.drop(i, DropReason::ArpMalformed);
      continue;
    }
    const PortInfo& port = ctx_.ports->ports[md.in_port];
    const be32 local_ip = to_be32(port.local_ip);
    const be32 sender_ip{arp->arp_data.arp_sip};
    const be32 target_ip{arp->arp_data.arp_tip};
    // On the host port kdp is the node stack's router: it answers for every
    // address but the node's own, so the kernel hands it all it sends.
    const bool for_us = md.in_port == tables.host_port ? target_ip != tables.node_ip && target_ip != be32{0}
                                                        : target_ip == local_ip;

    // Glean: as Linux, create an entry from ARP aimed at us, update an
    // existing one from any ARP, and only for senders on this side (the host
    // port's one neighbour, the node's stack, needs no entry).
    const Ipv4 sender = from_be(sender_ip);
    const bool sender_on_side =
        port.role == PortRole::Pod ? pod_cidr.contains(sender) && sender != port.local_ip
                                   : port.role == PortRole::Uplink && !pod_cidr.contains(sender) &&
                                         sender_ip != tables.node_ip;
    if (sender != 0 && sender_on_side) {
      const NeighborEntry* known = tables.neighbors.lookup(NeighborKey{sender_ip});
      bool report = for_us;
      if (known != nullptr && known->state() == NeighborState::Static) {
        report = false;
      } else if (known != nullptr) {
        rte_ether_addr known_mac;
        known->mac(known_mac);
        // A changed MAC, or ARP aimed at us confirming an entry that is no
        // longer known reachable.
        report = !rte_is_same_ether_addr(&known_mac, &arp->arp_data.arp_sha) ||
                 (for_us && known->state() != NeighborState::Reachable);
      }
      if (report) ctx_.report({LearnEvent::Kind::Neighbor, for_us, md.in_port, arp->arp_data.arp_sha, sender_ip});
    }

    if (op != RTE_ARP_OP_REQUEST || !for_us) {
      if (also_flood) burst.output(i, kFloodPort, md.flood_exclude);
      else burst.drop(i, DropReason::Consumed);
      continue;
    }
    const rte_ether_addr requester = arp->arp_data.arp_sha;
    if (!also_flood && rte_mbuf_refcnt_read(m) == 1) {
      write_arp(m, RTE_ARP_OP_REPLY, requester, port.mac, target_ip, requester, sender_ip);
      burst.output(i, md.in_port);
      continue;
    }
    // The request is flooded too: the reply needs an mbuf of its own.
    burst.output(i, kFloodPort, md.flood_exclude);
    rte_mbuf* reply = rte_pktmbuf_alloc(ctx_.pool);
    if (reply == nullptr) {
      ctx_.counters.drops[static_cast<unsigned>(DropReason::MbufAllocFailed)].add();
      continue;
    }
    write_arp(reply, RTE_ARP_OP_REPLY, requester, port.mac, target_ip, requester, sender_ip);
    PacketMeta& rmd = meta(reply);
    rmd = {};
    rmd.in_port = kNoPort;
    rmd.out_port = md.in_port;
    rmd.flood_exclude = kNoPort;
    if (!burst.push(reply, StageId::Output)) {
      ctx_.counters.drops[static_cast<unsigned>(DropReason::BurstOverflow)].add();
      rte_pktmbuf_free(reply);
    }
  }
}

}  // namespace kdp
