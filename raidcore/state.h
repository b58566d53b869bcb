/* nbdkit-raid: the array's state — its durable record, the member table,
 * member states, health.
 *
 * THEORY
 *
 * What it owns.  a->sb, the newest durable record of the array (geometry,
 * member table, reshape record, checkpoints); the runtime member table
 * a->mem[] (the open member and its runtime state per table slot); health;
 * the state lock and the `changed` condition that every state change
 * broadcasts.
 *
 * The state lock (a->state_lock) guards a->sb, the member table, the sync
 * worker's state (sync.h) and, together with a router claim, layout changes
 * (router.h).  It is held across a superblock commit (member I/O, bounded by
 * member timeouts) but never across data I/O, and never while waiting for
 * the router, row locks or the journal gate: order is
 *     management lock  >  router claim  >  journal gate  >  state lock
 *     >  router lock, bitmap lock, journal lock (leaves).
 *
 * Member states.  A member's runtime state changes only in member_transition,
 * under the state lock, and only along these edges:
 *     spare      -> rebuilding (bound to a role to recover it, or the
 *                   target of a replace), in_sync (a reshape adds it),
 *                   faulty, (removed)
 *     rebuilding -> in_sync (recovered / replace done), faulty,
 *                   spare (a replace stopped), rebuilding (a replace
 *                   target takes the role of the member it replaced,
 *                   which failed: the copy goes on as a recovery),
 *                   missing (its connection was lost)
 *     in_sync    -> faulty, spare (a reshape no longer uses it, or an
 *                   aborted reshape gives it back), missing (its
 *                   connection was lost: away, see away.h)
 *     missing    -> stale (it is back: opened, not yet resynced), faulty
 *                   (away longer than the member timeout), spare (the role
 *                   it had is gone: an aborted reshape added it; a spare
 *                   that is down, unverified until it is back, below)
 *     stale      -> rebuilding (it rejoins: resynced like a spare, only the
 *                   regions its map of missed regions marks when it has
 *                   one, see missed.h), faulty, missing (lost again), spare
 *                   (the role it had is gone, as above)
 *     faulty, missing, stale -> (removed)
 *     (empty)    -> spare (add), in_sync (a reshape adds a new member)
 * Which member serves a role: the one bound to it (state_role_member),
 * which changes only under a router claim (router.h), never with a member
 * state.  While a replace mirrors a role whose member has left in sync, the
 * role is unusable but the stripe engine still writes it to the replace
 * target (stripe.c), until the replace stops and the target takes the role.
 * The durable entry follows: a member's sb state is the runtime one, except
 * that a replace target (rebuilding without a role) is recorded as a spare
 * (a restart does not resume a replace), and a missing or stale member with
 * a role is recorded "missing": never trusted again as it is, but not
 * written off either.  A faulty, missing or stale member is never read or
 * written and never receives a record until it rejoins.
 *
 * A spare (or a replace target, which becomes a spare) whose NBD connection
 * is lost holds no data of the array: it is not written off, but
 * unverified, neither written nor chosen (state_spare_usable), until the
 * away watcher has it connected and has checked its superblock names this
 * array and member (away.h).
 *
 * Faults.  Any thread may report a failed member I/O (state_member_error).
 * An NBD member whose connection is lost (or that stops answering) goes
 * away: missing, not faulty, with a map of the regions it misses (missed.h)
 * until it is back or the member timeout passes (away.h).  Any other write
 * error marks the member faulty at once.  A read error is counted;
 * the caller reconstructs the block from the other members and rewrites it
 * (the stripe engine does so in every path), and the member is marked faulty
 * only past STATE_MAX_READ_ERRORS (md's default) or when that rewrite fails.
 * Marking faulty commits a new record before the caller's dependent I/O is
 * redone, recomputes health and broadcasts `changed` (the sync worker then
 * decides whether a spare takes over).
 *
 * Health: optimal when every role of every layout holding data has a usable
 * member; failed when some such layout lost more roles than its level
 * tolerates; degraded otherwise.  The target of a reshape holds data once
 * its first window moved (position > 0); before that only the current
 * layout counts.  Health is recomputed at every transition, and one state
 * change may make several under one state-lock section (a replace's
 * switch, a reshape's end), so a reader without the lock can see a step
 * inside one.  Each change orders its transitions so that no step has more
 * unusable roles than before and after it (members leave roles only after
 * they stopped counting), and a request that would fail on a health read
 * without the lock confirms it under the lock (state_failed): no request
 * fails, and no "failed" is logged, in the middle of a change.
 */
#ifndef RAIDCORE_STATE_H
#define RAIDCORE_STATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "array.h"
#include "layout.h"
#include "member.h"
#include "sb.h"

