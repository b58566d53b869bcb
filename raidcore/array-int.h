/* nbdkit-raid: the array object, assembled from the parts each module owns.
 *
 * Every field below belongs to exactly one module, named beside it; other
 * modules read it only as that module's header allows.  Data flows down:
 *
 *   array.c, assemble.c   the public entry points (array.h)
 *   manage.c              management requests (the management lock)
 *   sync.c, reshape.c     background jobs and the reshape mechanics
 *   stripe.c              reads and writes of one layout
 *   consistency.c         the write-hole policy of a layout
 *     journal.c, bitmap.c, missed.c (on regmap.c)
 *   state.c               record, member table, member states, health
 *   identity.c            is a candidate member this array itself?
 *   router.c, layout.c    which layout holds a byte; in-flight requests
 *   sb, member, geometry, parity, stripe-lock, util
 *
 * A module calls only modules below it.  The one upward path, a member fault
 * found by the I/O path that may need a spare, goes through the state:
 * state_member_error records it and broadcasts a->changed, and the sync
 * worker (waiting on a->changed) acts on it.
 */
#ifndef RAIDCORE_ARRAY_INT_H
#define RAIDCORE_ARRAY_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "array.h"
#include "away.h"
#include "gather.h"
#include "identity.h"
#include "journal.h"
#include "router.h"
#include "rowcache.h"
#include "state.h"
#include "stripe-lock.h"
#include "job.h"

struct bitmap;
struct missed;

struct raid_array {
  /* state.c: guarded by state_lock */
  pthread_mutex_t state_lock;
  pthread_cond_t changed;                  /* any state change */
  uint64_t state_gen;                      /* counts the changes */
  _Atomic uint64_t roles_left;             /* times a member stopped holding a
                                              role (state.c; the journal's
                                              PLACEMENT and JOINS) */
  struct raid_sb sb;
  struct array_member mem[SB_MAX_MEMBERS];
  _Atomic int health;                      /* enum raid_health */
  _Atomic bool dirty;                      /* SB_FLAG_DIRTY is on disk */
  char last_fault[256];
  struct member *retired[SB_MAX_MEMBERS * 2]; /* removed members, closed at close */
  int nretired;

  /* consistency.c: whole-row writes logged as intents only whose in-place
   * writes have completed, and how many of them the last flush that ended
   * covers (cons_flush, cons_fua_sources) */
  _Atomic uint64_t intents_done, intents_flushed;

  /* router.c */
  struct router router;

  /* stripe.c */
  struct stripe_lock_table locks;

  /* sync.c: the worker and its job (state guarded by state_lock) */
  struct sync_ctl sync;
  _Atomic uint64_t rb_row;                 /* rebuild/replace cursor: rows of
                                              the current layout below it are
                                              valid on the job's target */
  _Atomic uint64_t rb_logged;              /* the rebuild cursor as the last
                                              record holds it (the rebuilding
                                              member's recovery offset, rows):
                                              after a crash the rebuild goes on
                                              from there, not from rb_row */

  /* manage.c */
  pthread_mutex_t mgmt_lock;               /* serializes state-changing
                                              requests and job selection */

  /* journal.c, bitmap.c (consistency.c chooses between them) */
  struct journal jn;
  struct bitmap *bm;

  /* missed.c: maps of the regions absent members missed */
  struct missed *ms;
  /* missed.c's part in state.c's transitions and flushes (missed_hooks,
   * set at assembly; NULL: none): state.c sits below missed.c and calls
   * up only through these */
  const struct state_hooks *hooks;

  /* away.c: the watcher of members that come and go (state lock) */
  struct away_ctl away;

  /* identity.c: the read probe (management lock) */
  struct identity_probe probe;

  /* gather.c: client writes held to be joined into whole rows (io.c) */
  struct gather gather;

  /* rowcache.c: a degraded row rebuilt whole, for the read that continues
   * it (stripe.c) */
  struct rowcache rowcache;

  /* array.c */
  _Atomic uint64_t size;                   /* exported bytes */
  bool can_fua;
  _Atomic uint64_t fg_ns;                  /* last client I/O (monotonic) */
  bool autostart;                          /* resume a running reshape at start */
  bool readonly;                           /* nothing is written to members */
  uint64_t member_timeout_ns;              /* grace of an away member (0: none) */
  struct raid_test_hooks test;             /* zero in production */
};

/* io.c: a client write as the array makes it (gather.c's write callback;
 * opaque is the array): bytes past the exported size are dropped (a shrink
 * cut them off). */
int array_gathered_write (void *opaque, const uint8_t *buf, uint64_t len,
                          uint64_t off, unsigned flags);

#define RAID_IO_RAW 0x100u                 /* internal: no write-hole policy */

#endif
