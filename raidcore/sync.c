/* nbdkit-raid: background sync actions — recovery onto a spare, check and
 * repair — run by one thread per array.
 *
 * STATE MACHINE (struct sync_ctl, changed only under sync.lock, every change
 * broadcast on sync.changed):
 *
 *     IDLE --begin--> ACTION (running) --rows done--> IDLE
 *                       |  ^
 *                freeze |  | start
 *                       v  |
 *                     ACTION (frozen) --abort (check/repair)--> IDLE
 *
 * The thread sleeps on sync.changed while the action is IDLE or frozen; it
 * is woken by sync_begin, start, freeze, abort and stop.  While running it
 * does one bounded batch of rows at a time (stripe_rebuild_rows /
 * stripe_check_rows, each under the rows' stripe locks), never holding
 * sync.lock across member I/O, and re-reads the state between batches, so
 * freeze/abort/stop take effect after at most one batch.  Throttling sleeps
 * are timed waits on sync.changed: a state change cuts them short.
 *
 * Durability: progress is checkpointed into the superblock journal about
 * once a second and at the end: recovery as the target member's
 * recovery_offset (rows below it are rebuilt), check/repair as the array's
 * sync_action/sync_position.  After a crash the action resumes from the
 * last checkpoint; redoing rows between the checkpoint and the crash is
 * harmless (rebuild rewrites the same reconstruction; check recounts).
 *
 * Recovery invariant: rows below a->rb_row are valid on the target; the
 * cursor only moves forward and only while the rows it passes are locked
 * (stripe_rebuild_rows), so writers see a consistent answer per row.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array-int.h"
#include "bitmap.h"
#include "util.h"

#define BATCH_BYTES (4u << 20)            /* per member per batch */
#define CKPT_INTERVAL_NS 1000000000ull
#define FG_ACTIVE_NS 200000000ull         /* foreground I/O this recent is active */
#define BITMAP_CLEAN_NS 5000000000ull     /* the bitmap cleaner's period */

const char *
raid_sync_action_name (enum raid_sync_action a)
{
  static const char *names[] = {
    "idle", "frozen", "resync", "recover", "check", "repair", "reshape",
  };
  return a >= 0 && a <= RAID_SYNC_RESHAPE ? names[a] : "unknown";
}

void
sync_init (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;
  pthread_condattr_t ca;

  pthread_mutex_init (&s->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&s->changed, &ca);
  pthread_condattr_destroy (&ca);
  s->action = RAID_SYNC_IDLE;
  s->speed_min = SYNC_SPEED_MIN_DEFAULT;
  s->speed_max = SYNC_SPEED_MAX_DEFAULT;
  s->target_slot = s->target_role = -1;
}

