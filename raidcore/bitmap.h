/* nbdkit-raid: the write-intent bitmap (see bitmap.c for the theory). */
#ifndef RAIDCORE_BITMAP_H
#define RAIDCORE_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct raid_array;

/* Whether the bitmap of layout L of record sb (policy bitmap, raid4/5/6)
 * fits its consistency area: 0, or -1 with the reason in err. */
struct raid_sb;
struct layout;
int bitmap_check (const struct raid_sb *sb, const struct layout *L, char *err,
                  size_t errlen);
/* Set up a->bm when the array's policy is bitmap (raid4/5/6); 0 or errno
 * (EINVAL: bitmap_check refuses the record). */
int bitmap_init (struct raid_array *a);
void bitmap_fini (struct raid_array *a);
bool bitmap_enabled (const struct raid_array *a);
/* Read the on-disk bits (at a dirty start); the number of set regions or -1. */
int64_t bitmap_load (struct raid_array *a);

/* Before member writes to rows [row, row+nrows): their regions' bits are
 * durable on every member when this returns 0.  EAGAIN: a bitmap write
 * failed (the member was reported); redo.  Pair with bitmap_end_write. */
int bitmap_start_write (struct raid_array *a, uint64_t row, uint64_t nrows);
void bitmap_end_write (struct raid_array *a, uint64_t row, uint64_t nrows);

/* Whether the region of `row` may be inconsistent (bit set). */
bool bitmap_row_dirty (struct raid_array *a, uint64_t row);
uint64_t bitmap_rows_per_region (const struct raid_array *a);

/* Clear the bits of regions idle since the previous pass (all idle regions
 * when `all`), after flushing every member.  0 or errno. */
int bitmap_clean (struct raid_array *a, bool all);

#endif
