/* nbdkit-raid: the write-hole policy of a write (theory in consistency.h). */
#include <errno.h>
#include <stdio.h>

#include "array-int.h"
#include "missed.h"
#include "bitmap.h"
#include "consistency.h"
#include "journal.h"
#include "util.h"

enum cons_policy
cons_policy (const struct raid_array *a, const struct layout *L, unsigned flags)
{
  if ((flags & RAID_IO_RAW) || L->g.level < 4)
    return CONS_NONE;
  if (journal_usable (a))
    return CONS_JOURNAL;
  if (bitmap_enabled (a) && L->id == LAYOUT_CUR)
    return CONS_BITMAP;
  return CONS_NONE;
}

/* The write under the layout's write-hole policy. */
static int
policy_write (struct raid_array *a, const struct layout *L, unsigned flags,
              const struct write_batch *g, write_issue_fn issue, void *ctx,
              uint32_t *failed)
{
  size_t n = g->nunits ? g->units[g->nunits - 1].end : 0;
  int err;

  switch (cons_policy (a, L, flags)) {
  case CONS_JOURNAL:
    return journal_write (a, L, g, issue, ctx, failed);
  case CONS_BITMAP:
    if ((err = bitmap_start_write (a, g->r0, g->nrows)) == EAGAIN) {
      *failed = 1;                         /* a bitmap copy failed: redo */
      return 0;
    }
    if (err)
      return err;
    err = issue (ctx, 0, n, failed);
    bitmap_end_write (a, g->r0, g->nrows);
    return err;
  case CONS_NONE:
    break;
  }
  return issue (ctx, 0, n, failed);
}

int
cons_write (struct raid_array *a, const struct layout *L, unsigned flags,
            const struct write_batch *g, write_issue_fn issue, void *ctx,
            uint32_t *failed)
{
  uint64_t token;
  int err;

  *failed = 0;
  /* Every write of the current layout, raw ones too (the zeroes a grow
   * writes past the old size), changes rows an away member lacks. */
  if ((err = missed_start_write (a, L, g->r0, g->nrows, &token)) == EAGAIN) {
    *failed = 1;                           /* a map copy failed: redo */
    return 0;
  }
  if (err)
    return err;
  err = policy_write (a, L, flags, g, issue, ctx, failed);
  missed_end_write (a, L, g->r0, g->nrows, token);
  /* Counted even when it failed: a journaled group goes in sets, and a
   * set's in-place writes may have run before a later set failed. */
  if (cons_policy (a, L, flags) == CONS_JOURNAL)
    for (size_t i = 0; i < g->nunits; i++)
      if (g->units[i].full) {              /* its row locks still held */
        atomic_fetch_add (&a->intents_done, 1);
        break;
      }
  return err;
}

int
cons_flush (struct raid_array *a)
{
  uint64_t done = atomic_load (&a->intents_done), seen;
  int err = state_flush_all (a);

  seen = atomic_load (&a->intents_flushed);
  while (err == 0 && seen < done &&
         !atomic_compare_exchange_weak (&a->intents_flushed, &seen, done))
    ;
  return err;
}

/* FUA covers what a write's parity is computed with.  Under the journal
 * policy a whole-row write is logged as an intent only, its blocks not: a
 * partial write of that row computes its parity from them, and if FUA made
 * that parity durable while a crash lost them, the parity would rebuild the
 * FUA write's own blocks wrongly once a member is lost too.  So such a FUA
 * write first flushes every member, unless no intent has completed since a
 * flush that ended.  An intent counts once its in-place writes are done,
 * before its row locks are released, so any later writer of its rows sees
 * it counted.  (Under the other policies a member lost before the resync
 * ends may cost bytes anyway: nbdkit-raid-plugin(1).) */
int
cons_fua_sources (struct raid_array *a, const struct layout *L, unsigned flags)
{
  if (cons_policy (a, L, flags) != CONS_JOURNAL ||
      atomic_load (&a->intents_flushed) == atomic_load (&a->intents_done))
    return 0;
  return cons_flush (a);
}

/* Whether some layout's writes are journaled. */
static bool
journal_in_use (struct raid_array *a)
{
  return journal_usable (a) &&
    (router_layout (&a->router, LAYOUT_CUR)->g.level >= 4 ||
     (router_two (&a->router) && router_layout (&a->router, LAYOUT_NEXT)->g.level >= 4));
}

bool
cons_join_due (struct raid_array *a)
{
  return journal_in_use (a) && journal_join_due (a);
}

int
cons_checkpoint (struct raid_array *a,
                 void (*update) (struct raid_array *a, void *arg), void *arg)
{
  int err;

  if (journal_in_use (a))
    return journal_checkpoint (a, update, arg);
  if ((err = state_flush_all (a)) != 0 || !update)
    return err;
  pthread_mutex_lock (&a->state_lock);
  update (a, arg);
  err = state_commit (a);
  pthread_mutex_unlock (&a->state_lock);
  return err;
}

