/* nbdkit-raid: the sync worker and the jobs other than the reshape (theory
 * in sync.h and job.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array-int.h"
#include "missed.h"
#include "bitmap.h"
#include "consistency.h"
#include "journal.h"
#include "reshape.h"
#include "stripe.h"
#include "sync.h"
#include "util.h"

#define BATCH_BYTES (4u << 20)            /* per member per batch */
#define CKPT_INTERVAL_NS 1000000000ull
#define FG_ACTIVE_NS 200000000ull         /* client I/O this recent is active */
#define BITMAP_CLEAN_NS 5000000000ull     /* the bitmap cleaner's period */
#define SYNC_RETRIES 8                    /* ENOMEM: retries before failing */
#define RETRY_NS 50000000ull              /* first retry pause; doubles */

static const struct layout *
cur_layout (struct raid_array *a)
{
  return router_layout (&a->router, LAYOUT_CUR);
}

/* Timed wait on a->changed (state lock held): after ns or a change. */
static void
timed_wait (struct raid_array *a, uint64_t ns)
{
  struct timespec ts;
  uint64_t t;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  t = (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec + ns;
  ts.tv_sec = t / 1000000000;
  ts.tv_nsec = t % 1000000000;
  pthread_cond_timedwait (&a->changed, &a->state_lock, &ts);
}

/* ---------------------------------------------------------------------
 * Row jobs: each batch holds a router ticket over its rows (one layout:
 * these jobs never run while a reshape has two).
 */

/* Rows per batch: BATCH_BYTES of each member, fewer under a low speed
 * limit (step_bytes of the job's unit) so that pauses stay short. */
static uint64_t
rows_per_batch (struct raid_array *a, uint64_t unit)
{
  uint64_t n = BATCH_BYTES / cur_layout (a)->g.chunk;

  if (a->sync.step_bytes)
    n = raid_min_u64 (n, a->sync.step_bytes / unit);
  return raid_max_u64 (1, n);
}

/* Bytes of the rows that hold exported bytes (check, repair, resync): rows
 * past the size hold nothing, and resize zeroes them before exporting. */
static uint64_t
total_exported (struct raid_array *a, const struct sync_job *j)
{
  const struct layout *L = cur_layout (a);
  uint64_t W = L->g.stripe_width;

  (void) j;
  return raid_min_u64 (L->rows, (atomic_load (&a->size) + W - 1) / W) * W;
}

/* Member bytes of the data area (recover, replace). */
static uint64_t
total_member (struct raid_array *a, const struct sync_job *j)
{
  (void) j;
  return cur_layout (a)->rows * cur_layout (a)->g.chunk;
}

/* The rows of one batch from *pos (unit bytes per row), under a ticket. */
struct rows {
  struct ticket t;
  const struct layout *L;
  uint64_t r0, n;
};

static void
rows_enter (struct raid_array *a, uint64_t pos, uint64_t unit, uint64_t total,
            struct rows *rw)
{
  const struct layout *L = cur_layout (a);
  uint64_t W = L->g.stripe_width;

  rw->r0 = pos / unit;
  rw->n = raid_min_u64 (rows_per_batch (a, unit), (total - pos + unit - 1) / unit);
  router_enter (&a->router, rw->r0 * W, rw->n * W, &rw->t);
  rw->L = rw->t.p[0].L;
}

static void
rows_leave (struct raid_array *a, struct rows *rw, uint64_t unit, uint64_t total,
            uint64_t *pos, int err)
{
  router_leave (&a->router, &rw->t);
  if (err == 0)
    *pos = raid_min_u64 (total, (rw->r0 + rw->n) * unit);
}

static enum sync_check
need_optimal (struct raid_array *a, const struct sync_job *j, char *err, size_t errlen)
{
  (void) j;
  if (raid_array_health (a) == RAID_HEALTH_OPTIMAL)
    return SYNC_GO;
  snprintf (err, errlen, "the array is %s", raid_health_name (raid_array_health (a)));
  return SYNC_STOP_CANCEL;
}

/* ---- resync ---- */

/* The next row from r0 that the owed resync must visit (the bitmap marks
 * its region, or every row when the record says so). */
static uint64_t
resync_next_row (struct raid_array *a, const struct layout *L, uint64_t r0)
{
  bool all;

  pthread_mutex_lock (&a->state_lock);
  all = !bitmap_enabled (a) || (a->sb.flags & SB_FLAG_RESYNC_ALL);
  pthread_mutex_unlock (&a->state_lock);
  if (all)
    return r0;
  while (r0 < L->rows && !bitmap_row_dirty (a, r0))
    r0 = (r0 / bitmap_rows_per_region (a) + 1) * bitmap_rows_per_region (a);
  return r0;
}

static int
resync_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
              uint64_t *mismatch, struct sync_scratch *scratch)
{
  uint64_t W = cur_layout (a)->g.stripe_width, ignored = 0;
  uint64_t r = resync_next_row (a, cur_layout (a), *pos / W);
  struct rows rw;
  int err;

  (void) mismatch; (void) scratch;
  if (r * W >= j->total) {
    *pos = j->total;
    return 0;
  }
  rows_enter (a, r * W, W, j->total, &rw);
  if (bitmap_enabled (a)) {                /* stay inside one region */
    uint64_t rpr = bitmap_rows_per_region (a);
    rw.n = raid_min_u64 (rw.n, (rw.r0 / rpr + 1) * rpr - rw.r0);
  }
  err = stripe_check_rows (a, rw.L, rw.r0, rw.n, true, &ignored);
  rows_leave (a, &rw, W, j->total, pos, err);
  return err;
}

static void
resync_checkpoint (struct raid_array *a, const struct sync_job *j)
{
  a->sb.resync_offset = j->pos;
  state_commit (a);
}