#define STATE_MAX_READ_ERRORS 20           /* md's default */

struct array_member {
  struct member *m;                        /* NULL when missing or empty */
  _Atomic int state;                       /* enum raid_member_state, or
                                              STATE_EMPTY */
  _Atomic unsigned errors;                 /* read errors counted */
  bool delta;                              /* stale: it may rejoin by a delta
                                              (missed_judge), from delta_from */
  uint64_t delta_from;                     /* member bytes from which all is
                                              rebuilt (see missed_judge) */
  bool whole;                              /* judged: it was in sync when it
                                              left (not being rebuilt) */
  bool log_due;                            /* judged: the rows its own log
                                              holds its parity of are not
                                              recomputed or marked yet
                                              (missed_widen) */
  uint64_t log_epoch, log_seq;             /* that log (its own newest
                                              record's journal_epoch, seq) */
  uint64_t seen;                           /* events of the last record it
                                              received */
  uint64_t joined;                         /* events of the record that put
                                              it in use in its role (0: in
                                              use since the start): a map
                                              of what it misses is only
                                              sound once it has seen it */
  uint64_t away_ns;                        /* missing: when it went away
                                              (monotonic; 0: not away) */
  bool rejoining;                          /* rebuilding because it was stale
                                              (it came back): status shows it
                                              stale until it is in sync */
  _Atomic bool unverified;                 /* a spare whose connection was
                                              lost: not used until the away
                                              watcher has checked it is back
                                              as this member (state lock) */
};

#define STATE_EMPTY (-1)                   /* a free table slot */

struct raid_array;

/* What the maps of missed regions (missed.c, above this file) do when the
 * state changes; state.c calls them through a->hooks (state lock held
 * unless said otherwise), never by name.  See missed.h for each. */
struct state_hooks {
  void (*away) (struct raid_array *a, int t);         /* missed_begin */
  void (*done) (struct raid_array *a, int t);         /* missed_end */
  /* a write member t did not take when it went away (no lock held) */
  void (*write_lost) (struct raid_array *a, int t, uint64_t off);
  uint64_t (*stamp) (struct raid_array *a);           /* before a full flush */
  void (*flushed) (struct raid_array *a, uint64_t stamp);   /* after it */
};

/* Change member t's state along an allowed edge (see above), record its
 * role in the durable entry (-1: none), log why, recompute health and
 * broadcast.  Caller holds the state lock and commits afterwards.  Returns
 * 0, or EINVAL for an edge that is not allowed (nothing changes). */
int member_transition (struct raid_array *a, int t, int to, int role, const char *why);

/* Put a new member into free table slot t (state spare or in_sync, fresh
 * uuid, data offsets given); caller holds the state lock and commits. */
void member_install (struct raid_array *a, int t, struct member *m, int to, int role,
                     uint64_t data_offset, uint64_t new_data_offset);
/* Take member t out of the table (it must be faulty, missing, stale or a
 * spare); returns the member, which the caller retires (it may still be in
 * use by in-flight requests that read it before). */
struct member *member_uninstall (struct raid_array *a, int t);
/* A faulty, missing or stale member no longer holds its role. */
void member_detach (struct raid_array *a, int t);
/* At assembly, before anything runs: member t's state as its records say
 * (no transition: this is where the states begin). */
void member_assemble (struct raid_array *a, int t, int st, struct member *m);

/* Record roles lost since the last record (absent or stale members still
 * recorded in sync become "missing" in the record) before serving
 * anything.  0 or an errno. */
int state_record_lost (struct raid_array *a);
/* A member removed earlier (still open: requests that read its pointer
 * before may not have finished), taken back for `add` (files and block
 * devices are held exclusively, so the spec cannot be opened twice); NULL
 * when spec names none.  State lock held. */
struct member *member_unretire (struct raid_array *a, const char *spec);
/* Keep m open until the array closes (a removed member). */
void member_retire (struct raid_array *a, struct member *m);
/* Open spec to join the array (add, a reshape's new member): a member
 * removed earlier, taken back with member_unretire and connected again if
 * its connection died, else opened anew, read-write.  *retired says
 * which; give it back with member_close_joining when it does not join.
 * NULL with errno and a message.  Takes the state lock; call without it. */
struct member *member_open_joining (struct raid_array *a, const char *spec,
                                    bool *retired, char *err, size_t errlen);
/* m (NULL: nothing) did not join: closed, or retired again. */
void member_close_joining (struct raid_array *a, struct member *m, bool retired);
/* Stale member t is in sync again as it is, in its role, with no resync
 * (stale -> rebuilding -> in_sync: the edges a rejoin takes); why is
 * logged.  Caller holds the state lock and commits. */
