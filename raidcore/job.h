/* nbdkit-raid: background jobs — one at a time, as a state machine.
 *
 * THEORY
 *
 * What it owns.  The job the worker (sync.h) runs, one at a time: a resync, a
 * recovery onto a spare, a replace, a check, a repair, or a reshape.  Each
 * kind of job is a struct sync_ops (an ops table: how big it is, one
 * bounded batch, a durable checkpoint, the finish), so the worker never
 * branches on the kind of job.
 *
 * State machine.  struct sync_ctl.state is an enum changed only by
 * sync_transition, under the array's state lock, with every change
 * broadcast on a->changed:
 *
 *       IDLE --begin--> RUNNING --done / cancel / abort--> IDLE
 *        |                |  ^
 *        | begin frozen   |  | start
 *        v     freeze, fail v  |
 *       FROZEN <------------+--+ --abort / cancel--> IDLE
 *
 * fail (a batch that cannot go on) freezes the job with the reason, which
 * status shows, and records it frozen; nothing retries it by itself (so no
 * failing job can loop): `start` retries it, `abort` ends an abortable
 * one, and a change that makes it pointless (its target failed or was
 * removed) cancels it.
 *
 * Who may change it.  The management path (manage.h, under the management
 * lock) begins, starts, freezes and aborts jobs; the worker moves its own job
 * to done, cancel and fail.  A job is begun only under the management lock,
 * so management requests that validated "nothing runs" cannot be overtaken.
 * The worker picks the next job by itself (sync_next_job in sync.h: a rebuild owed,
 * a spare waiting for a failed role, an owed resync, a scrub to resume)
 * whenever it is idle and the array state changed — a spare added while
 * another job runs is thus used when that job ends, never dropped.
 *
 * The worker (sync.h) runs the job's batches; while it is inside one,
 * `busy` is set, and a freeze waits for it to clear (sync_wait_batch, a
 * wait on a->changed bounded by one batch).
 *
 * Crash safety.  Each job checkpoints its position durably (about once a
 * second, at a freeze, at the end; every reshape step is itself a
 * checkpoint); after a crash the job is found in the record and resumed from
 * there (redoing rows between the checkpoint and the crash is harmless: a
 * rebuild rewrites the same reconstruction, a check recounts, a reshape
 * recopies a window whose source is intact).  A replace is not resumed: its
 * target was recorded as a spare.
 */
#ifndef RAIDCORE_JOB_H
#define RAIDCORE_JOB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "array.h"

struct raid_array;
struct sync_job;

enum sync_state { SYNC_IDLE, SYNC_RUNNING, SYNC_FROZEN };

enum sync_event {
  SYNC_EV_BEGIN,        /* IDLE -> RUNNING */
  SYNC_EV_BEGIN_FROZEN, /* IDLE -> FROZEN */
  SYNC_EV_START,        /* FROZEN -> RUNNING */
  SYNC_EV_FREEZE,       /* RUNNING -> FROZEN */
  SYNC_EV_PAUSE,        /* RUNNING -> FROZEN, test hook: not recorded */
  SYNC_EV_DONE,         /* RUNNING -> IDLE */
  SYNC_EV_FAIL,         /* RUNNING|FROZEN -> FROZEN, with the reason */
  SYNC_EV_CANCEL,       /* RUNNING|FROZEN -> IDLE: the job lost its purpose */
  SYNC_EV_ABORT,        /* RUNNING|FROZEN -> IDLE: by request */
};

/* Outcome of a job's validity check before each batch. */
enum sync_check { SYNC_GO, SYNC_STOP_CANCEL, SYNC_STOP_FAIL };

/* The sync worker's buffer (sync_ops.batch). */
struct sync_scratch {
  void *p;
  size_t cap;                     /* bytes at p */
};

struct sync_ops {
  enum raid_sync_action action;
  bool abortable;                 /* `abort` may end it */
  uint64_t unit_bytes;            /* 0: array bytes; else per-member bytes */
  /* Bytes the job covers (state lock held). */
  uint64_t (*total) (struct raid_array *a, const struct sync_job *j);
  /* For a job whose work can grow while it runs: the bytes still to do
   * from where it is (state lock held).  Before each batch the worker sets
   * total = pos + left, so the job ends when nothing is left, never
   * because a count made at its start ran out.  NULL: the total is fixed
   * at the start. */
  uint64_t (*left) (struct raid_array *a, const struct sync_job *j);
  /* Can the job go on (state lock held)?  A job whose target failed is
   * cancelled; one that cannot continue at all fails (err set). */
  enum sync_check (*check) (struct raid_array *a, const struct sync_job *j,
                            char *err, size_t errlen);
  /* One bounded batch from j->pos (no lock held): advances *pos (and
   * *mismatch); 0 or an errno.  *scratch is the worker's own buffer, kept
   * between batches and jobs (empty at first; a batch that needs more
   * replaces it; freed with free() when the worker ends). */
  int (*batch) (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
                uint64_t *mismatch, struct sync_scratch *scratch);
  /* Record progress durably (state lock held; commits). */
  void (*checkpoint) (struct raid_array *a, const struct sync_job *j);
  /* Before a frozen job starts (state lock held): 0, or an errno with a
   * message when it cannot run now.  May record that it runs.  NULL: it
   * always may. */
  int (*may_start) (struct raid_array *a, const struct sync_job *j,
                    char *err, size_t errlen);
  /* Complete the job once pos == total (management lock held, state lock
   * not: it may claim the router).  On success it ends the job (event
   * DONE) in the same state-lock section that records the completion, so
   * no status shows one without the other.  0 or an errno (the job then
   * fails); ECANCELED when its check no longer passes (a member failed in
   * the finish's own I/O): the job then ends as check says, as it would
   * have before a batch. */
  int (*finish) (struct raid_array *a, const struct sync_job *j);
  /* Undo what beginning it set up, when it ends without finishing (cancel,
   * abort, fail without keep): management lock held, state lock not.  May
   * be NULL. */
  void (*stop) (struct raid_array *a, const struct sync_job *j);
};

