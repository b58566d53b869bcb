/* nbdkit-raid: the write-hole journal (see journal.c for the theory). */
#ifndef RAIDCORE_JOURNAL_H
#define RAIDCORE_JOURNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"
#include "sb.h"

struct member;

struct raid_array;

#define JOURNAL_MAX_BLOCKS 512      /* payload blocks per record */
#define JOURNAL_MAX_RANGES 64       /* intent row ranges per record */
#define JOURNAL_MAX_RECORD (1u << 20) /* payload bytes per record */

/* One record copy waiting for its member's log write (journal.c). */
struct jq_entry;

/* The copies waiting for one member's log write, and whether a writer is
 * batches of them are being written now (journal.c, GROUP COMMIT). */
struct jqueue {
  pthread_mutex_t lock;             /* guards head, busy, its copies' done */
  struct jq_entry *head;            /* by log position */
  int busy;                         /* batches being written */
  uint64_t lat_ns;                  /* how long its batch writes take
                                       (moving average) */
  pthread_cond_t written;           /* a batch of this member ended */
};

/* The journal's runtime state (journal.c owns it). */
struct journal {
  pthread_rwlock_t gate;            /* shared: a journaled write in flight;
                                       exclusive: a checkpoint */
  pthread_mutex_t lock;             /* guards head */
  uint64_t head[SB_MAX_MEMBERS];    /* next free byte of each member's log */
  struct jqueue q[SB_MAX_MEMBERS];
  _Atomic uint64_t seq_next;
  _Atomic uint64_t intent_bytes;    /* what the intents since the last
                                       checkpoint name of each member (rows
                                       x chunk, a row named twice counted
                                       twice): a replay's resync (REPLAY
                                       BOUND in journal.c) */
  /* At the last checkpoint (both written there, with the gate held
   * exclusively and the state lock): */
  uint64_t roles_left_seen;         /* a->roles_left (JOINS, PLACEMENT) */
  uint64_t stable_slots;            /* member slots in sync (PLACEMENT) */
};

/* Rows to make consistent again after a crash (replay's intents): supplied
 * by the caller, who owns the stripe engine. */
typedef int (*journal_resync_fn) (struct raid_array *a, const struct layout *L,
                                  uint64_t row, uint64_t rows);

/* Whether the array's policy is the journal and its area can hold it. */
bool journal_usable (const struct raid_array *a);
void journal_init (struct raid_array *a);
void journal_fini (struct raid_array *a);

/* Perform a group's writes journaled (consistency.c): the units are cut into
 * records that fit the limits and share a placement; each record is
 * durable (FUA, its copies where PLACEMENT in journal.c says) before its
 * in-place writes start, and the journal gate is held shared until they
 * are done.  A failed log copy sets
 * *failed (its member was reported): the caller redoes the group. */
int journal_write (struct raid_array *a, const struct layout *L,
                   const struct write_batch *g, write_issue_fn issue, void *ctx,
                   uint32_t *failed);

/* After a client's flush: checkpoint when a replay after a crash now would
 * resync JOURNAL_REPLAY_BOUND or more of each member before the array
 * serves (REPLAY BOUND in journal.c); 0 when none was due.  The caller
 * holds no lock of a write (the checkpoint waits for writes in flight). */
#define JOURNAL_REPLAY_BOUND (16ull << 20)
int journal_bound_replay (struct raid_array *a);

/* Whether a member may take a role only after a checkpoint: one left a
 * role since the last (a->roles_left moved; JOINS in journal.c).  State
 * lock held, or a hint that the holder of it re-checks. */
bool journal_join_due (struct raid_array *a);

/* Flush every member and start a new epoch: every record becomes obsolete.
 * Waits for in-flight journaled writes (bounded by their I/O).  update(a,
 * arg), when given, changes a->sb (state lock held) before the
 * checkpoint's commit, so that one durable record both empties the log and
 * carries the update (a reshape position: records of the moved window must
 * never be replayed into the old layout once the new position is
 * durable). */
int journal_checkpoint (struct raid_array *a,
                        void (*update) (struct raid_array *a, void *arg), void *arg);

/* Apply every valid record after the last checkpoint, in order, then have
 * resync() make every intent's rows consistent, then checkpoint.
 * *napplied receives the number of records applied.  A record that breaks
 * a validation rule (journal.c) is skipped like a torn one and logged with
 * the member, its offset and the reason.  A member whose log cannot be
 * read is failed, or, when the array cannot do without it, the replay
 * stops having changed nothing (EIO) unless force (its records skipped). */
int journal_replay (struct raid_array *a, journal_resync_fn resync, bool force, int *napplied,
                    char *err, size_t errlen);

/* ---- Reading a log without an array (replay, nbdraid examine, fuzzing) */

/* What records are checked against: the record naming the log (array
 * uuid, epoch, first live seq) and the layouts a record may name (next
 * NULL when there is no reshape).  Both must outlive the view. */
struct journal_view {
  const uint8_t *uuid;                     /* the array's */
  uint64_t epoch, seq;                     /* journal_epoch, journal_seq */
  const struct layout *L[2];               /* [LAYOUT_CUR], [LAYOUT_NEXT] */
};
/* The view of the log sb names (sb must outlive it). */
void journal_view_init (struct journal_view *v, const struct raid_sb *sb,
                        const struct layout *cur, const struct layout *next);

/* Called for each record of the view's log found at byte pos of the area:
 * rec is the record when it is valid (to be replayed), else NULL with kind
 * "torn" (a checksum fails) or "invalid" (intact, but a field breaks a
 * rule) and why naming it.  A nonzero return stops the scan. */
typedef int (*journal_record_fn) (void *arg, uint64_t pos, uint8_t *rec,
                                  const char *kind, const char *why);

/* Scan one member's consistency area (area: its size bytes, as read; the
 * scan may modify and restore bytes of it) for the view's records, in
 * order of position, trying every 512-byte boundary.  Returns 0 or the
 * first nonzero value of fn. */
int journal_scan (const struct journal_view *v, uint8_t *area, uint64_t size,
                  journal_record_fn fn, void *arg);

/* A member back from being away (missed.h, O): the rows of L, the
 * current layout, in which its own log holds a valid record of the log
 * its own newest record names (the array's uuid; that record's
 * journal_epoch and journal_seq) carrying the block of its role where that
 * block is the row's parity: fn (arg, row) for each, in log order, a row
 * possibly more than once (REJOIN, journal.c).  Reads its log area [off,
 * off + size).  0, the member's read error, ENOMEM, or the first nonzero
 * value of fn.  The type of missed_log_fn. */
int journal_parity_rows (struct member *m, const uint8_t *uuid, uint64_t epoch,
                         uint64_t seq, const struct layout *L, uint64_t off,
                         uint64_t size, int role, int (*fn) (void *arg, uint64_t row),
                         void *arg);

#endif