static int
resync_finish (struct raid_array *a, const struct sync_job *j)
{
  (void) j;
  pthread_mutex_lock (&a->state_lock);
  a->sb.resync_offset = UINT64_MAX;
  a->sb.flags &= ~SB_FLAG_RESYNC_ALL;
  state_commit (a);
  sync_transition (a, SYNC_EV_DONE, NULL, "complete");
  pthread_mutex_unlock (&a->state_lock);
  raid_log (RAID_LOG_INFO, "resync complete");
  return 0;
}

const struct sync_ops sync_ops_resync = {
  .action = RAID_SYNC_RESYNC, .total = total_exported, .check = need_optimal,
  .batch = resync_batch, .checkpoint = resync_checkpoint, .finish = resync_finish,
};

/* ---- check, repair ---- */

static int
scrub_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
             uint64_t *mismatch, struct sync_scratch *scratch)
{
  uint64_t W = cur_layout (a)->g.stripe_width;
  struct rows rw;
  int err;

  (void) scratch;
  rows_enter (a, *pos, W, j->total, &rw);
  err = stripe_check_rows (a, rw.L, rw.r0, rw.n, j->ops == &sync_ops_repair, mismatch);
  rows_leave (a, &rw, W, j->total, pos, err);
  return err;
}

static void
scrub_record (struct raid_array *a, const struct sync_job *j, bool done)
{
  a->sb.sync_action = done ? SB_SYNC_NONE
    : j->ops == &sync_ops_repair ? SB_SYNC_REPAIR : SB_SYNC_CHECK;
  a->sb.sync_position = done ? 0 : j->pos;
  a->sb.mismatch_count = j->mismatch;
  state_commit (a);
}

static void
scrub_checkpoint (struct raid_array *a, const struct sync_job *j)
{
  scrub_record (a, j, false);
}

static int
scrub_finish (struct raid_array *a, const struct sync_job *j)
{
  pthread_mutex_lock (&a->state_lock);
  scrub_record (a, j, true);
  sync_transition (a, SYNC_EV_DONE, NULL, "complete");
  pthread_mutex_unlock (&a->state_lock);
  raid_log (RAID_LOG_INFO, "%s complete: %" PRIu64 " mismatches",
            raid_sync_action_name (j->ops->action), j->mismatch);
  return 0;
}

/* A scrub that ends early (abort, or the array lost a member) is not
 * resumed. */
static void
scrub_stop (struct raid_array *a, const struct sync_job *j)
{
  pthread_mutex_lock (&a->state_lock);
  scrub_record (a, j, true);
  pthread_mutex_unlock (&a->state_lock);
}

const struct sync_ops sync_ops_check = {
  .action = RAID_SYNC_CHECK, .abortable = true, .total = total_exported,
  .check = need_optimal, .batch = scrub_batch, .checkpoint = scrub_checkpoint,
  .finish = scrub_finish, .stop = scrub_stop,
};

const struct sync_ops sync_ops_repair = {
  .action = RAID_SYNC_REPAIR, .abortable = true, .total = total_exported,
  .check = need_optimal, .batch = scrub_batch, .checkpoint = scrub_checkpoint,
  .finish = scrub_finish, .stop = scrub_stop,
};

/* ---- recovery onto a spare ---- */

static enum sync_check
recover_check (struct raid_array *a, const struct sync_job *j, char *err, size_t errlen)
{
  int t = j->target_slot;

  if (atomic_load (&a->mem[t].state) != RAID_MEMBER_REBUILDING ||
      cur_layout (a)->slot[j->target_role] != t) {
    snprintf (err, errlen, "its target %s is %s", a->mem[t].m ? member_spec (a->mem[t].m)
              : "(gone)", raid_member_state_name (atomic_load (&a->mem[t].state)));
    return SYNC_STOP_CANCEL;
  }
  if (raid_array_health (a) == RAID_HEALTH_FAILED) {
    snprintf (err, errlen, "the array has failed");
    return SYNC_STOP_FAIL;
  }
  return SYNC_GO;
}

/* One batch of rebuilding (copy false) or copying (a replace) the target's
 * role, in member bytes. */
static int
target_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos, bool copy)
{
  uint64_t chunk = cur_layout (a)->g.chunk;
  struct rows rw;
  int err;

  rows_enter (a, *pos, chunk, j->total, &rw);
  err = copy ? stripe_copy_rows (a, rw.L, rw.r0, rw.n, j->target_role,
                                 a->mem[j->target_slot].m, &a->rb_row)
    : stripe_rebuild_rows (a, rw.L, rw.r0, rw.n, j->target_role, &a->rb_row);
  rows_leave (a, &rw, chunk, j->total, pos, err);
  return err;
}

static int
recover_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
               uint64_t *mismatch, struct sync_scratch *scratch)
{
  (void) mismatch; (void) scratch;
  return target_batch (a, j, pos, false);
}

static void
recover_checkpoint (struct raid_array *a, const struct sync_job *j)
{
  if (atomic_load (&a->mem[j->target_slot].state) == RAID_MEMBER_REBUILDING) {
    a->sb.members[j->target_slot].recovery_offset = j->pos;
    state_commit (a);
  }
}

static int
recover_finish (struct raid_array *a, const struct sync_job *j)
{
  int t = j->target_slot, r = 0;

  pthread_mutex_lock (&a->state_lock);
  if (atomic_load (&a->mem[t].state) != RAID_MEMBER_REBUILDING) {
    pthread_mutex_unlock (&a->state_lock);
    return ECANCELED;                      /* it failed since the last batch */
  }
  member_transition (a, t, RAID_MEMBER_IN_SYNC, j->target_role, "recovered");
  r = state_commit (a);
  if (r == 0)
    sync_transition (a, SYNC_EV_DONE, NULL, "complete");
  pthread_mutex_unlock (&a->state_lock);
  return r;
}

