/* nbdkit-raid: parity generation and reconstruction with isa-l.
 *
 * P is the XOR of the data blocks.  Q is the RAID-6 syndrome over GF(2^8)
 * with polynomial 0x11d and generator 2: Q = sum over data blocks of
 * 2^slot * D, where slot is the block's syndrome slot (see geometry.h).  The
 * functions below take the data blocks IN SLOT ORDER: data[s] is the block
 * whose Q exponent is s.  This is exactly isa-l pq_gen's convention.
 *
 * Buffers: any pointer alignment is accepted (client buffers from nbdkit are
 * often only 16-byte aligned); misaligned blocks are either copied through
 * an aligned per-thread scratch area or handled by isa-l's alignment-free
 * erasure-code kernels, whichever measured faster.  len must be a multiple
 * of 64 and > 0; k is at most RAID_MAX_MEMBERS (32).  Out of scratch memory:
 * -1 with errno = ENOMEM before anything is written.  Every isa-l return code is checked; a failure returns -1 with
 * errno = EINVAL and writes nothing that the caller relies on.
 *
 * All functions are thread-safe and never allocate per call after a
 * thread's first use (scratch is per thread, grown on demand).
 */
#ifndef RAIDCORE_PARITY_H
#define RAIDCORE_PARITY_H

#include <stddef.h>

/* Compute P (and Q if q != NULL) from k >= 1 data blocks.  k == 1 makes P a
 * copy of the block (and Q also a copy, since 2^0 = 1).  p and q must not
 * alias any data block.  Returns 0 or -1. */
int parity_gen (int k, size_t len, void *const *data, void *p, void *q);

/* Read-modify-write update: given delta blocks (old XOR new) of n data
 * blocks whose slots are slots[0..n-1], update p ^= sum delta and, if q,
 * q ^= sum 2^slot * delta.  k is the row's number of data blocks (slots are
 * < k).  Returns 0 or -1. */
int parity_update (int k, size_t len, int n, const int *slots,
                   void *const *deltas, void *p, void *q);

/* Reconstruct missing blocks.  blocks[0..k-1] are the data blocks in slot
 * order, blocks[k] is P, blocks[k+1] is Q (present only when nparity == 2).
 * missing[0..nmissing-1] are indices into blocks[] (0..k+nparity-1) whose
 * buffers are outputs; every other buffer is input.  nmissing <= nparity.
 * Handles every erasure pattern: any single block (nparity 1), any one or
 * two blocks (nparity 2).  Returns 0 or -1 (EINVAL for nmissing > nparity). */
int parity_recover (int k, int nparity, size_t len, void *const *blocks,
                    const int *missing, int nmissing);

/* Verify: returns 1 when P (and Q if nparity == 2) match the data, 0 when
 * they do not, -1 on error.  Same blocks[] convention as parity_recover. */
int parity_check (int k, int nparity, size_t len, void *const *blocks);

/* dst ^= src, any alignment, any len. */
void parity_xor_into (void *dst, const void *src, size_t len);

/* The raw isa-l rate on this CPU, for the benchmark: XOR (P) and P+Q
 * generation over k blocks of len bytes, bytes of data per second, measured
 * for about `seconds`. */
double parity_bench_xor (int k, size_t len, double seconds);
double parity_bench_pq (int k, size_t len, double seconds);

#endif