int
cons_client_flush (struct raid_array *a)
{
  int err = cons_flush (a), ckpt;

  if (err == 0 && journal_in_use (a) && (ckpt = journal_bound_replay (a)) != 0)
    raid_log (RAID_LOG_WARN, "checkpoint after a flush: %s (the flush itself "
              "succeeded; the next one tries again)", raid_strerror (ckpt));
  return err;
}

/* Layouts holding data that have parity. */
static bool
parity_holds_data (struct raid_array *a)
{
  return router_layout (&a->router, LAYOUT_CUR)->g.level >= 4 ||
    (state_next_holds_data (a) && router_layout (&a->router, LAYOUT_NEXT)->g.level >= 4);
}

/* Layouts holding data that are mirrors (raid1): their copies of a block
 * may differ after an unclean stop, in the writes that were in flight. */
static bool
mirrors_hold_data (struct raid_array *a)
{
  return router_layout (&a->router, LAYOUT_CUR)->g.level == 1 ||
    (state_next_holds_data (a) && router_layout (&a->router, LAYOUT_NEXT)->g.level == 1);
}

/* Record a resync of everything owed (from the start: rows below the
 * position of a resync cut short by the crash were written meanwhile). */
static int
owe_resync (struct raid_array *a, const char *u, char *err, size_t errlen)
{
  int r = 0;

  pthread_mutex_lock (&a->state_lock);
  if (a->sb.resync_offset != 0) {
    a->sb.resync_offset = 0;
    r = state_commit (a);
  }
  pthread_mutex_unlock (&a->state_lock);
  raid_log (RAID_LOG_WARN, "array %s was not shut down cleanly: resyncing %s%s", u,
            !parity_holds_data (a) ? "its mirrors"
            : bitmap_enabled (a) ? "the regions its bitmap marks" : "everything",
            a->readonly ? " once it is served read-write" : "");
  if (r)
    snprintf (err, errlen, "array %s: cannot record the owed resync", u);
  return r ? -1 : 0;
}

/* Whether a layout holding data lacks a member. */
static bool
data_degraded (struct raid_array *a)
{
  return state_bad_roles (a, router_layout (&a->router, LAYOUT_CUR), NULL, NULL) != 0 ||
    (state_next_holds_data (a) &&
     state_bad_roles (a, router_layout (&a->router, LAYOUT_NEXT), NULL, NULL) != 0);
}

int
cons_start (struct raid_array *a, bool force, journal_resync_fn resync,
            char *err, size_t errlen)
{
  bool was_dirty = a->sb.flags & SB_FLAG_DIRTY;
  char u[RAID_UUID_STRLEN], e[256];
  int n, r = 0;

  raid_uuid_format (a->sb.array_uuid, u);
  journal_init (a);
  if (bitmap_check (&a->sb, router_layout (&a->router, LAYOUT_CUR), e, sizeof e) < 0) {
    snprintf (err, errlen, "array %s: %s", u, e);
    return -1;
  }
  if (bitmap_init (a) != 0) {
    snprintf (err, errlen, "out of memory for the bitmap");
    return -1;
  }
  atomic_store (&a->dirty, was_dirty);
  /* The bitmap is read at every start: regions written while a member was
   * away stay marked (nothing is cleared while the array is not optimal),
   * and that member's delta resync needs them. */
  if (bitmap_enabled (a) && bitmap_load (a) < 0) {
    snprintf (err, errlen, "array %s: cannot read the write-intent bitmap", u);
    return -1;
  }
  if (!was_dirty || (!parity_holds_data (a) && !mirrors_hold_data (a)))
    return 0;
  if (parity_holds_data (a) && journal_usable (a)) {
    if ((r = missed_begin_absent (a)) != 0)
      raid_log (RAID_LOG_WARN, "array %s: the maps of the members absent from this "
                "start are not yet recorded (%s): tried again after the replay", u,
                raid_strerror (r));
    if (journal_replay (a, resync, force, &n, e, sizeof e) != 0) {
      snprintf (err, errlen, "array %s: %s", u, e);
      return -1;
    }
    raid_log (RAID_LOG_WARN, "array %s was not shut down cleanly: "
              "replayed %d journal records", u, n);
    if (!mirrors_hold_data (a))
      return 0;
  }
  else if (parity_holds_data (a) && data_degraded (a) && !force) {
    snprintf (err, errlen, "array %s was not shut down cleanly and is degraded: "
              "stripes being written at the crash may rebuild wrong data (the "
              "write hole; its consistency policy is %s, not journal); start "
              "with force=true to accept that", u,
              sb_consistency_name (a->sb.consistency));
    return -1;
  }
  return owe_resync (a, u, err, errlen);
}

const char *
cons_readonly_refusal (struct raid_array *a)
{
  if (!(a->sb.flags & SB_FLAG_DIRTY) || !parity_holds_data (a))
    return NULL;
  if (journal_usable (a))
    return "its journal replayed";
  return data_degraded (a) ? "a resync (it is degraded)" : NULL;
}

void
cons_stop (struct raid_array *a)
{
  journal_fini (a);
  bitmap_fini (a);
}