const struct sync_ops sync_ops_recover = {
  .action = RAID_SYNC_RECOVER, .total = total_member, .check = recover_check,
  .batch = recover_batch, .checkpoint = recover_checkpoint, .finish = recover_finish,
};

/* ---- delta: a member that rejoins rebuilds only the rows its map of
 * missed regions marks (everything written while it was away), and every
 * row from `from` (it was being rebuilt when it left).  Rows it skips hold
 * the member's own, current data: the cursor (rb_row) may pass them,
 * because every write since it rejoined reached it too (a rebuilding role
 * is written in every row, and read only below the cursor; the first
 * batch drains the writes planned before, while it was away).  Progress
 * counts the rows rebuilt, out of the rows it needs; the map keeps being
 * marked while the delta runs (by those writes), so the rows still needed
 * are counted again from the cursor before every batch (`left`): the job
 * ends when no marked row is left ahead of the cursor.  (A total counted
 * once at the start ran out early when rows marked later ahead of the
 * cursor were rebuilt on the way, and the delta ended with regions marked
 * before it began never resynced.) ---- */

/* What is left from the cursor; at the start (cursor 0) the total. */
static uint64_t
left_delta (struct raid_array *a, const struct sync_job *j)
{
  const struct layout *L = cur_layout (a);

  return missed_rows_needed (a, j->target_slot, atomic_load (&a->rb_row),
                             j->from / L->g.chunk) * L->g.chunk;
}

/* The first row from r that the delta needs, or L->rows. */
static uint64_t
delta_next_row (struct raid_array *a, const struct sync_job *j, uint64_t r)
{
  const struct layout *L = cur_layout (a);
  uint64_t rpr = missed_rows_per_region (a, j->target_slot), from = j->from / L->g.chunk;

  while (r < L->rows && r < from && !missed_row_marked (a, j->target_slot, r))
    r = raid_min_u64 ((r / rpr + 1) * rpr, from);
  return raid_min_u64 (r, L->rows);
}

/* The end of the run of marked regions from row r (marked, below `from`):
 * one batch rebuilds consecutive marked regions together (its pipeline
 * needs rows), and no unmarked row below `from`. */
static uint64_t
marked_run (struct raid_array *a, const struct sync_job *j, uint64_t r)
{
  uint64_t rpr = missed_rows_per_region (a, j->target_slot);
  uint64_t from = j->from / cur_layout (a)->g.chunk, e = (r / rpr + 1) * rpr;

  while (e < from && missed_row_marked (a, j->target_slot, e))
    e += rpr;
  return e;                                /* rows from `from` on are all needed */
}

static int
delta_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
             uint64_t *mismatch, struct sync_scratch *scratch)
{
  const struct layout *L = cur_layout (a);
  uint64_t chunk = L->g.chunk, W = L->g.stripe_width, r, n;
  struct ticket tk;
  int err;

  (void) mismatch; (void) scratch;
  if (*pos == 0) {
    /* A write planned while the member was away leaves it out and marks
     * its map only before its member writes (after its reads): maybe
     * after the walk below passed the row.  Drain every request in flight
     * (a claim of everything, released at once): from here on each write
     * was planned with the member rebuilding, so it reaches the member. */
    router_claim (&a->router, 0, ROUTER_ALL);
    router_release (&a->router);
  }
  r = delta_next_row (a, j, atomic_load (&a->rb_row));
  atomic_store (&a->rb_row, r);            /* the rows passed are current */
  if (r >= L->rows) {
    *pos = j->total;
    return 0;
  }
  n = raid_min_u64 (rows_per_batch (a, chunk), L->rows - r);
  if (r < j->from / chunk)
    n = raid_min_u64 (n, marked_run (a, j, r) - r);   /* marked regions only */
  router_enter (&a->router, r * W, n * W, &tk);
  err = stripe_rebuild_rows (a, tk.p[0].L, r, n, j->target_role, &a->rb_row);
  router_leave (&a->router, &tk);
  if (err == 0)
    *pos = raid_min_u64 (j->total, *pos + n * chunk);
  return err;
}

/* The durable cursor: rows below it hold current data on the member. */
static void
delta_checkpoint (struct raid_array *a, const struct sync_job *j)
{
  if (atomic_load (&a->mem[j->target_slot].state) == RAID_MEMBER_REBUILDING) {
    a->sb.members[j->target_slot].recovery_offset =
      atomic_load (&a->rb_row) * cur_layout (a)->g.chunk;
    state_commit (a);
  }
}

const struct sync_ops sync_ops_rejoin = {
  .action = RAID_SYNC_RECOVER, .total = left_delta, .left = left_delta,
  .check = recover_check,
  .batch = delta_batch, .checkpoint = delta_checkpoint, .finish = recover_finish,
};

/* ---- replace: copy a working member onto a spare while both receive
 * every write (the router's mirror), then switch ---- */

static enum sync_check
replace_check (struct raid_array *a, const struct sync_job *j, char *err, size_t errlen)
{
  int t = j->target_slot, s = j->source_slot;

  if (atomic_load (&a->mem[t].state) != RAID_MEMBER_REBUILDING) {
    snprintf (err, errlen, "its target %s is %s", member_spec (a->mem[t].m),
              raid_member_state_name (atomic_load (&a->mem[t].state)));
    return SYNC_STOP_CANCEL;
  }
  if (atomic_load (&a->mem[s].state) != RAID_MEMBER_IN_SYNC) {
    snprintf (err, errlen, "the member it replaces failed: recovering role %d onto "
              "%s instead", j->target_role, member_spec (a->mem[t].m));
    return SYNC_STOP_CANCEL;               /* replace_stop turns it into a recovery */
  }
  return SYNC_GO;
}

static int
replace_batch (struct raid_array *a, const struct sync_job *j, uint64_t *pos,
               uint64_t *mismatch, struct sync_scratch *scratch)
{
  (void) mismatch; (void) scratch;
  return target_batch (a, j, pos, true);
}

