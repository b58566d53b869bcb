/* nbdkit-raid: array internals shared by array.c and stripe.c.
 *
 * Data flows down: array.c owns the state and the superblock; stripe.c maps
 * and performs I/O through a `struct layout`; member I/O errors come back up
 * through array_member_io_error() only.
 *
 * Concurrency:
 *   - member runtime state is atomic; readers (the I/O path) take a snapshot
 *     with array_bad_roles() and act on it; an I/O error makes them report
 *     and redo with a fresh snapshot (bounded: each redo follows one more
 *     member marked faulty).
 *   - sb_lock serializes superblock updates; it is held across the journal
 *     append (member I/O) but never by the data path.
 */
#ifndef RAIDCORE_ARRAY_INT_H
#define RAIDCORE_ARRAY_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "array.h"
#include "geometry.h"
#include "member.h"
#include "sb.h"
#include "stripe-lock.h"

/* One geometry as placed on the members.  While a reshape runs the array
 * has two: the new one below the reshape boundary, the old one above. */
struct layout {
  struct raid_geom g;
  int id;                                  /* 0 or 1: stripe lock key space */
  int slot[RAID_MAX_MEMBERS];              /* role -> array member slot, -1 none */
  uint64_t data_offset[RAID_MAX_MEMBERS];  /* role -> absolute offset of data */
  uint64_t rows;                           /* rows of the data area */
};

struct array_member {
  struct member *m;                        /* NULL when missing */
  _Atomic int state;                       /* enum raid_member_state */
  _Atomic unsigned errors;                 /* corrected read errors */
};

#define ARRAY_MAX_READ_ERRORS 20           /* md's default */

struct raid_array {
  pthread_mutex_t sb_lock;                 /* guards sb and member table updates */
  struct raid_sb sb;                       /* newest array state */
  struct array_member mem[SB_MAX_MEMBERS]; /* indexed like sb.members[] */
  struct layout cur;
  struct stripe_lock_table locks;
  uint64_t size;                           /* exported bytes */
  _Atomic int health;                      /* enum raid_health */
  bool can_fua;
};

/* Roles of layout L that must not be used (faulty, missing, stale). */
uint32_t array_bad_roles (struct raid_array *a, const struct layout *L);

/* The member holding role r of L, or NULL if the role has none. */
static inline struct member *
layout_member (struct raid_array *a, const struct layout *L, int role)
{
  int s = L->slot[role];
  return s < 0 ? NULL : a->mem[s].m;
}

/* Report a failed member I/O.  A write error (or read error when
 * `fatal`) marks the member faulty, persists that and recomputes health; a
 * read error otherwise only counts, and marks faulty past
 * ARRAY_MAX_READ_ERRORS.  Returns true when the member is now faulty. */
bool array_member_io_error (struct raid_array *a, struct member *m, int err,
                            bool is_write, uint64_t off);

/* Stripe engine (stripe.c).  Offsets are within L's array space.  Return 0
 * or an errno. */
int stripe_read (struct raid_array *a, const struct layout *L,
                 void *buf, uint64_t count, uint64_t off);
int stripe_write (struct raid_array *a, const struct layout *L,
                  const void *buf, uint64_t count, uint64_t off, unsigned flags);
int stripe_zero (struct raid_array *a, const struct layout *L,
                 uint64_t count, uint64_t off, unsigned flags);

#endif
