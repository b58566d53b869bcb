/* nbdkit-raid: status — one snapshot of the whole array.
 *
 * Taken under the state lock, so every field agrees with every other: the
 * job and its progress, the reshape record (whose state is "running"
 * exactly when the job is a running reshape), the members and health.
 * Members are listed by role (a replace target with the role it takes),
 * spares and detached members last.
 */
#include <stdio.h>
#include <string.h>

#include "array-int.h"
#include "missed.h"
#include "reshape.h"
#include "util.h"

static void
members_status (struct raid_array *a, struct raid_status *st)
{
  const struct layout *L = router_layout (&a->router, LAYOUT_CUR);
  int order[SB_MAX_MEMBERS], n = 0;

  /* By role, spares last; a replace target shows the role it takes. */
  for (int pass = 0; pass < 2; pass++)
    for (int t = 0; t < (int) a->sb.nmembers; t++) {
      int st_t = atomic_load (&a->mem[t].state);
      bool spare = a->sb.members[t].role < 0 && !(t == L->mirror_slot);
      if (st_t != STATE_EMPTY && spare == (pass == 1))
        order[n++] = t;
    }
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) {
      int ri = a->sb.members[order[i]].role, rj = a->sb.members[order[j]].role;
      ri = order[i] == L->mirror_slot ? L->mirror_role : ri;
      rj = order[j] == L->mirror_slot ? L->mirror_role : rj;
      if (ri >= 0 && rj >= 0 && rj < ri) {
        int x = order[i]; order[i] = order[j]; order[j] = x;
      }
    }
  for (int i = 0; i < n; i++) {
    int t = order[i];
    struct raid_member_status *ms = &st->members[st->nmembers++];
    ms->role = t == L->mirror_slot ? L->mirror_role : a->sb.members[t].role;
    ms->state = atomic_load (&a->mem[t].state);
    /* A member that came back (stale) is listed stale until it is in sync
     * again, while its resync runs too: it is not a spare being rebuilt
     * and is not trusted for reads above the resync point. */
    if (ms->state == RAID_MEMBER_REBUILDING && a->mem[t].rejoining)
      ms->state = RAID_MEMBER_STALE;
    ms->errors = atomic_load (&a->mem[t].errors);
    ms->data_offset = a->sb.members[t].data_offset;
    snprintf (ms->spec, sizeof ms->spec, "%s", a->mem[t].m ? member_spec (a->mem[t].m)
              : a->sb.members[t].spec_hint);       /* missing: the last spec known */
    ms->away_seconds = ms->state == RAID_MEMBER_MISSING && a->mem[t].away_ns
      ? (int64_t) ((raid_now_mono_ns () - a->mem[t].away_ns) / 1000000000u) : -1;
    ms->missed_regions = missed_has_map (a, t) ? (int64_t) missed_count (a, t) : -1;
    ms->region_bytes = missed_rows_per_region (a, t) * L->g.chunk;
    ms->down = ms->state == RAID_MEMBER_SPARE ? !state_spare_usable (a, t)
      : ms->state == RAID_MEMBER_MISSING;
  }
}

static void
job_status (struct raid_array *a, struct raid_status *st)
{
  struct sync_ctl *s = &a->sync;

  st->sync_action = sync_status_action (a);
  st->mismatch_count = s->state != SYNC_IDLE ? s->job.mismatch : a->sb.mismatch_count;
  st->speed_min = s->speed_min;
  st->speed_max = s->speed_max;
  if (s->state == SYNC_IDLE)
    return;
  st->has_progress = true;
  st->progress.action = s->job.ops->action;
  st->progress.done = s->job.pos;
  st->progress.total = s->job.total;
  st->progress.rate = sync_rate (a);
  st->progress.eta_seconds = st->progress.rate
    ? (int64_t) ((s->job.total - s->job.pos) / st->progress.rate) : -1;
  snprintf (st->progress.error, sizeof st->progress.error, "%s", s->error);
}

void
raid_array_status (struct raid_array *a, struct raid_status *st)
{
  const struct layout *L;

  memset (st, 0, sizeof *st);
  pthread_mutex_lock (&a->state_lock);
  L = router_layout (&a->router, LAYOUT_CUR);
  memcpy (st->uuid, a->sb.array_uuid, RAID_UUID_LEN);
  st->geom = (struct raid_geom_status) { L->g.level, L->g.layout, L->g.chunk,
                                         L->g.raid_disks };
  st->data_disks = L->g.data_disks;
  st->size = atomic_load (&a->size);
  st->health = raid_array_health (a);
  st->events = a->sb.events;
  st->resync_owed = a->sb.level != 0 ? a->sb.resync_offset : UINT64_MAX;
  st->consistency = a->sb.consistency;
  members_status (a, st);
  job_status (a, st);
  reshape_status (a, st);
  pthread_mutex_unlock (&a->state_lock);
}