/* A replace begins again from the start after a restart (the target's
 * entry says it was under way): the rows below the cursor may lack a
 * write whose journal record is replayed only to the role's members. */
static void
replace_checkpoint (struct raid_array *a, const struct sync_job *j)
{
  (void) a; (void) j;
}

/* The target takes the role (state lock and a claim over everything held):
 * in sync when the copy is complete, else rebuilding from the cursor.  The
 * target's state changes before the source leaves: each transition
 * recomputes the health, which requests read without waiting for the
 * claim, so a role bound to a target not yet in sync would make a
 * degraded array look failed for that moment (a client write then got
 * EIO: stress seed 830421078). */
static void
replace_switch (struct raid_array *a, const struct sync_job *j, bool complete)
{
  int t = j->target_slot, s = j->source_slot, role = j->target_role;

  router_bind_role (&a->router, LAYOUT_CUR, role, t, a->sb.members[t].data_offset);
  router_set_mirror (&a->router, role, -1);
  member_transition (a, t, complete ? RAID_MEMBER_IN_SYNC : RAID_MEMBER_REBUILDING,
                     role, complete ? "replace complete" : "replace became a recovery");
  if (atomic_load (&a->mem[s].state) == RAID_MEMBER_IN_SYNC)
    member_transition (a, s, RAID_MEMBER_FAULTY, role, "replaced");
  member_detach (a, s);
  if (complete)
    member_uninstall (a, s);               /* retired: no longer listed */
  if (!complete)
    a->sb.members[t].recovery_offset = atomic_load (&a->rb_row) * cur_layout (a)->g.chunk;
  state_commit (a);
}

static int
replace_finish (struct raid_array *a, const struct sync_job *j)
{
  int err;

  router_claim (&a->router, 0, ROUTER_ALL);
  if ((err = cons_checkpoint (a, NULL, NULL)) != 0) {   /* PLACEMENT (journal.c):
                                                           the retired member's records */
    router_release (&a->router);
    return err;                            /* the job stops; start retries it */
  }
  pthread_mutex_lock (&a->state_lock);
  if (atomic_load (&a->mem[j->target_slot].state) != RAID_MEMBER_REBUILDING) {
    pthread_mutex_unlock (&a->state_lock); /* it failed since the last batch (the
                                              checkpoint flushed it): no switch */
    router_release (&a->router);
    return ECANCELED;
  }
  replace_switch (a, j, true);
  sync_transition (a, SYNC_EV_DONE, NULL, "complete");
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
  return 0;
}

/* Ended early: stop mirroring; if the member being replaced failed, the
 * copy so far is good, so the target takes the role and a recovery goes on
 * from the cursor (after a checkpoint: when that fails, the role is
 * recovered afresh later); else the target is a spare again. */
static void
replace_stop (struct raid_array *a, const struct sync_job *j)
{
  int t = j->target_slot, s = j->source_slot, ckpt;
  bool recover;
  char e[128];

  router_claim (&a->router, 0, ROUTER_ALL);
  ckpt = cons_checkpoint (a, NULL, NULL);  /* before the target takes the role */
  pthread_mutex_lock (&a->state_lock);
  recover = ckpt == 0 && atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING &&
    atomic_load (&a->mem[s].state) == RAID_MEMBER_FAULTY;
  if (recover)
    replace_switch (a, j, false);
  else {
    router_set_mirror (&a->router, j->target_role, -1);
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING)
      member_transition (a, t, RAID_MEMBER_SPARE, -1, "replace stopped");
    state_commit (a);
  }
  if (recover)
    sync_begin (a, &(struct sync_job) { .ops = &sync_ops_recover, .target_slot = t,
                  .target_role = j->target_role, .source_slot = -1 },
                atomic_load (&a->rb_row) * cur_layout (a)->g.chunk, false, e, sizeof e);
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
}

const struct sync_ops sync_ops_replace = {
  .action = RAID_SYNC_RECOVER, .abortable = true, .total = total_member,
  .check = replace_check, .batch = replace_batch, .checkpoint = replace_checkpoint,
  .finish = replace_finish, .stop = replace_stop,
};

int
sync_begin_replace (struct raid_array *a, int t, int s, char *err, size_t errlen)
{
  int role = a->sb.members[t].role, r;

  a->sb.members[s].data_offset = a->sb.members[s].new_data_offset =
    cur_layout (a)->data_offset[role];
  atomic_store (&a->rb_row, 0);
  member_transition (a, s, RAID_MEMBER_REBUILDING, -1, "replace target");
  router_set_mirror (&a->router, role, s);       /* from here every write reaches s */
  r = sync_begin (a, &(struct sync_job) { .ops = &sync_ops_replace, .target_slot = s,
                    .target_role = role, .source_slot = t }, 0, false, err, errlen);
  state_commit (a);                        /* records the replace (job.h) */
  raid_log (RAID_LOG_INFO, "replacing %s (role %d) with %s", member_spec (a->mem[t].m),
            role, member_spec (a->mem[s].m));
  return r;
}

/* Begin again from the start the replace the record at the start names,
 * or forget it: decided once, at the first job choice after the start,
 * before anything else begins.  It begins only as it was left: the array
 * optimal (no role waits for a recovery or a returning member, which the
 * spare may be wanted for), the member it replaces in sync in its role,
 * the spare a usable spare, nothing running, no reshape (state lock held,
 * a claim over everything). */