/* Timed wait on `changed` (caller holds lock): returns after ns or a change. */
static void
timed_wait (struct sync_ctl *s, uint64_t ns)
{
  struct timespec ts;
  uint64_t t;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  t = (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
  ts.tv_sec = t / 1000000000;
  ts.tv_nsec = t % 1000000000;
  pthread_cond_timedwait (&s->changed, &s->lock, &ts);
}

/* Rows per batch: BATCH_BYTES of each member, fewer under a low speed
 * limit (step_bytes of the action's unit) so that pauses stay short. */
static uint64_t
rows_per_batch (const struct raid_array *a, uint64_t unit)
{
  uint64_t n = BATCH_BYTES / a->cur.g.chunk;

  if (a->sync.step_bytes)
    n = raid_min_u64 (n, a->sync.step_bytes / unit);
  return raid_max_u64 (1, n);
}

/* ---- checkpoints and completion (take sb_lock; never under sync.lock) ---- */

static void
checkpoint (struct raid_array *a, int action, int target, uint64_t pos, uint64_t mism)
{
  if (action == RAID_SYNC_RESHAPE)
    return;                            /* every reshape step is a checkpoint */
  pthread_mutex_lock (&a->sb_lock);
  if (action == RAID_SYNC_RECOVER && a->sync.replace) {
    pthread_mutex_unlock (&a->sb_lock);
    return;                            /* a replace restarts after a crash */
  }
  if (action == RAID_SYNC_RECOVER) {
    if (atomic_load (&a->mem[target].state) == RAID_MEMBER_REBUILDING)
      a->sb.members[target].recovery_offset = pos;
  }
  else if (action == RAID_SYNC_RESYNC)
    a->sb.resync_offset = pos;
  else {
    a->sb.sync_action = action == RAID_SYNC_REPAIR ? SB_SYNC_REPAIR : SB_SYNC_CHECK;
    a->sb.sync_position = pos;
    a->sb.mismatch_count = mism;
  }
  array_commit (a);
  pthread_mutex_unlock (&a->sb_lock);
}

static void
finish (struct raid_array *a, int action, int target, uint64_t mism)
{
  if (action == RAID_SYNC_RECOVER && a->sync.replace) {
    replace_finish (a);
    return;
  }
  if (action == RAID_SYNC_RESHAPE) {
    int err = reshape_finish (a);
    if (err)
      raid_log (RAID_LOG_ERROR, "reshape could not complete: %s", raid_strerror (err));
    return;
  }
  pthread_mutex_lock (&a->sb_lock);
  if (action == RAID_SYNC_RECOVER) {
    if (atomic_load (&a->mem[target].state) == RAID_MEMBER_REBUILDING) {
      a->sb.members[target].state = SB_MEMBER_IN_SYNC;
      a->sb.members[target].recovery_offset = 0;
      atomic_store (&a->mem[target].state, RAID_MEMBER_IN_SYNC);
      raid_log (RAID_LOG_INFO, "recovery of %s complete", member_spec (a->mem[target].m));
    }
  }
  else if (action == RAID_SYNC_RESYNC) {
    a->sb.resync_offset = UINT64_MAX;
    a->sb.flags &= ~SB_FLAG_RESYNC_ALL;
    raid_log (RAID_LOG_INFO, "resync complete");
  }
  else {
    a->sb.sync_action = SB_SYNC_NONE;
    a->sb.sync_position = 0;
    a->sb.mismatch_count = mism;
    raid_log (RAID_LOG_INFO, "%s complete: %" PRIu64 " mismatches",
              raid_sync_action_name (action), mism);
  }
  array_update_health (a);
  array_commit (a);
  pthread_mutex_unlock (&a->sb_lock);
}

/* ---- one batch ---- */

/* Whether the owed resync must visit every row (clients change sb.flags
 * too: read it under sb_lock). */
static bool
resync_all (struct raid_array *a)
{
  bool all;

  pthread_mutex_lock (&a->sb_lock);
  all = a->sb.flags & SB_FLAG_RESYNC_ALL;
  pthread_mutex_unlock (&a->sb_lock);
  return all;
}

static int
do_batch (struct raid_array *a, int action, int role, uint64_t *pos,
          uint64_t total, uint64_t *mism)
{
  const struct layout *L = &a->cur;
  uint64_t unit = action == RAID_SYNC_RECOVER ? L->g.chunk : L->g.stripe_width;

  if (action == RAID_SYNC_RESHAPE)         /* all moved: only the finish is left */
    return *pos >= total ? 0 : reshape_step (a, pos, &a->sync.rbuf);
  uint64_t r0 = *pos / unit;
  uint64_t n = raid_min_u64 (rows_per_batch (a, unit), (total - *pos + unit - 1) / unit);
  int err;

  if (action == RAID_SYNC_RESYNC && bitmap_enabled (a) && !resync_all (a)) {
    /* Only regions the bitmap marks can be inconsistent: skip clean ones. */
    uint64_t rpr = bitmap_rows_per_region (a);
    while (r0 < L->rows && !bitmap_row_dirty (a, r0))
      r0 = (r0 / rpr + 1) * rpr;
    if (r0 >= L->rows) {
      *pos = total;
      return 0;
    }
    n = raid_min_u64 (raid_min_u64 (n, (r0 / rpr + 1) * rpr - r0), L->rows - r0);
  }
  if (action == RAID_SYNC_RECOVER && a->sync.replace)
    err = stripe_copy_rows (a, L, r0, n, role, a->mem[a->repl_slot].m, &a->rb_row);
  else if (action == RAID_SYNC_RECOVER)
    err = stripe_rebuild_rows (a, L, r0, n, role, &a->rb_row);
  else if (action == RAID_SYNC_RESYNC) {
    uint64_t ignored = 0;              /* resync rewrites parity, counts nothing */
    err = stripe_check_rows (a, L, r0, n, true, &ignored);
  }
  else
    err = stripe_check_rows (a, L, r0, n, action == RAID_SYNC_REPAIR, mism);
  if (err == 0)
    *pos = raid_min_u64 (total, (r0 + n) * unit);
  return err;
}

/* How long to pause after a batch of `bytes` that took `ns` (caller holds
 * sync.lock).  speed_max is a hard cap whether or not clients are busy;
 * while they are, the action also yields half its time unless that would
 * take it below speed_min.  The pause is a timed wait that any state
 * change (set, freeze, stop) cuts short. */
static uint64_t
throttle_ns (struct raid_array *a, uint64_t bytes, uint64_t ns)
{
  struct sync_ctl *s = &a->sync;
  uint64_t now = raid_now_mono_ns ();
  bool fg = now - atomic_load (&a->fg_ns) < FG_ACTIVE_NS;
  uint64_t limit = s->speed_max;
  uint64_t want = 0;

  if (fg && s->speed_min && (!limit || s->speed_min < limit)) {
    uint64_t floor_ns = bytes * 1000000000ull / s->speed_min;
    want = raid_min_u64 (ns, floor_ns > ns ? floor_ns - ns : 0);
    want = raid_min_u64 (want, 100000000ull);
  }
  if (limit) {
    uint64_t cap_ns = bytes * 1000000000ull / limit;
    if (cap_ns > ns)
      want = raid_max_u64 (want, raid_min_u64 (cap_ns - ns, 60000000000ull));
  }
  return want;
}

static void *
sync_thread (void *arg)
{
  struct raid_array *a = arg;
  struct sync_ctl *s = &a->sync;

  pthread_mutex_lock (&s->lock);
  while (!s->stop) {
    int action, role, target, err;
    uint64_t pos, total, mism, t0, ns, bytes, wall;

    if (s->action == RAID_SYNC_IDLE || s->frozen) {
      if (!bitmap_enabled (a) || s->action == RAID_SYNC_RESYNC) {
        pthread_cond_wait (&s->changed, &s->lock);   /* woken by begin/start/stop */
        continue;
      }
      /* Idle with a bitmap: clean it every BITMAP_CLEAN_NS (or on a change). */
      timed_wait (s, BITMAP_CLEAN_NS);
      if (s->stop || (s->action != RAID_SYNC_IDLE && !s->frozen))
        continue;
      pthread_mutex_unlock (&s->lock);
      bitmap_clean (a, false);
      pthread_mutex_lock (&s->lock);
      continue;
    }
    action = s->action; role = s->target_role; target = s->target_slot;
    pos = s->pos; total = s->total; mism = s->mismatch;
    s->step_bytes = s->speed_max / 2;
    s->busy = true;
    pthread_mutex_unlock (&s->lock);

    t0 = raid_now_mono_ns ();
    err = do_batch (a, action, role, &pos, total, &mism);
    ns = raid_now_mono_ns () - t0;
    if (s->last_ns == 0 || t0 - s->last_ns > 10ull * 1000000000)
      s->last_ns = t0;
    wall = raid_now_mono_ns () - s->last_ns;   /* includes throttle pauses */
    s->last_ns = raid_now_mono_ns ();

    pthread_mutex_lock (&s->lock);
    s->busy = false;
    pthread_cond_broadcast (&s->changed);   /* a freeze may wait for this */
    if (s->action != action || s->target_slot != target) {
      continue;                         /* cancelled meanwhile */
    }
    if (err) {
      raid_log (RAID_LOG_ERROR, "%s stopped at %" PRIu64 ": %s",
                raid_sync_action_name (action), pos, raid_strerror (err));
      if (s->replace) {
        pthread_mutex_unlock (&s->lock);
        replace_cancel (a, true);        /* the source failed: recover instead */
        pthread_mutex_lock (&s->lock);
        continue;
      }
      s->action = RAID_SYNC_IDLE;
      pthread_cond_broadcast (&s->changed);
      continue;
    }
    bytes = pos - s->pos;
    s->rate = s->rate ? (s->rate * 3 + bytes * 1000000000ull / (wall ? wall : 1)) / 4
      : bytes * 1000000000ull / (wall ? wall : 1);
    s->pos = pos;
    s->mismatch = mism;
    if (pos >= total || raid_now_mono_ns () - s->ckpt_ns > CKPT_INTERVAL_NS) {
      s->ckpt_ns = raid_now_mono_ns ();
      pthread_mutex_unlock (&s->lock);
      if (pos >= total)
        finish (a, action, target, mism);
      else
        checkpoint (a, action, target, pos, mism);
      pthread_mutex_lock (&s->lock);
      if (pos >= total && s->action == action) {
        s->action = RAID_SYNC_IDLE;
        s->target_slot = s->target_role = -1;
        if (action == RAID_SYNC_RESHAPE && !atomic_load (&a->reshaping)) {
          /* A resync (or a recovery onto a member the reshape freed) owed
           * since before the reshape runs now, on the new layout. */
          pthread_mutex_unlock (&s->lock);
          array_resume_actions (a);
          pthread_mutex_lock (&s->lock);
        }
        pthread_cond_broadcast (&s->changed);
        continue;
      }
    }
    if (action == RAID_SYNC_RESHAPE && a->test.reshape_pause) {
      s->frozen = true;                 /* test hook: a pause, not recorded */
      pthread_cond_broadcast (&s->changed);
      continue;
    }
    ns = throttle_ns (a, bytes, ns);
    if (ns)
      timed_wait (s, ns);              /* cut short by any state change */
  }
  pthread_mutex_unlock (&s->lock);
  free (s->rbuf);
  s->rbuf = NULL;
  return NULL;
}

int
sync_thread_start (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  if (s->started)
    return 0;
  if (pthread_create (&s->thread, NULL, sync_thread, a) != 0)
    return -1;
  s->started = true;
  return 0;
}

void
sync_thread_stop (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  if (!s->started)
    return;
  pthread_mutex_lock (&s->lock);
  s->stop = true;
  pthread_cond_broadcast (&s->changed);
  pthread_mutex_unlock (&s->lock);
  pthread_join (s->thread, NULL);
  s->started = false;
}

/* Total bytes of an action's unit: member bytes for recovery, array data
 * bytes of whole rows for check/repair. */
static uint64_t
action_total (const struct raid_array *a, int action)
{
  uint64_t W = a->cur.g.stripe_width;

  if (action == RAID_SYNC_RESHAPE)
    return a->sb.array_size;
  if (action == RAID_SYNC_RECOVER)
    return a->cur.rows * a->cur.g.chunk;
  /* check, repair, resync: the rows holding exported bytes.  Rows past the
   * size hold nothing (a reshape that kept the data disks leaves old bytes
   * there); resize zeroes them before it exports them. */
  return raid_min_u64 (a->cur.rows, (a->size + W - 1) / W) * W;
}

int
sync_begin (struct raid_array *a, int action, int target_slot, int target_role,
            uint64_t from, bool frozen, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;

  pthread_mutex_lock (&s->lock);
  if (s->action != RAID_SYNC_IDLE) {
    snprintf (err, errlen, "%s is %s: wait for it, or freeze/abort it first",
              raid_sync_action_name (s->action), s->frozen ? "frozen" : "running");
    pthread_mutex_unlock (&s->lock);
    return EBUSY;
  }
  s->action = action;
  s->frozen = frozen;                  /* one transition: never runs in between */
  s->replace = false;
  s->target_slot = target_slot;
  s->target_role = target_role;
  s->total = action_total (a, action);
  s->pos = raid_min_u64 (from, s->total);
  s->rate = 0;
  s->last_ns = 0;
  s->ckpt_ns = raid_now_mono_ns ();
  if (action != RAID_SYNC_RECOVER && from == 0)
    s->mismatch = 0;
  pthread_cond_broadcast (&s->changed);
  pthread_mutex_unlock (&s->lock);
  return 0;
}

void
sync_cancel_target (struct raid_array *a, int t)
{
  struct sync_ctl *s = &a->sync;

  pthread_mutex_lock (&s->lock);
  if (s->action == RAID_SYNC_RECOVER && s->target_slot == t) {
    raid_log (RAID_LOG_ERROR, "%s stopped: its target failed",
              s->replace ? "replace" : "recovery");
    if (s->replace)
      atomic_store (&a->repl_role, -1);    /* stop duplicating writes to it */
    s->replace = false;
    s->action = RAID_SYNC_IDLE;
    s->target_slot = s->target_role = -1;
    pthread_cond_broadcast (&s->changed);
  }
  pthread_mutex_unlock (&s->lock);
}

/* ---- control operations ---- */

int
raid_array_check (struct raid_array *a, bool repair, char *err, size_t errlen)
{
  if (a->cur.g.level < 4) {
    snprintf (err, errlen, "raid%d has no parity to check", a->cur.g.level);
    return EINVAL;
  }
  if (raid_array_health (a) != RAID_HEALTH_OPTIMAL) {
    snprintf (err, errlen, "array is %s: nothing to compare parity with",
              raid_health_name (raid_array_health (a)));
    return EBUSY;
  }
  return sync_begin (a, repair ? RAID_SYNC_REPAIR : RAID_SYNC_CHECK, -1, -1, 0,
                     false, err, errlen);
}

int
raid_array_set_speed (struct raid_array *a, const uint64_t *min, const uint64_t *max,
                      char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  uint64_t nmin, nmax;

  pthread_mutex_lock (&s->lock);
  nmin = min ? *min : s->speed_min;
  nmax = max ? *max : s->speed_max;
  if (!min && nmax && nmin > nmax)
    nmin = nmax;                         /* a lower limit alone lowers the floor */
  if (nmax && nmin > nmax) {
    pthread_mutex_unlock (&s->lock);
    snprintf (err, errlen, "speed_min (%" PRIu64 ") is above speed_max (%" PRIu64 ")",
              nmin, nmax);
    return EINVAL;
  }
  s->speed_min = nmin;
  s->speed_max = nmax;
  pthread_cond_broadcast (&s->changed);
  pthread_mutex_unlock (&s->lock);
  return 0;
}

int
raid_array_wait (struct raid_array *a, double timeout_s)
{
  struct sync_ctl *s = &a->sync;
  uint64_t deadline = raid_now_mono_ns () + (uint64_t) (timeout_s * 1e9);

  pthread_mutex_lock (&s->lock);
  while (s->action != RAID_SYNC_IDLE && !s->frozen && !s->stop) {
    uint64_t now = raid_now_mono_ns ();
    if (now >= deadline)
      break;
    timed_wait (s, deadline - now);   /* woken by any state change */
  }
  pthread_mutex_unlock (&s->lock);
  return 0;
}

int
raid_array_freeze (struct raid_array *a, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  int action, target;
  uint64_t pos, mism;

  pthread_mutex_lock (&s->lock);
  if (s->action == RAID_SYNC_IDLE) {
    pthread_mutex_unlock (&s->lock);
    snprintf (err, errlen, "no action is running");
    return EINVAL;
  }
  s->frozen = true;
  pthread_cond_broadcast (&s->changed);
  while (s->busy)
    pthread_cond_wait (&s->changed, &s->lock);  /* the worker ends its batch */
  action = s->action; target = s->target_slot; pos = s->pos; mism = s->mismatch;
  pthread_mutex_unlock (&s->lock);
  if (action == RAID_SYNC_RESHAPE)
    reshape_set_state (a, false);             /* its position is durable already */
  else
    checkpoint (a, action, target, pos, mism);  /* durable position */
  return 0;
}

int
raid_array_start_action (struct raid_array *a, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;

  pthread_mutex_lock (&s->lock);
  if (s->action == RAID_SYNC_IDLE || !s->frozen) {
    pthread_mutex_unlock (&s->lock);
    snprintf (err, errlen, s->action == RAID_SYNC_IDLE
              ? "nothing is prepared or frozen to start" : "already running");
    return s->action == RAID_SYNC_IDLE ? EINVAL : EBUSY;
  }
  if (s->action == RAID_SYNC_RESHAPE) {
    int r;
    pthread_mutex_unlock (&s->lock);
    if ((r = reshape_check_start (a, err, errlen)) != 0)
      return r;
    reshape_set_state (a, true);               /* durable before data moves */
    pthread_mutex_lock (&s->lock);
  }
  s->frozen = false;
  pthread_cond_broadcast (&s->changed);
  pthread_mutex_unlock (&s->lock);
  return 0;
}

int
raid_array_abort (struct raid_array *a, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  int action;
  uint64_t mism;

  pthread_mutex_lock (&s->lock);
  action = s->action;
  if (action == RAID_SYNC_RESHAPE) {
    int r;
    if (!s->frozen) {
      pthread_mutex_unlock (&s->lock);
      snprintf (err, errlen, "the reshape is running: freeze it first");
      return EBUSY;
    }
    pthread_mutex_unlock (&s->lock);
    if ((r = reshape_abort (a, err, errlen)) != 0)
      return r;
    pthread_mutex_lock (&s->lock);
    s->action = RAID_SYNC_IDLE;
    s->frozen = false;
    pthread_cond_broadcast (&s->changed);
    pthread_mutex_unlock (&s->lock);
    return 0;
  }
  if (action != RAID_SYNC_CHECK && action != RAID_SYNC_REPAIR) {
    pthread_mutex_unlock (&s->lock);
    snprintf (err, errlen, action == RAID_SYNC_IDLE ? "nothing to abort"
              : "%s cannot be aborted (freeze it instead)",
              raid_sync_action_name (action));
    return action == RAID_SYNC_IDLE ? EINVAL : EBUSY;
  }
  mism = s->mismatch;
  s->action = RAID_SYNC_IDLE;
  s->frozen = false;
  pthread_cond_broadcast (&s->changed);
  pthread_mutex_unlock (&s->lock);
  pthread_mutex_lock (&a->sb_lock);
  a->sb.sync_action = SB_SYNC_NONE;
  a->sb.sync_position = 0;
  a->sb.mismatch_count = mism;
  array_commit (a);
  pthread_mutex_unlock (&a->sb_lock);
  return 0;
}