void member_back_as_is (struct raid_array *a, int t, const char *why);
/* Whether own, the newest record read from a member that is to take slot
 * t back (away and answering again, or handed to add), shows that very
 * member of this array, no newer than the array (a newer one was used by
 * another server since: its data is not this array's).  Else false with
 * the reason in why.  State lock held. */
bool state_record_names (struct raid_array *a, int t, const struct raid_sb *own,
                         char *why, size_t len);
/* The table slot whose member has this uuid, or -1.  State lock held. */
int state_slot_of_uuid (struct raid_array *a, const uint8_t *member_uuid);
/* A free table slot, or -1 when the table is full. */
int member_free_slot (struct raid_array *a);

/* The table slot of a member named by a role number ("2": the member
 * holding the role, preferring one that is not faulty) or by its spec (as
 * given, or the same path), or -1 with a message. */
int state_find_member (struct raid_array *a, const char *name, char *err, size_t errlen);

/* A member that is not open (missing, or faulty and closed) listed by
 * the spec status gives for it (its last known spec, or "..." and its
 * tail when it was long), or -1; whole: only a spec kept whole that is
 * exactly name. */
int state_find_absent (struct raid_array *a, const char *name, bool whole);

/* As state_find_member, and also a member that is not open (missing, or
 * faulty and closed) by the spec status lists for it (its last known
 * spec): the members `fail` and `remove` can name. */
int state_find_listed (struct raid_array *a, const char *name, char *err, size_t errlen);

/* Members that receive records: every member still in use (in_sync,
 * spare, rebuilding). */
bool state_member_in_use (struct raid_array *a, int t);

/* Append a->sb (events + 1) to every member in use; caller holds the state
 * lock.  A read-only array records nothing (the change stays in memory).  A member whose append fails is marked faulty and the commit is
 * redone without it.  Returns 0, or EIO when no member could be written. */
int state_commit (struct raid_array *a);

/* Make sure the record says dirty before the first write is issued. */
int state_mark_dirty (struct raid_array *a);

/* Flush every member in use; failures are reported.  0, or EIO when the
 * array failed. */
int state_flush_all (struct raid_array *a);

/* Report a failed member I/O (any thread; takes the state lock): an NBD
 * member whose connection is lost goes away (missing; its map of missed
 * regions takes a failed write before this returns), any other write error
 * makes it faulty, read errors are counted.  Returns true when the member
 * is now out of use (faulty or missing). */
bool state_member_error (struct raid_array *a, struct member *m, int err,
                         bool is_write, uint64_t off);

/* Roles of L that must not be used in any row (faulty, missing, stale, no
 * member).  Rebuilding roles are not in it: they are good below the rebuild
 * cursor; if rb_mask/rb_row are given they receive those roles and the
 * cursor (rows of L), else they are added to the result. */
uint32_t state_bad_roles (struct raid_array *a, const struct layout *L,
                          uint32_t *rb_mask, uint64_t *rb_row);
/* The rebuild cursor a crash would leave: the lower of the one in memory
 * and the one the last record holds.  Rows of a rebuilding role from it on
 * are rebuilt again after a crash, from parity: a replay cannot read them. */
uint64_t state_rb_logged (struct raid_array *a);

/* Whether slot t is a spare that may be used: open, its connection up,
 * and (after it was lost) checked to be this member again (state lock
 * held).  Every choice of a spare asks this. */
bool state_spare_usable (struct raid_array *a, int t);

/* The member bound to role r of L, or NULL. */
struct member *state_role_member (struct raid_array *a, const struct layout *L, int role);

/* Whether the reshape target holds data (its first window moved). */
bool state_next_holds_data (struct raid_array *a);

/* Whether member t is away (missing with a role) within its grace of
 * member_timeout since it went away: a spare must not take its role yet
 * (state lock held). */
bool state_away_in_grace (struct raid_array *a, int t);
/* Wake everyone waiting for a state change (state lock held). */
void state_changed (struct raid_array *a);

/* Recompute health from the member states (caller holds the state lock). */
void state_update_health (struct raid_array *a);

/* Whether the array is failed as the last completed state change left it
 * (state lock not held; it is taken only when the health read says failed). */
bool state_failed (struct raid_array *a);

/* Record this process as the holder (held) or nobody, and commit (takes
 * the state lock).  0 or an errno. */
int state_set_owner (struct raid_array *a, bool held);

/* A one-line description of the last member fault ("member /m1: write
 * error at offset 4096: Input/output error"), for status. */
void state_last_fault (struct raid_array *a, char *buf, size_t len);

#endif
