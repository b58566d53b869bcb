/* nbdkit-raid: a durable map of regions, kept on every member in use.
 *
 * THEORY.  One bit per region of rows_per_region consecutive stripe rows
 * of the current layout, stored at the same member offset on every member
 * that receives records (state_member_in_use).  It is the one owner of
 * "make this region's bit durable before the write it guards": the
 * write-intent bitmap (bitmap.c) and the maps of regions an absent member
 * missed (missed.c) are both built on it.
 *
 * Invariant: when regmap_mark returns 0, the bits of its regions are set
 * on every member in use (written with FUA).  Each region is CLEAN, SETTING
 * (set in memory, its page being written by the thread that set it) or SET
 * (durable).  A thread finding a bit SETTING waits for that page write
 * (bounded by one write's member I/O).  Page writes are serialized by
 * io_lock and always write the current in-memory page, so a later write
 * never carries older bits.
 *
 * SHARED.  Page writes leave their image in `written`, with the members
 * that took them (written_to; a write to another set of members starts it
 * afresh, and a failed write clears its pages): what those members hold,
 * since page writes are serialized and each replaces whole pages.  A
 * thread that set bits and then, holding io_lock, finds all of its
 * regions set in `written` and every member now in use among written_to
 * has them durable on every member in use already, and writes nothing:
 * threads that mark clean regions at the same moment share one page write
 * instead of each writing the page in turn.  (After a regmap_clear or
 * regmap_zero whose sync has not run yet, the write that carried a bit
 * may be older than the thread's setting it: the bit is still on those
 * members, as no later write of the page completed.)
 *
 * A member whose page write fails is reported (state_member_error) and
 * leaves the set in use; regmap_mark then returns EAGAIN, so the caller
 * redoes the write against the members left.
 *
 * Bits are cleared only by regmap_clear (the owner decides when) and made
 * durable by regmap_sync.  No state lock is held by any function here; the
 * caller must not hold it either (failures are reported through the state).
 */
#ifndef RAIDCORE_REGMAP_H
#define RAIDCORE_REGMAP_H

#include <stdbool.h>
#include <stdint.h>

struct raid_array;
struct regmap;

/* A map of `rows` rows in regions of rpr rows, stored at member offset
 * `off` (page aligned); all bits clear.  NULL when out of memory. */
struct regmap *regmap_new (uint64_t rows, uint64_t rpr, uint64_t off);
void regmap_free (struct regmap *m);

/* Bytes the map takes on each member for `rows` rows in regions of rpr. */
uint64_t regmap_bytes (uint64_t rows, uint64_t rpr);

uint64_t regmap_rows_per_region (const struct regmap *m);
uint64_t regmap_nregions (const struct regmap *m);

/* Set the bits of rows [row, row + n) (clipped to the map), durably: 0,
 * EAGAIN (a member's page write failed and was reported: redo), or ENOMEM. */
int regmap_mark (struct raid_array *a, struct regmap *m, uint64_t row, uint64_t n);
/* Set region r's bit in memory only (made durable by regmap_sync). */
void regmap_set (struct regmap *m, uint64_t r);

/* Clear every bit in memory (a map taken for a new use; durable after
 * regmap_sync).  Nobody may be marking it. */
void regmap_zero (struct regmap *m);

/* Whether the region holding `row` is marked (in memory). */
bool regmap_row_marked (struct regmap *m, uint64_t row);
bool regmap_region_marked (struct regmap *m, uint64_t r);
/* How many regions of [r0, r1) are marked (set or being set), in one
 * look under the map's lock. */
uint64_t regmap_count_marked (struct regmap *m, uint64_t r0, uint64_t r1);
/* Marked regions. */
uint64_t regmap_count (struct regmap *m);

/* Clear region r's bit in memory when it is SET (not being set).  Returns
 * whether it was cleared.  Durable after regmap_sync. */
bool regmap_clear (struct regmap *m, uint64_t r);

/* Write the pages holding regions [r0, r1) (all: 0, UINT64_MAX) to every
 * member in use: 0, EAGAIN (a member failed and was reported), ENOMEM. */
int regmap_sync (struct raid_array *a, struct regmap *m, uint64_t r0, uint64_t r1);

/* OR into the map the bits stored on member t.  0 or errno (nothing
 * changes then). */
int regmap_load (struct raid_array *a, struct regmap *m, int t);

#endif
