/* DPDK headers kubypass binds to, plus accessors for what bindgen cannot reach
 * (thread-local rte_errno, macros). Implemented in shim.c. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_version.h>

/* rte_errno of the calling thread (rte_errno is a per-lcore TLS variable). */
int kubypass_rte_errno(void);

/* RSS hash functions kubypass asks for: RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP. */
uint64_t kubypass_rss_hf_ip_tcp_udp(void);

/* Sets the mbuf's tx offload header lengths (bitfields in rte_mbuf). */
void kubypass_mbuf_set_tx_lens(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len);

/* Reads the mbuf's tx offload l2/l3 lengths. */
uint16_t kubypass_mbuf_l2_len(const struct rte_mbuf *m);
uint16_t kubypass_mbuf_l3_len(const struct rte_mbuf *m);

/* Tx checksum offload bits (RTE_ETH_TX_OFFLOAD_{IPV4,TCP,UDP,SCTP}_CKSUM): RTE_BIT64
 * macros, which bindgen cannot evaluate. */
uint64_t kubypass_tx_offload_ipv4_cksum(void);
uint64_t kubypass_tx_offload_tcp_cksum(void);
uint64_t kubypass_tx_offload_udp_cksum(void);
uint64_t kubypass_tx_offload_sctp_cksum(void);
