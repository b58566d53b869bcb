/* nbdkit-raid: a layout — one geometry placed on the members.
 *
 * A layout says, for one geometry, which member table slot holds each role,
 * where that role's data area starts on its member, and (during a replace)
 * which other slot receives a copy of every write of one role.  It is plain
 * data with no behaviour: the router (router.h) owns the array's layouts,
 * decides which one holds each array byte, and changes them only while no
 * request that could be using them is in flight.  Everyone else receives a
 * `const struct layout *` inside a router answer and uses it only until it
 * leaves the router again.
 *
 * A piece is one contiguous member I/O of a layout: the unit the stripe
 * engine issues and the write-hole journal logs.
 */
#ifndef RAIDCORE_LAYOUT_H
#define RAIDCORE_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "geometry.h"
#include "sb.h"

enum layout_id {
  LAYOUT_CUR = 0,                          /* the geometry in sb.level ... */
  LAYOUT_NEXT = 1,                         /* the reshape target, sb.new_* */
};

struct layout {
  struct raid_geom g;
  int id;                                  /* enum layout_id: also the stripe
                                              lock key space and the journal
                                              record's layout number */
  int slot[RAID_MAX_MEMBERS];              /* role -> member table slot, -1 */
  uint64_t data_offset[RAID_MAX_MEMBERS];  /* role -> absolute data offset
                                              (0 for a role without a slot) */
  uint64_t rows;                           /* rows of each role's data area:
                                              [data_offset, + rows * chunk)
                                              (sb_layout_rows: for the target,
                                              the rows holding the array) */
  int mirror_role;                         /* replace: every write to this
                                              role also goes to mirror_slot
                                              (-1: none) */
  int mirror_slot;
};

/* Build layout `id` from a superblock: LAYOUT_CUR the current geometry
 * (data at data_offset), LAYOUT_NEXT the reshape target (data at
 * new_data_offset).  Roles only the other layout uses are skipped; when two
 * entries claim a role, the one that is not faulty wins.  Returns 0, or -1
 * with a message ("superblock member table is inconsistent (role 3)"). */
int layout_from_sb (const struct raid_sb *sb, int id, struct layout *L,
                    char *err, size_t errlen);

/* The data offset for a member that joins L without a role yet (a spare,
 * or one a reshape adds): that of the first role with a member, or 0 when
 * no role has one.  Every bound role has the same offset in practice; role
 * 0 may have none (removed), so data_offset[0] is not the answer. */
uint64_t layout_data_offset (const struct layout *L);

/* Rows a byte range of the array touches in L: [*r0, *r0 + *n). */
static inline void
layout_rows (const struct layout *L, uint64_t off, uint64_t len,
             uint64_t *r0, uint64_t *n)
{
  uint64_t W = L->g.stripe_width;
  *r0 = off / W;
  *n = len ? (off + len - 1) / W + 1 - *r0 : 0;
}

/* Faults a layout can lose and keep every byte: 0 for raid0. */
static inline int
layout_tolerance (const struct layout *L)
{
  return L->g.level == 0 ? 0 : L->g.parity_disks;
}

/* One member I/O of a layout (absolute member offset). */
struct piece {
  int role;
  uint64_t off;
  void *ptr;                               /* NULL for a zeroing piece */
  size_t len;
};

/* A group's member writes, as the stripe engine hands them to the
 * write-hole policy (consistency.h): pieces, cut into units.  A unit is one
 * row segment's writes: pieces [first, end) of the batch; `full` when every
 * data block of rows [row, row + rows) is rewritten (a journal then logs
 * only the rows, as an intent). */
struct write_unit {
  uint64_t row, rows;
  bool full;
  size_t first, end;
};

struct write_batch {
  const struct piece *pieces;
  const struct write_unit *units;
  size_t nunits;
  uint64_t r0, nrows;                      /* every row the batch writes */
};

/* Issue pieces [first, end) of a batch (member writes); 0, or an errno for
 * a failure that is not a member's (ENOMEM); *failed gets the roles whose
 * member failed (each already reported). */
typedef int (*write_issue_fn) (void *ctx, size_t first, size_t end, uint32_t *failed);

#endif
