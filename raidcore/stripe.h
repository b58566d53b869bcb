/* nbdkit-raid: the stripe engine — reads and writes of ONE layout.
 *
 * The engine never decides which layout holds a byte: its callers pass the
 * layout a router answer gave them (router.h) and hold that ticket (or a
 * claim covering the rows) for the whole call.  Offsets are array offsets
 * within the layout; rows are rows of the layout.  Every function returns 0
 * or an errno value (EIO when the data cannot be served, ENOMEM) and
 * releases everything it took (row locks, the journal gate) on every path.
 *
 * Read errors, in every path (client reads, a write's read phase, rebuild,
 * scrub, replace copy): the member's error is counted (state.h), the block
 * is rebuilt from the other members and rewritten onto it; only a failed
 * rewrite, a write error or too many read errors make it faulty.  When the
 * block cannot be rebuilt (more blocks missing than the level tolerates)
 * the operation fails with EIO and the member stays as it is.
 */
#ifndef RAIDCORE_STRIPE_H
#define RAIDCORE_STRIPE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

struct raid_array;
struct member;

int stripe_read (struct raid_array *a, const struct layout *L,
                 void *buf, uint64_t count, uint64_t off);
/* flags: RAID_IO_FUA, RAID_IO_RAW (array-int.h). */
int stripe_write (struct raid_array *a, const struct layout *L,
                  const void *buf, uint64_t count, uint64_t off, unsigned flags);
/* Zero: whole rows are zeroed on every good member (and the replace
 * mirror), partial rows written with zeroes; reads back as zeroes. */
int stripe_zero (struct raid_array *a, const struct layout *L,
                 uint64_t count, uint64_t off, unsigned flags);
/* Bytes about to be exported, [from, to), no client addressing them yet:
 * zero them and the rest of the row holding byte to - 1.  Rows past the
 * exported size may hold anything (bytes a shrink cut off, or that a
 * reshape's target held before) with parity that does not match, and check
 * covers every row holding an exported byte whole: so the columns of the
 * new last row that hold no exported byte get parity from all their data
 * too.  Under the layout's write-hole policy, not raw: the row holding
 * `from` may hold exported bytes, and a torn zeroing must not leave its
 * parity wrong (a redo would compute its delta from zeroes already
 * written). */
int stripe_zero_to_row_end (struct raid_array *a, const struct layout *L,
                            uint64_t from, uint64_t to);

/* Background row operations (the sync worker).  Each locks rows
 * [r0, r0 + n) for its whole sequence. */

/* Rebuild `role` in the rows from the other roles and write it.  The
 * cursor is advanced to r0 + n while the rows are still locked, so a reader
 * that locks one of these rows afterwards may read the role.  (Writers write
 * a rebuilding role in every row, above the cursor too.) */
int stripe_rebuild_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                         uint64_t n, int role, _Atomic uint64_t *cursor);
/* Check (and with repair, fix) parity in 4 KiB columns; *mismatches grows
 * by the columns found wrong.  Rows with an unusable role are skipped.
 * Level 1: every readable mirror is compared with the row's source mirror
 * (the one reads use), and repair copies the source over those that
 * differ.  Level 0: nothing to check. */
int stripe_check_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                       uint64_t n, bool repair, uint64_t *mismatches);
/* Replace: copy `role`'s blocks to dst, the layout's mirror target (its
 * rows from here on also receive every write of the role); advances the
 * cursor like a rebuild.  A block the source cannot read is rebuilt from
 * the others and written to both. */
int stripe_copy_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                      uint64_t n, int role, struct member *dst,
                      _Atomic uint64_t *cursor);

/* A member rejoining (not in use: missed.h, O) gets its parity block of
 * `role` (the row's P or Q) in `row` recomputed from the row's data, read
 * from their members with the row locked, written to dst (not flushed).
 * 0; EAGAIN when a data role's member is not in sync (its data is not all
 * there); EINVAL when role holds no parity in that row; or an errno (a
 * read or the write failed, ENOMEM). */
int stripe_parity_to (struct raid_array *a, const struct layout *L, uint64_t row, int role,
                      struct member *dst);

/* Block status of rows [row, row + max) of L: how many rows from `row` on
 * have the same answer (at least 1), and whether that answer is "zero" (every
 * usable member stores nothing there, so they read as zeroes). */
uint64_t stripe_extent_rows (struct raid_array *a, const struct layout *L,
                             uint64_t row, uint64_t max, bool *zero);

#endif
