#include "shim.h"

int kubypass_rte_errno(void) { return rte_errno; }

uint64_t kubypass_rss_hf_ip_tcp_udp(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }

void kubypass_mbuf_set_tx_lens(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len)
{
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->l4_len = l4_len;
}

uint16_t kubypass_mbuf_l2_len(const struct rte_mbuf *m) { return m->l2_len; }
uint16_t kubypass_mbuf_l3_len(const struct rte_mbuf *m) { return m->l3_len; }

uint64_t kubypass_tx_offload_ipv4_cksum(void) { return RTE_ETH_TX_OFFLOAD_IPV4_CKSUM; }
uint64_t kubypass_tx_offload_tcp_cksum(void) { return RTE_ETH_TX_OFFLOAD_TCP_CKSUM; }
uint64_t kubypass_tx_offload_udp_cksum(void) { return RTE_ETH_TX_OFFLOAD_UDP_CKSUM; }
uint64_t kubypass_tx_offload_sctp_cksum(void) { return RTE_ETH_TX_OFFLOAD_SCTP_CKSUM; }