static void
resume_replace (struct raid_array *a)
{
  const struct layout *L = cur_layout (a);
  int t, s = job_noted_replace (a, &t), role = a->sync.replace_role;
  const char *why = a->sync.state != SYNC_IDLE ? "another job runs"
    : router_two (&a->router) ? "a reshape is under way"
    : s < 0 ? "its spare left the array"
    : t < 0 || role >= L->g.raid_disks || L->slot[role] != t || !a->mem[t].m ||
    atomic_load (&a->mem[t].state) != RAID_MEMBER_IN_SYNC
    ? "the member it replaces no longer holds its role in sync"
    : raid_array_health (a) != RAID_HEALTH_OPTIMAL ? "the array is not optimal"
    : atomic_load (&a->mem[s].state) != RAID_MEMBER_SPARE || !state_spare_usable (a, s)
    ? "its spare is not a usable spare (missing, or its connection is lost)" : NULL;
  char e[128];

  a->sync.replace_role = -1;               /* resolved: not recorded again */
  if (!why) {
    raid_log (RAID_LOG_INFO, "role %d: the replace onto %s was cut short by a stop: "
              "it begins again", role, member_spec (a->mem[s].m));
    if (sync_begin_replace (a, t, s, e, sizeof e) == 0)
      return;
    why = e;
  }
  raid_log (RAID_LOG_WARN, "role %d: the replace cut short by a stop is forgotten: %s",
            role, why);
  state_commit (a);
}

/* ---------------------------------------------------------------------
 * Choosing the next job (management lock held, state lock not).
 */

/* The roles of the current layout with no usable member (state lock
 * held): *later those whose away member is still within its grace (it
 * keeps the role a while), the others returned (a recovery is owed now). */
static uint32_t
roles_to_recover (struct raid_array *a, uint32_t *later)
{
  const struct layout *L = cur_layout (a);
  uint32_t bad = L->g.level == 0 ? 0 : state_bad_roles (a, L, NULL, NULL), wait = 0;

  for (int r = 0; r < L->g.raid_disks; r++)
    if ((bad & (1u << r)) && L->slot[r] >= 0 && state_away_in_grace (a, L->slot[r]))
      wait |= 1u << r;
  *later = wait;
  return bad & ~wait;
}

/* A role of the current layout with no usable member and none being
 * rebuilt that is owed a recovery now, or -1 (state lock held). */
static int
role_to_recover (struct raid_array *a)
{
  uint32_t later, now = roles_to_recover (a, &later);

  return now ? __builtin_ctz (now) : -1;
}

/* A spare to recover onto, or -1 (state lock held). */
static int
usable_spare (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (state_spare_usable (a, t))
      return t;
  return -1;
}

bool
sync_recovery_due (struct raid_array *a)
{
  uint32_t later;

  roles_to_recover (a, &later);
  return later && usable_spare (a) >= 0;
}

/* Bind spare t to `role` as rebuilding from row 0 and begin the recovery
 * (state lock held, and a claim over everything: the binding changes which
 * member holds the role). */
static void
begin_recovery (struct raid_array *a, int t, int role)
{
  const struct layout *L = cur_layout (a);
  int old = L->slot[role];
  char e[128];

  /* The spare's data goes where the layout has the role's data (a spare
   * added before a reshape still carries the old layout's offset). */
  uint64_t off = old >= 0 ? L->data_offset[role] : layout_data_offset (L);

  if (old >= 0)
    member_detach (a, old);
  atomic_store (&a->rb_row, 0);
  a->sb.members[t].recovery_offset = 0;
  a->sb.members[t].data_offset = a->sb.members[t].new_data_offset = off;
  router_bind_role (&a->router, LAYOUT_CUR, role, t, off);
  member_transition (a, t, RAID_MEMBER_REBUILDING, role, "recovering a failed role");
  state_commit (a);
  sync_begin (a, &(struct sync_job) { .ops = &sync_ops_recover, .target_slot = t,
                .target_role = role, .source_slot = -1 }, 0, false, e, sizeof e);
}

/* Whether member t is back for its role (stale, open, bound): it rejoins. */
static bool
rejoining (struct raid_array *a, int t)
{
  return atomic_load (&a->mem[t].state) == RAID_MEMBER_STALE && a->mem[t].m &&
    a->sb.members[t].role >= 0 && cur_layout (a)->slot[a->sb.members[t].role] == t;
}

/* The first member that rejoins, or -1. */
static int
rejoining_slot (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (rejoining (a, t))
      return t;
  return -1;
}

/* Member t is back as it is, in sync (state lock held).  The cursor of
 * another member's recovery (paused while the array was failed) stays. */
static void
rejoin_as_is (struct raid_array *a, int t, const char *why)
{
  member_back_as_is (a, t, why);
  state_commit (a);
}

/* The first member that rejoins having missed nothing (missed_nothing:
 * its data is the array's; it needs no job, and no checkpoint first,
 * JOINS in journal.c: a record of a row it has not missed carries its
 * block as it still is), or -1.  Any of them, not only the first that
 * rejoins: that one may need a job, which cannot run while the array has
 * failed for want of this one. */
static int
unmissed_slot (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (rejoining (a, t) && !missed_widen_due (a, t) && missed_nothing (a, t))
      return t;
  return -1;
}

/* Member t rejoins: rebuilding from row 0, by a delta when its map of
 * missed regions covers what it missed and marks every row it needs
 * (missed.h, W: missed_widen has run), else in full and its map ends
 * (state lock held; the role's binding does not change). */
static void
begin_rejoin (struct raid_array *a, int t)
{
  int role = a->sb.members[t].role;
  bool delta = a->mem[t].delta && missed_has_map (a, t) &&
    a->mem[t].delta_from >= a->sb.component_size;
  char e[128], why[128];

  if (layout_tolerance (cur_layout (a)) == 0) {
    /* No redundancy (raid0): nothing to resync it from, and nothing was
     * written while it was away (the array was failed and refused every
     * write): it is back as it is. */
    rejoin_as_is (a, t, "rejoins as it is: no redundancy to resync it from, and "
                  "no write was taken while it was away");
    return;
  }
  atomic_store (&a->rb_row, 0);
  a->sb.members[t].recovery_offset = 0;
  if (delta)
    snprintf (why, sizeof why, "rejoins: resyncing what it missed (%" PRIu64
              " regions)", missed_count (a, t));
  else
    missed_end (a, t);                     /* W: a full rejoin follows no map */
  member_transition (a, t, RAID_MEMBER_REBUILDING, role,
                     delta ? why : "rejoins: full resync");
  a->mem[t].rejoining = true;
  state_commit (a);
  sync_begin (a, &(struct sync_job) { .ops = delta ? &sync_ops_rejoin : &sync_ops_recover,
                .target_slot = t, .target_role = role, .source_slot = -1,
                .from = delta ? a->sb.component_size : 0 },
              0, false, e, sizeof e);
}

