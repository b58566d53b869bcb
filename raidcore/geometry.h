/* nbdkit-raid: RAID geometry — where each byte of the array lives.
 *
 * Contract: for the same level, layout, chunk size and member order, data, P
 * and Q are placed exactly where Linux md (drivers/md/raid5.c,
 * raid5_compute_sector; raid0 with equal-sized members) places them, and the
 * Q coefficient of each data block is 2^slot where slot is the block's
 * position in md's syndrome order (raid6_d0 / raid6_idx_to_slot), which for
 * some layouts differs from the logical data index.
 *
 * Offsets in this file are relative to the start of a member's data area
 * (its data_offset); the stripe engine adds the member's data_offset.
 *
 * Terms:
 *   chunk      bytes per member per stripe row (power of two, 4K..64M)
 *   row        stripe row number: array bytes [row*W, (row+1)*W) where
 *              W = chunk * data_disks (the "stripe width")
 *   role       member slot 0..raid_disks-1 in md's order
 *   data index logical position 0..data_disks-1 of a data block in a row
 *
 * Level 0: data_disks = raid_disks, no parity; data index i is role i.
 * Level 1: data_disks = 1, every role holds a full copy; row/chunk are only
 *          a bookkeeping unit (chunk still set), data[0] = role 0, the other
 *          roles are mirrors (role_data -1).
 * Level 4: parity on the last role (md ALGORITHM_PARITY_N placement).
 * Level 5: one parity block per row, rotating per layout.
 * Level 6: P and Q per row.
 */
#ifndef RAIDCORE_GEOMETRY_H
#define RAIDCORE_GEOMETRY_H

#include <stdint.h>
#include <stdbool.h>

#define RAID_MAX_MEMBERS 32

/* md's numeric algorithm values (include/linux/raid/md_p.h / raid5.h). */
enum raid_layout {
  RAID_LAYOUT_LEFT_ASYMMETRIC = 0,
  RAID_LAYOUT_RIGHT_ASYMMETRIC = 1,
  RAID_LAYOUT_LEFT_SYMMETRIC = 2,
  RAID_LAYOUT_RIGHT_SYMMETRIC = 3,
  RAID_LAYOUT_PARITY_0 = 4,          /* "parity-first" */
  RAID_LAYOUT_PARITY_N = 5,          /* "parity-last" (raid4, raid5, raid6) */
  RAID_LAYOUT_LEFT_ASYMMETRIC_6 = 16,
  RAID_LAYOUT_RIGHT_ASYMMETRIC_6 = 17,
  RAID_LAYOUT_LEFT_SYMMETRIC_6 = 18,
  RAID_LAYOUT_RIGHT_SYMMETRIC_6 = 19,
  RAID_LAYOUT_PARITY_0_6 = 20,       /* "parity-first-6" */
  RAID_LAYOUT_NONE = 255,            /* levels 0 and 1 */
};

#define RAID_CHUNK_MIN (4u << 10)
#define RAID_CHUNK_MAX (64u << 20)
#define RAID_CHUNK_DEFAULT (64u << 10)

struct raid_geom {
  int level;                 /* 0, 1, 4, 5, 6 */
  int layout;                /* enum raid_layout */
  uint32_t chunk;            /* bytes */
  int raid_disks;            /* members with a role */
  /* Derived by raid_geom_init: */
  int data_disks;            /* data blocks per row */
  int parity_disks;          /* 0 (raid0), 1 (raid4/5), 2 (raid6); raid1: raid_disks-1 */
  uint64_t stripe_width;     /* chunk * data_disks (raid1: chunk) */
};

/* One stripe row as md lays it out. */
struct raid_row {
  int pd;                          /* role of P, -1 if none */
  int qd;                          /* role of Q, -1 if none */
  int data[RAID_MAX_MEMBERS];      /* data[i] = role holding data index i */
  int slot[RAID_MAX_MEMBERS];      /* slot[i] = Q exponent of data index i
                                      (raid6 only; 0..data_disks-1) */
  int role_data[RAID_MAX_MEMBERS]; /* inverse: data index held by a role,
                                      -1 for P/Q (or a mirror on raid1) */
};

/* Fill the derived fields and validate.  Returns 0, or -1 and writes a
 * message into err (e.g. "raid6 needs at least 4 members", "layout
 * left-symmetric-6 does not exist for raid5", "chunk 3000 is not a power of
 * two").  Minimum members: raid0 2 (md allows 1, we do not), raid1 2, raid4 3,
 * raid5 2 (a 2-member raid5 is a mirror, md allows it and 1<->5 takeover
 * needs it), raid6 4. */
int raid_geom_init (struct raid_geom *g, int level, int layout,
                    uint32_t chunk, int raid_disks, char *err, size_t errlen);

/* Row description for stripe row `row`.  g must have passed raid_geom_init. */
void raid_geom_row (const struct raid_geom *g, uint64_t row, struct raid_row *r);

/* Layout names (mdadm's spellings): "left-asymmetric", "right-asymmetric",
 * "left-symmetric", "right-symmetric", "parity-first", "parity-last",
 * "left-asymmetric-6", "right-asymmetric-6", "left-symmetric-6",
 * "right-symmetric-6", "parity-first-6", and "none" for levels 0/1.
 * raid_layout_parse returns -1 for an unknown name. */
const char *raid_layout_name (int layout);
int raid_layout_parse (const char *name);

/* Whether a layout exists for a level (raid4: parity-last only; raid5: the
 * six non -6 layouts; raid6: all rotating, parity-first/last and the -6
 * variants; raid0/1: none only). */
bool raid_layout_valid_for_level (int level, int layout);

/* The default layout of a level (left-symmetric for 5 and 6, parity-last for
 * 4, none for 0 and 1). */
int raid_layout_default (int level);

/* Convenience: map an array byte offset to (row, data index, offset within
 * the chunk).  Valid for levels 0, 4, 5, 6. */
static inline void
raid_geom_locate (const struct raid_geom *g, uint64_t off,
                  uint64_t *row, int *dindex, uint32_t *in_chunk)
{
  uint64_t chunkno = off / g->chunk;
  *row = chunkno / g->data_disks;
  *dindex = (int) (chunkno % g->data_disks);
  *in_chunk = (uint32_t) (off % g->chunk);
}

#endif
