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

/* The background sync action (sync.c).  One action at a time; its state
 * changes only under `lock`, and every change is broadcast on `changed`,
 * which the sync thread (waiting for work, unfreeze or stop) and wait
 * requests (waiting for idle/frozen, with a timeout) sleep on. */
struct sync_ctl {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  pthread_t thread;
  bool started;
  bool stop;                               /* array closing */
  int action;                              /* enum raid_sync_action */
  bool frozen;                             /* action kept, thread idle */
  bool busy;                               /* the thread is inside a batch */
  bool replace;                            /* RECOVER is a replace (copy) */
  uint64_t pos, total;                     /* bytes of the action's unit */
  uint64_t rate;                           /* bytes/s, smoothed */
  uint64_t mismatch;                       /* check/repair */
  int target_slot, target_role;            /* recover */
  uint64_t speed_min, speed_max;           /* bytes/s; max 0 = unlimited */
  uint64_t ckpt_ns;                        /* last durable checkpoint */
  uint64_t last_ns;                        /* end of the previous batch */
  uint8_t *rbuf;                           /* reshape copy buffer (sync thread) */
  uint64_t step_bytes;                     /* reshape step wanted: speed_max / 2
                                              (0: default); sync thread only */
};

#define SYNC_SPEED_MIN_DEFAULT (16u << 20)
#define SYNC_SPEED_MAX_DEFAULT 0           /* unlimited */

struct raid_array {
  pthread_mutex_t sb_lock;                 /* guards sb and member table updates */
  struct raid_sb sb;                       /* newest array state */
  struct array_member mem[SB_MAX_MEMBERS]; /* indexed like sb.members[] */
  struct layout cur;
  struct stripe_lock_table locks;
  uint64_t size;                           /* exported bytes */
  _Atomic int health;                      /* enum raid_health */
  bool can_fua;
  struct sync_ctl sync;
  struct raid_test_hooks test;             /* zero in production */
  _Atomic uint64_t rb_row;                 /* rebuild cursor: rows of cur below
                                              it are valid on REBUILDING roles */
  /* replace (manage.c): every write to repl_role also goes to repl_slot's
   * member, while the copy moves the rest; -1 when none */
  _Atomic int repl_role;
  int repl_slot;
  _Atomic uint64_t fg_ns;                  /* last foreground I/O (monotonic) */
  struct member *retired[SB_MAX_MEMBERS * 2]; /* removed members, closed at close */
  int nretired;

  /* write-hole journal (journal.c) */
  bool journaled;                          /* consistency journal, raid4/5/6 */
  pthread_rwlock_t jgate;                  /* shared: a journaled write in flight;
                                              exclusive: a checkpoint */
  pthread_mutex_t jlock;                   /* guards jhead */
  uint64_t jhead[SB_MAX_MEMBERS];          /* next free byte of each log */
  _Atomic uint64_t jseq_next;

  struct bitmap *bm;                       /* consistency bitmap, or NULL */

  /* clean/dirty (array.c) */
  _Atomic bool dirty;                      /* SB_FLAG_DIRTY is on disk */

  /* live reshape (reshape.c): while `reshaping`, requests are split at the
   * boundary between `next` (the new layout) and `cur` */
  struct layout next;
  _Atomic bool reshaping;
  int rdir;                                /* enum sb_direction */
  pthread_mutex_t rlock;                   /* guards boundary, window, active */
  pthread_cond_t rcond;                    /* window moved / request finished */
  uint64_t boundary;
  uint64_t win_lo, win_hi;                 /* being copied; empty when equal */
  struct rreq *active;                     /* requests in flight */
  bool autostart;                          /* resume a running reshape at start */
};

#define RAID_IO_RAW 0x100u                 /* internal: no journal, no bitmap */
enum { ARRAY_OP_READ, ARRAY_OP_WRITE, ARRAY_OP_ZERO };

/* array.c: build layout id (0 current, 1 reshape target) from a->sb. */
int array_layout_from_sb (struct raid_array *a, struct layout *L, int id,
                          char *err, size_t errlen);

/* One request on one layout (array.c). */
int array_span_io (struct raid_array *a, const struct layout *L, int op, void *buf,
                   uint64_t count, uint64_t off, unsigned flags);

/* reshape.c */
int reshape_assemble (struct raid_array *a, char *err, size_t errlen);
int reshape_io (struct raid_array *a, int op, void *buf, uint64_t count, uint64_t off,
                unsigned flags);
int reshape_check_start (struct raid_array *a, char *err, size_t errlen);
void reshape_set_state (struct raid_array *a, bool running);
int reshape_step (struct raid_array *a, uint64_t *done, uint8_t **bufp);
int reshape_finish (struct raid_array *a);
int reshape_abort (struct raid_array *a, char *err, size_t errlen);
void reshape_status (struct raid_array *a, struct raid_status *st);

/* Make sure the superblock says dirty before the first write is issued. */
int array_mark_dirty (struct raid_array *a);

/* Commit a->sb (events + 1) to every member in use; caller holds sb_lock. */
int array_commit (struct raid_array *a);
bool array_member_in_use (struct raid_array *a, int t);
void array_update_health (struct raid_array *a);

/* sync.c */
void sync_init (struct raid_array *a);
int sync_thread_start (struct raid_array *a);
void sync_thread_stop (struct raid_array *a);
/* Begin an action (caller holds no lock); refuses EBUSY if one exists. */
int sync_begin (struct raid_array *a, int action, int target_slot, int target_role,
                uint64_t from, bool frozen, char *err, size_t errlen);
/* Stop the running recovery of table slot t (it went faulty). */
void sync_cancel_target (struct raid_array *a, int t);
/* Start recovery onto table slot `spare` for `role` (holds sb_lock inside). */
int array_start_recovery (struct raid_array *a, int spare, int role,
                          char *err, size_t errlen);
/* manage.c: at start, resume recovery/scrub or begin recovery onto a spare. */
int array_resume_actions (struct raid_array *a);

/* Roles of layout L that must not be used in any row (faulty, missing,
 * stale).  Roles being rebuilt are not in it: they are good in rows below
 * the rebuild cursor; if rb_mask/rb_row are given they receive those roles
 * and the cursor (rows of L).  Call with the rows of interest locked when
 * the answer must not change under you. */
uint32_t array_bad_roles (struct raid_array *a, const struct layout *L,
                          uint32_t *rb_mask, uint64_t *rb_row);
/* While a reshape is prepared or running: whether the new layout holds
 * data yet.  Before the first window moves (position 0) the old layout
 * holds everything, so only it counts for health and for serving. */
static inline bool
array_next_holds_data (struct raid_array *a)
{
  return atomic_load (&a->reshaping) && a->sb.reshape_position > 0;
}

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
int stripe_rebuild_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                         uint64_t n, int role, _Atomic uint64_t *cursor);
int stripe_check_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                       uint64_t n, bool repair, uint64_t *mismatches);
int stripe_copy_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                      uint64_t n, int role, struct member *dst, _Atomic uint64_t *cursor);
/* manage.c: zero a member's superblock ring (a new member). 0 or errno. */
int array_wipe_ring (struct member *m);
/* manage.c: table slot of a member named by role number or spec, or -1. */
int array_find_member (struct raid_array *a, const char *name, char *err, size_t errlen);
/* manage.c: the replacement is complete / its copy failed. */
void replace_finish (struct raid_array *a);
void replace_cancel (struct raid_array *a, bool source_failed);

#endif