/* A recovery recorded as under way (a rebuilding member with a role). */
static int
rebuilding_slot (struct raid_array *a)
{
  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (atomic_load (&a->mem[t].state) == RAID_MEMBER_REBUILDING &&
        a->sb.members[t].role >= 0 && cur_layout (a)->slot[a->sb.members[t].role] == t)
      return t;
  return -1;
}

/* The reshape found in the record (at start): running again unless it was
 * frozen, autostart is off or it cannot run now. */
static void
resume_reshape (struct raid_array *a)
{
  char e[256];
  bool run = a->sb.reshape_state == SB_RESHAPE_RUNNING && a->autostart &&
    reshape_check_start (a, e, sizeof e) == 0;

  sync_begin (a, &(struct sync_job) { .ops = &reshape_sync_ops, .target_slot = -1,
                .target_role = -1, .source_slot = -1 },
              a->sb.reshape_position, !run, e, sizeof e);
  if (!run)
    reshape_record_state (a, false);
  raid_log (RAID_LOG_INFO, "reshape %s at %" PRIu64 " of %" PRIu64 " bytes",
            run ? "resumed" : "frozen", a->sb.reshape_position, a->sb.array_size);
}

/* Begin the owed job that needs no claim, if any (state lock held).  True
 * when the choice is made (a job begun, or nothing to do); false when a
 * spare should be bound to a role. */
static bool
next_simple_job (struct raid_array *a)
{
  bool optimal = raid_array_health (a) == RAID_HEALTH_OPTIMAL;
  char e[128];
  int t;

  if (a->sync.state != SYNC_IDLE || a->sync.stop ||
      raid_array_health (a) == RAID_HEALTH_FAILED)
    return true;
  if (router_two (&a->router)) {
    resume_reshape (a);
    return true;
  }
  /* A rebuild recorded as under way goes on before any rejoin begins: a
   * rejoin's job would take over the one cursor (a->rb_row, rows of the
   * rebuilding role that hold current data), and the other member's rows
   * between its cursor and wherever the rejoin ended would never be
   * rebuilt.  One member is rebuilding at a time. */
  if ((t = rebuilding_slot (a)) >= 0) {
    /* Cut short (a restart, the job stopped): a delta (W: a map) goes on
     * from its cursor following the map, any other rebuild in full. */
    bool delta = missed_has_map (a, t);
    a->mem[t].rejoining |= delta;
    sync_begin (a, &(struct sync_job) { .ops = delta ? &sync_ops_rejoin : &sync_ops_recover,
                  .target_slot = t, .target_role = a->sb.members[t].role, .source_slot = -1,
                  .from = a->sb.component_size },
                delta ? 0 : atomic_load (&a->rb_row) * cur_layout (a)->g.chunk, false,
                e, sizeof e);
    return true;
  }
  if ((t = rejoining_slot (a)) >= 0) {
    if (!cons_join_due (a) && !missed_widen_due (a, t))   /* else sync_next_job
                                                            checkpoints, widens */
      begin_rejoin (a, t);
    return true;
  }
  if (role_to_recover (a) >= 0 && usable_spare (a) >= 0)
    return false;
  if (optimal && a->sb.resync_offset != UINT64_MAX && cur_layout (a)->g.level != 0)
    sync_begin (a, &(struct sync_job) { .ops = &sync_ops_resync, .target_slot = -1,
                  .target_role = -1, .source_slot = -1 },
                a->sb.resync_offset, false, e, sizeof e);
  else if (optimal && a->sb.sync_action != SB_SYNC_NONE) {
    struct sync_job j = {
      .ops = a->sb.sync_action == SB_SYNC_REPAIR ? &sync_ops_repair : &sync_ops_check,
      .target_slot = -1, .target_role = -1, .source_slot = -1,
    };
    if (sync_begin (a, &j, a->sb.sync_position, false, e, sizeof e) == 0)
      a->sync.job.mismatch = a->sb.mismatch_count;
  }
  return true;
}

/* Whether a member is ready to take a role: one rejoining, or a spare for
 * a role to recover (state lock held). */
static bool
join_ready (struct raid_array *a)
{
  return rejoining_slot (a) >= 0 || (role_to_recover (a) >= 0 && usable_spare (a) >= 0);
}

/* A member back that missed nothing rejoins as it is (no job; also when
 * the array failed without it: it is what makes the array whole again).
 * Writes planned before it left mark its map only when they end (missed.h),
 * so they are drained first (a claim of everything) and the map is looked
 * at again.  Management lock held. */
static void
rejoin_unmissed (struct raid_array *a)
{
  int t;
  bool due;

  pthread_mutex_lock (&a->state_lock);
  due = a->sync.state == SYNC_IDLE && !a->sync.stop && unmissed_slot (a) >= 0;
  pthread_mutex_unlock (&a->state_lock);
  if (!due)
    return;
  router_claim (&a->router, 0, ROUTER_ALL);
  pthread_mutex_lock (&a->state_lock);
  while (a->sync.state == SYNC_IDLE && !a->sync.stop && (t = unmissed_slot (a)) >= 0)
    rejoin_as_is (a, t, "rejoins as it is: it missed no write while it was away");
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
}

