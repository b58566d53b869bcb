/* nbdkit-raid: the degraded row cache — a rebuilt row kept for the read
 * that continues it.
 *
 * THEORY
 *
 * Why.  A degraded read rebuilds a missing data block from the same
 * columns of every other block of its row.  A client that reads a stream
 * in requests that end inside a row (1 MiB requests on a RAID5 of 6 with
 * 64K chunks: 320K of data a row) splits such rows between two requests,
 * and the blocks one of them reads for its own bytes the other reads
 * again to rebuild its part of the missing block: the degraded stream
 * moved 8% more from the members than it delivered (counted at 6
 * members).  So a read request at least a row long that covers part of a
 * row needing a rebuild reads that whole row once, rebuilds it whole,
 * and leaves the row's data here; the request that continues the row
 * takes its bytes from here and reads nothing for it.  Only requests that
 * continue a stream fill (one starting where one of the last
 * ROWCACHE_RECENT requests of a row or more ended): a random read would
 * pay the rest of its partial rows for nothing.  A fill's read of a block
 * the request does not need that fails does not fail the request: the
 * group is done again without fills (stripe.c, no_fill).
 *
 * What it holds.  ROWCACHE_ENTRIES rows at most, fewer for large rows
 * (ROWCACHE_BYTES in all: at queue depth 32 every request in flight may
 * have a row waiting for its successor), each a row's data (its k data
 * blocks, in data order, k x chunk bytes, at most ROWCACHE_ROW_MAX)
 * with the layout geometry it was read in and the epoch it was read at.
 * An entry stays until the oldest is replaced (every entry in use, or its
 * memory needed: the buffers never exceed ROWCACHE_BYTES together, rows
 * of two layouts' sizes during a reshape included) or a lookup finds it
 * stale: a request's rows may be looked up twice (a group that must lock
 * its rows plans them again under the locks).
 *
 * Why an entry never returns stale bytes.  The epoch counts member
 * writes: every batch of member writes or zeroes (stripe.c run_runs, the
 * one place that issues member I/O of a data area) bumps it before it is
 * issued and again after it completed.  A fill takes the epoch before it
 * issues its reads and stores its row only if the epoch has not moved
 * since; a lookup uses an entry only while the epoch still equals the
 * entry's.  So:
 *   R1  A fill runs under its row's stripe lock (a seg that rebuilds
 *       makes its group lock its rows), which every write of the row
 *       holds too: no write of the row is in flight during the fill, and
 *       the stored bytes are the row's content at one instant.  (Writes
 *       that take no row lock, a rebuild or a replace copy, write the
 *       bytes the row already holds.)  A write of the row after the fill
 *       bumps the epoch; one of another row during it makes the fill's
 *       own check fail, which costs a miss only.
 *   R2  A write that completed before a read began bumped the epoch after
 *       the entry was stored or before the fill began: either way the
 *       lookup misses.  A read concurrent with a write may see either
 *       state, as NBD allows.
 *   R3  The geometry (level, layout, chunk, members, data offsets) is part
 *       of the key: bytes are the same only if the mapping is.  Which
 *       member holds a role does not matter; the role's bytes do.
 * Any write anywhere invalidates every entry: in a mixed workload the
 * cache misses, which is only the cost it avoids; it pays in the stream
 * it is for.  An entry found stale gives its memory back.  One mutex, a
 * leaf, guards the entries: held for a lookup's or a store's copy, never
 * across member I/O.
 */
#ifndef RAIDCORE_ROWCACHE_H
#define RAIDCORE_ROWCACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

#define ROWCACHE_ENTRIES 64
#define ROWCACHE_ROW_MAX (4u << 20)
#define ROWCACHE_BYTES (16u << 20)         /* buffers allocated, at most */
#define ROWCACHE_RECENT 32                 /* ends of recent row-long reads */

struct rowcache_entry {
  bool used;
  int id;                                  /* layout key (R3) */
  struct raid_geom g;
  uint64_t data_offset[RAID_MAX_MEMBERS];
  uint64_t row, epoch, born;
  uint8_t *buf;                            /* k x chunk bytes, data order */
  size_t cap;
};

struct rowcache {
  pthread_mutex_t lock;
  _Atomic uint64_t epoch;
  uint64_t stores;                         /* age of entries (lock held) */
  uint64_t bytes;                          /* buffers allocated (lock held) */
  _Atomic uint64_t recent[ROWCACHE_RECENT];  /* rowcache_stream */
  _Atomic unsigned recent_next;
  struct rowcache_entry e[ROWCACHE_ENTRIES];
};

void rowcache_init (struct rowcache *c);
void rowcache_fini (struct rowcache *c);

/* Whether rows of L are kept here at all (k x chunk fits an entry). */
bool rowcache_fits (const struct layout *L);

/* Around every batch of member writes or zeroes: before it is issued and
 * after it completed (R1, R2). */
void rowcache_bump (struct rowcache *c);

/* Whether a read of [off, end) (at least a row long) continues a stream:
 * it starts where a recent one ended.  Records its end. */
bool rowcache_stream (struct rowcache *c, uint64_t off, uint64_t end);

/* The epoch a fill takes before it issues its reads. */
uint64_t rowcache_epoch (struct rowcache *c);

/* Copy row bytes [s, e) (row-relative, within k x chunk) of `row` of L
 * into dst if an entry holds the row at the current epoch.  True on a
 * hit. */
bool rowcache_take (struct rowcache *c, const struct layout *L, uint64_t row,
                    uint64_t s, uint64_t e, uint8_t *dst);

/* Store `row` of L read at `epoch`: blk[di] is data block di (chunk
 * bytes), di = 0..k-1.  Nothing happens if the epoch moved, or memory
 * runs out (the cache is an optimisation only). */
void rowcache_put (struct rowcache *c, const struct layout *L, uint64_t row,
                   uint64_t epoch, uint8_t *const *blk);

#endif /* RAIDCORE_ROWCACHE_H */