struct sync_job {
  const struct sync_ops *ops;     /* NULL when IDLE */
  uint64_t gen;                   /* changes at every begin */
  int target_slot, target_role;   /* recovery / replace; -1 */
  int source_slot;                /* replace: the member being replaced */
  uint64_t from;                  /* rejoin: member bytes from which every
                                     row is rebuilt (below: marked rows) */
  uint64_t pos, total;            /* bytes in ops->unit */
  uint64_t mismatch;              /* check / repair */
};

struct sync_ctl {
  enum sync_state state;
  struct sync_job job;
  char error[256];                /* why a job was frozen by a failure */
  pthread_t thread;
  bool started, stop;
  bool busy;                      /* the worker is inside a batch */
  unsigned retries;               /* batches in a row that ran out of memory */
  uint64_t seen_gen;              /* a->state_gen the worker last acted on */
  uint64_t rate;                  /* bytes/s over the last closed window */
  uint64_t rate_ns, rate_pos;     /* the open window: its start, pos then */
  uint64_t speed_min, speed_max;  /* bytes/s; max 0 = unlimited */
  uint64_t step_bytes;            /* wanted step: speed_max / 2 (0: default) */
  uint64_t ckpt_ns;
  int replace_role;               /* a replace the record at the start says
                                     was under way, not yet begun again or
                                     forgotten (job_note_replace); -1: none */
  uint8_t replace_uuid[RAID_UUID_LEN];   /* its spare */
  uint8_t replace_src[RAID_UUID_LEN];    /* the member it replaces (the role's
                                            holder in sync then; zero: none) */
};

#define SYNC_SPEED_MIN_DEFAULT (16u << 20)
#define SYNC_SPEED_MAX_DEFAULT 0

void job_init (struct raid_array *a);

/* The record of a replace (the `replaces` field of the member table) is
 * derived at every commit, never kept: the target of the replace job
 * (running or frozen: a job with a source slot), else the replace the
 * record at the start named, until the first job choice begins it again
 * or forgets it (replace_role: its spare and the member it replaces by
 * uuid, so neither can be mistaken for a member that took their place);
 * only on an entry that is a spare on disk, while the member it replaces
 * holds the role in sync, for a role below raid_disks, with no reshape
 * under way, so that no record breaks sb.c's rule V8.  job_note_replace
 * takes the replace the newest record names at assembly, before any
 * commit; job_record_replace fills a->sb's table before each commit
 * (state lock held). */
void job_note_replace (struct raid_array *a);
void job_record_replace (struct raid_array *a);
/* The table slots of the noted replace's spare and of the member it
 * replaces while that one still holds the role in sync (-1 each when not:
 * none noted, or gone); state lock held.  Returns the spare's. */
int job_noted_replace (struct raid_array *a, int *source);

/* The job's rate in bytes per second of wall time, throttle pauses and
 * stalls included: measured over windows of about two seconds, so one
 * fast batch never shows as the rate.  sync_rate_update after each batch
 * (state lock held); sync_rate for status: 0 when not running or not yet
 * known. */
void sync_rate_update (struct raid_array *a);
uint64_t sync_rate (const struct raid_array *a);

/* The one transition function (state lock held).  Returns 0, or EINVAL
 * when the event is not allowed in the current state (nothing changes).
 * For the BEGIN events, job describes the new job (pos/total are set
 * here: pos = from, clamped). */
int sync_transition (struct raid_array *a, enum sync_event ev,
                     const struct sync_job *job, const char *why);

/* Begin a job like tmpl (ops, targets; management lock and state lock
 * held) at position `from`, running or frozen: EBUSY with a message when
 * one exists. */
int sync_begin (struct raid_array *a, const struct sync_job *tmpl, uint64_t from,
                bool frozen, char *err, size_t errlen);

/* Wait (state lock held) until the worker is outside its batch. */
void sync_wait_batch (struct raid_array *a);

/* The sync action as status reports it (state lock held). */
enum raid_sync_action sync_status_action (const struct raid_array *a);

#endif