void
sync_next_job (struct raid_array *a)
{
  bool done, join, replace;

  pthread_mutex_lock (&a->state_lock);
  replace = a->sync.replace_role >= 0;
  pthread_mutex_unlock (&a->state_lock);
  if (replace) {                           /* noted at the start: first */
    router_claim (&a->router, 0, ROUTER_ALL);
    pthread_mutex_lock (&a->state_lock);
    resume_replace (a);
    pthread_mutex_unlock (&a->state_lock);
    router_release (&a->router);
  }
  missed_widen (a, journal_parity_rows, stripe_parity_to);   /* O, W: before a rejoin */
  rejoin_unmissed (a);

  pthread_mutex_lock (&a->state_lock);
  join = cons_join_due (a) && join_ready (a);
  pthread_mutex_unlock (&a->state_lock);
  if (join)
    cons_checkpoint (a, NULL, NULL);       /* JOINS (journal.c) */
  pthread_mutex_lock (&a->state_lock);
  done = next_simple_job (a);
  pthread_mutex_unlock (&a->state_lock);
  if (done)
    return;
  router_claim (&a->router, 0, ROUTER_ALL);
  pthread_mutex_lock (&a->state_lock);
  if (!next_simple_job (a) && !cons_join_due (a)) {   /* nothing changed meanwhile */
    int t = usable_spare (a), role = role_to_recover (a);
    raid_log (RAID_LOG_INFO, "role %d: recovering onto %s", role, member_spec (a->mem[t].m));
    begin_recovery (a, t, role);
  }
  pthread_mutex_unlock (&a->state_lock);
  router_release (&a->router);
}

/* ---------------------------------------------------------------------
 * The worker.
 */

/* How long to pause after a batch of `bytes` that took `ns` (state lock
 * held).  speed_max is a hard cap whether or not clients are busy; while
 * they are, the job also yields half its time unless that would take it
 * below speed_min.  The pause is a timed wait that any state change (set,
 * freeze, stop) cuts short. */
static uint64_t
throttle_ns (struct raid_array *a, uint64_t bytes, uint64_t ns)
{
  struct sync_ctl *s = &a->sync;
  uint64_t now = raid_now_mono_ns ();
  bool fg = now - atomic_load (&a->fg_ns) < FG_ACTIVE_NS;
  uint64_t limit = s->speed_max, want = 0;

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

/* End the job early with `ev` (cancel) and undo its setup (management
 * lock held, state lock not). */
static void
end_job_mgmt (struct raid_array *a, uint64_t gen, enum sync_event ev, const char *why)
{
  struct sync_job j;
  bool ended = false;

  pthread_mutex_lock (&a->state_lock);
  j = a->sync.job;
  if (a->sync.state != SYNC_IDLE && j.gen == gen)
    ended = sync_transition (a, ev, NULL, why) == 0;
  pthread_mutex_unlock (&a->state_lock);
  if (ended && j.ops->stop)
    j.ops->stop (a, &j);
  if (ended)
    sync_next_job (a);
}

/* The same with the state lock held (given back around the management
 * lock). */
static void
end_job (struct raid_array *a, uint64_t gen, enum sync_event ev, const char *why)
{
  pthread_mutex_unlock (&a->state_lock);
  pthread_mutex_lock (&a->mgmt_lock);
  end_job_mgmt (a, gen, ev, why);
  pthread_mutex_unlock (&a->mgmt_lock);
  pthread_mutex_lock (&a->state_lock);
}

/* The job failed: freeze it with the reason, durably (state lock held). */
static void
fail_job (struct raid_array *a, const char *why)
{
  char msg[sizeof a->sync.error], fault[128];

  state_last_fault (a, fault, sizeof fault);
  if (*fault)
    snprintf (msg, sizeof msg, "%.100s (%s)", why, fault);
  else
    snprintf (msg, sizeof msg, "%.200s", why);
  if (sync_transition (a, SYNC_EV_FAIL, NULL, msg) == 0)
    a->sync.job.ops->checkpoint (a, &a->sync.job);
}

/* pos == total: complete the job under the management lock (state lock
 * held on entry and exit).  A finish that found the job's check failing
 * (ECANCELED: a member failed in the finish's own I/O) ends it as the
 * check says, like a check before a batch. */
static void
finish_job (struct raid_array *a, uint64_t gen)
{
  struct sync_job j;
  char why[256] = "";
  bool cancel = false;
  int err = 0;

  pthread_mutex_unlock (&a->state_lock);
  pthread_mutex_lock (&a->mgmt_lock);
  pthread_mutex_lock (&a->state_lock);
  j = a->sync.job;
  if (a->sync.state == SYNC_RUNNING && j.gen == gen) {
    pthread_mutex_unlock (&a->state_lock);
    err = j.ops->finish (a, &j);
    pthread_mutex_lock (&a->state_lock);
    if (err && a->sync.state == SYNC_RUNNING && a->sync.job.gen == gen) {
      if (err == ECANCELED && j.ops->check (a, &j, why, sizeof why) == SYNC_STOP_CANCEL)
        cancel = true;
      else {
        if (!*why)
          snprintf (why, sizeof why, "could not complete: %s", raid_strerror (err));
        fail_job (a, why);
      }
    }
    else if (!err && a->sync.state == SYNC_IDLE)
      next_simple_job (a);                 /* what it owes next, at once */
  }
  pthread_mutex_unlock (&a->state_lock);
  if (cancel)
    end_job_mgmt (a, gen, SYNC_EV_CANCEL, why);
  pthread_mutex_unlock (&a->mgmt_lock);
  pthread_mutex_lock (&a->state_lock);
}

/* One batch of the running job (state lock held on entry and exit). */
static void
run_batch (struct raid_array *a, struct sync_scratch *scratch)
{
  struct sync_ctl *s = &a->sync;
  struct sync_job j = s->job;
  uint64_t pos = j.pos, mism = j.mismatch, t0, ns, bytes;
  char why[256];
  int err;

  switch (j.ops->check (a, &j, why, sizeof why)) {
  case SYNC_STOP_CANCEL:
    end_job (a, j.gen, SYNC_EV_CANCEL, why);
    return;
  case SYNC_STOP_FAIL:
    fail_job (a, why);
    return;
  case SYNC_GO:
    break;
  }
  if (j.ops->left)
    j.total = s->job.total = pos + j.ops->left (a, &j);
  if (pos >= j.total) {
    finish_job (a, j.gen);
    return;
  }
  s->step_bytes = s->speed_max / 2;
  s->busy = true;
  pthread_mutex_unlock (&a->state_lock);

  t0 = raid_now_mono_ns ();
  err = j.ops->batch (a, &j, &pos, &mism, scratch);
  ns = raid_now_mono_ns () - t0;

  pthread_mutex_lock (&a->state_lock);
  s->busy = false;
  pthread_cond_broadcast (&a->changed);    /* a freeze may wait for this */
  if (s->job.gen != j.gen || s->state == SYNC_IDLE)
    return;                                /* ended meanwhile */
  if (err == 0 && pos == j.pos) {
    snprintf (why, sizeof why, "no progress at %" PRIu64, pos);
    err = EIO;
  }
  if (err == ENOMEM && s->state == SYNC_RUNNING && ++s->retries <= SYNC_RETRIES) {
    raid_log (RAID_LOG_WARN, "%s at %" PRIu64 ": out of memory, retrying",
              raid_sync_action_name (j.ops->action), j.pos);
    timed_wait (a, RETRY_NS << (s->retries - 1));   /* a transient shortage */
    return;
  }
  if (err) {
    char msg[256];
    snprintf (msg, sizeof msg, "stopped at %" PRIu64 " of %" PRIu64 ": %s", j.pos,
              j.total, raid_strerror (err));
    if (s->state == SYNC_RUNNING)
      fail_job (a, msg);
    return;
  }
  s->retries = 0;
  bytes = pos - s->job.pos;
  s->job.pos = pos;
  s->job.mismatch = mism;
  sync_rate_update (a);
  if (s->state != SYNC_RUNNING)
    return;                                /* frozen: the freezer checkpoints */
  if (pos < j.total && raid_now_mono_ns () - s->ckpt_ns > CKPT_INTERVAL_NS) {
    s->ckpt_ns = raid_now_mono_ns ();
    j.ops->checkpoint (a, &s->job);
  }
  if (j.ops == &reshape_sync_ops && a->test.reshape_pause && pos < j.total) {
    sync_transition (a, SYNC_EV_PAUSE, NULL, "test pause");
    return;
  }
  if ((ns = throttle_ns (a, bytes, ns)) != 0)
    timed_wait (a, ns);                    /* cut short by any state change */
}

/* Idle (or frozen): sleep until the state changes; with a bitmap, clean it
 * every BITMAP_CLEAN_NS meanwhile (state lock held). */
static void
idle_wait (struct raid_array *a)
{
  if (!bitmap_enabled (a) || router_two (&a->router) ||
      a->sb.resync_offset != UINT64_MAX) {
    pthread_cond_wait (&a->changed, &a->state_lock);   /* any state change */
    return;
  }
  timed_wait (a, BITMAP_CLEAN_NS);
  if (a->sync.stop || a->sync.state == SYNC_RUNNING || a->sync.seen_gen != a->state_gen)
    return;
  pthread_mutex_unlock (&a->state_lock);
  bitmap_clean (a, false);
  pthread_mutex_lock (&a->state_lock);
}

/* The state changed while no job runs: a frozen job may have lost its
 * purpose (cancel it), an idle worker may have work (state lock held). */
static void
review (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;
  uint64_t gen = a->state_gen;             /* the change looked at */
  char why[256];

  /* A frozen job counts as settled only once its check has kept it: one
   * that is about to be cancelled (a replace whose member failed becomes a
   * recovery) must not let a `wait` return in between. */
  if (s->state == SYNC_FROZEN) {
    if (s->job.ops->check (a, &s->job, why, sizeof why) == SYNC_STOP_CANCEL) {
      end_job (a, s->job.gen, SYNC_EV_CANCEL, why);
      return;                              /* reviewed again: state_gen moved */
    }
    s->seen_gen = gen;
    pthread_cond_broadcast (&a->changed);  /* settled: frozen */
    return;
  }
  /* The change counts as seen only once the job it owes has begun: a
   * `wait` must not find the worker idle and up to date in between. */
  pthread_mutex_unlock (&a->state_lock);
  pthread_mutex_lock (&a->mgmt_lock);
  sync_next_job (a);
  pthread_mutex_unlock (&a->mgmt_lock);
  pthread_mutex_lock (&a->state_lock);
  s->seen_gen = gen;
  pthread_cond_broadcast (&a->changed);    /* settled now, unless a job began */
}

static void *
worker (void *arg)
{
  struct raid_array *a = arg;
  struct sync_ctl *s = &a->sync;
  struct sync_scratch scratch = { NULL, 0 };

  pthread_mutex_lock (&a->state_lock);
  while (!s->stop) {
    if (s->state == SYNC_RUNNING)
      run_batch (a, &scratch);
    else if (s->seen_gen != a->state_gen)
      review (a);
    else
      idle_wait (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  free (scratch.p);
  return NULL;
}

int
sync_thread_start (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  if (s->started)
    return 0;
  pthread_mutex_lock (&a->state_lock);
  s->seen_gen = a->state_gen - 1;          /* look for work at once */
  pthread_mutex_unlock (&a->state_lock);
  if (pthread_create (&s->thread, NULL, worker, a) != 0)
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
  pthread_mutex_lock (&a->state_lock);
  s->stop = true;
  pthread_cond_broadcast (&a->changed);
  pthread_mutex_unlock (&a->state_lock);
  pthread_join (s->thread, NULL);
  s->started = false;
}
