/* nbdkit-raid: the background job's state machine (theory in job.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "array-int.h"
#include "job.h"
#include "util.h"

#define BAD (-1)

/* next[state][event]: the state an event leads to, BAD if not allowed. */
static const int next_state[3][SYNC_EV_ABORT + 1] = {
  [SYNC_IDLE] = {
    [SYNC_EV_BEGIN] = SYNC_RUNNING, [SYNC_EV_BEGIN_FROZEN] = SYNC_FROZEN,
    [SYNC_EV_START] = BAD, [SYNC_EV_FREEZE] = BAD, [SYNC_EV_PAUSE] = BAD,
    [SYNC_EV_DONE] = BAD, [SYNC_EV_FAIL] = BAD, [SYNC_EV_CANCEL] = BAD,
    [SYNC_EV_ABORT] = BAD,
  },
  [SYNC_RUNNING] = {
    [SYNC_EV_BEGIN] = BAD, [SYNC_EV_BEGIN_FROZEN] = BAD, [SYNC_EV_START] = BAD,
    [SYNC_EV_FREEZE] = SYNC_FROZEN, [SYNC_EV_PAUSE] = SYNC_FROZEN,
    [SYNC_EV_DONE] = SYNC_IDLE, [SYNC_EV_FAIL] = SYNC_FROZEN,
    [SYNC_EV_CANCEL] = SYNC_IDLE, [SYNC_EV_ABORT] = SYNC_IDLE,
  },
  [SYNC_FROZEN] = {
    [SYNC_EV_BEGIN] = BAD, [SYNC_EV_BEGIN_FROZEN] = BAD,
    [SYNC_EV_START] = SYNC_RUNNING, [SYNC_EV_FREEZE] = BAD, [SYNC_EV_PAUSE] = BAD,
    [SYNC_EV_DONE] = BAD, [SYNC_EV_FAIL] = SYNC_FROZEN,
    [SYNC_EV_CANCEL] = SYNC_IDLE, [SYNC_EV_ABORT] = SYNC_IDLE,
  },
};

static const char *const state_names[] = { "idle", "running", "frozen" };

const char *
raid_sync_action_name (enum raid_sync_action a)
{
  static const char *names[] = {
    "idle", "frozen", "resync", "recover", "check", "repair", "reshape",
  };
  return a >= 0 && a <= RAID_SYNC_RESHAPE ? names[a] : "unknown";
}


void
job_init (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  memset (s, 0, sizeof *s);
  s->state = SYNC_IDLE;
  s->speed_min = SYNC_SPEED_MIN_DEFAULT;
  s->speed_max = SYNC_SPEED_MAX_DEFAULT;
  s->job.target_slot = s->job.target_role = s->job.source_slot = -1;
  s->replace_role = -1;
}

/* The entry in sync holding role, or -1. */
static int
sb_holder (const struct raid_sb *sb, int role)
{
  for (int t = 0; t < (int) sb->nmembers; t++)
    if (sb->members[t].state == SB_MEMBER_IN_SYNC && sb->members[t].role == role)
      return t;
  return -1;
}

void
job_note_replace (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;

  for (int t = 0; t < (int) a->sb.nmembers; t++)
    if (a->sb.members[t].replaces && s->replace_role < 0) {
      int src = sb_holder (&a->sb, (int) a->sb.members[t].replaces - 1);
      s->replace_role = (int) a->sb.members[t].replaces - 1;
      memcpy (s->replace_uuid, a->sb.members[t].uuid, RAID_UUID_LEN);
      memset (s->replace_src, 0, RAID_UUID_LEN);
      if (src >= 0)
        memcpy (s->replace_src, a->sb.members[src].uuid, RAID_UUID_LEN);
    }
}

int
job_noted_replace (struct raid_array *a, int *source)
{
  const struct sync_ctl *s = &a->sync;
  int src = s->replace_role < 0 ? -1 : state_slot_of_uuid (a, s->replace_src);

  *source = src >= 0 && a->sb.members[src].state == SB_MEMBER_IN_SYNC &&
    a->sb.members[src].role == s->replace_role ? src : -1;
  return s->replace_role < 0 ? -1 : state_slot_of_uuid (a, s->replace_uuid);
}

void
job_record_replace (struct raid_array *a)
{
  const struct sync_ctl *s = &a->sync;
  bool job = s->state != SYNC_IDLE && s->job.source_slot >= 0;
  int src, t = job ? s->job.target_slot : job_noted_replace (a, &src);
  int role = job ? s->job.target_role : src >= 0 ? s->replace_role : -1;

  for (int i = 0; i < (int) a->sb.nmembers; i++)
    a->sb.members[i].replaces = 0;
  if (t >= 0 && t < (int) a->sb.nmembers && a->sb.members[t].state == SB_MEMBER_SPARE &&
      role >= 0 && role < (int) a->sb.raid_disks && a->sb.reshape_state == SB_RESHAPE_NONE)
    a->sb.members[t].replaces = (uint32_t) role + 1;
}

int
sync_transition (struct raid_array *a, enum sync_event ev,
                 const struct sync_job *job, const char *why)
{
  struct sync_ctl *s = &a->sync;
  const struct sync_ops *ops = job && job->ops ? job->ops : s->job.ops;
  int to = next_state[s->state][ev];

  if (to == BAD) {
    raid_log (RAID_LOG_ERROR, "internal: job %s: event %d refused (%s)",
              state_names[s->state], (int) ev, why);
    return EINVAL;
  }
  /* A job ended short of its end without a request (a member left: a
   * check of a degraded array, a replace whose member failed) says so as
   * loudly as a failure does not, but louder than routine changes. */
  raid_log (ev == SYNC_EV_FAIL ? RAID_LOG_ERROR
            : ev == SYNC_EV_CANCEL ? RAID_LOG_WARN : RAID_LOG_INFO, "%s: %s -> %s (%s)",
            raid_sync_action_name (ops->action), state_names[s->state],
            state_names[to], why);
  if (ev == SYNC_EV_BEGIN || ev == SYNC_EV_BEGIN_FROZEN) {
    uint64_t gen = s->job.gen + 1;
    s->job = *job;
    s->job.gen = gen;
    s->ckpt_ns = raid_now_mono_ns ();
    s->error[0] = '\0';
  }
  if (ev == SYNC_EV_START)
    s->error[0] = '\0';
  if (to == SYNC_RUNNING) {                /* a new rate window */
    s->rate = 0;
    s->rate_ns = raid_now_mono_ns ();
    s->rate_pos = s->job.pos;
  }
  if (ev == SYNC_EV_FAIL)
    snprintf (s->error, sizeof s->error, "%s", why);
  s->state = to;
  if (to == SYNC_IDLE) {
    s->job.ops = NULL;
    s->job.target_slot = s->job.target_role = s->job.source_slot = -1;
  }
  a->state_gen++;
  pthread_cond_broadcast (&a->changed);
  return 0;
}

int
sync_begin (struct raid_array *a, const struct sync_job *tmpl, uint64_t from,
            bool frozen, char *err, size_t errlen)
{
  struct sync_ctl *s = &a->sync;
  struct sync_job j = *tmpl;

  if (s->state != SYNC_IDLE) {
    snprintf (err, errlen, "%s is %s: wait for it, or freeze/abort it first",
              raid_sync_action_name (s->job.ops->action), state_names[s->state]);
    return EBUSY;
  }
  j.total = j.ops->total (a, &j);
  j.pos = raid_min_u64 (from, j.total);
  j.mismatch = 0;
  return sync_transition (a, frozen ? SYNC_EV_BEGIN_FROZEN : SYNC_EV_BEGIN, &j,
                          frozen ? "prepared" : "begun");
}

#define RATE_WINDOW_NS 2000000000ull

static uint64_t
window_rate (const struct sync_ctl *s, uint64_t now)
{
  uint64_t ns = now - s->rate_ns;
  return ns && s->job.pos > s->rate_pos
    ? (uint64_t) ((s->job.pos - s->rate_pos) * 1e9 / ns) : 0;
}

void
sync_rate_update (struct raid_array *a)
{
  struct sync_ctl *s = &a->sync;
  uint64_t now = raid_now_mono_ns ();

  if (now - s->rate_ns < RATE_WINDOW_NS)
    return;
  s->rate = window_rate (s, now);
  s->rate_ns = now;
  s->rate_pos = s->job.pos;
}

uint64_t
sync_rate (const struct raid_array *a)
{
  const struct sync_ctl *s = &a->sync;
  uint64_t now = raid_now_mono_ns ();

  if (s->state != SYNC_RUNNING)
    return 0;
  if (now - s->rate_ns >= RATE_WINDOW_NS ||
      (!s->rate && now - s->rate_ns >= RATE_WINDOW_NS / 4))
    return window_rate (s, now);           /* a long open window: a stall shows */
  return s->rate;
}

void
sync_wait_batch (struct raid_array *a)
{
  while (a->sync.busy)
    pthread_cond_wait (&a->changed, &a->state_lock);   /* the worker's batch end */
}

enum raid_sync_action
sync_status_action (const struct raid_array *a)
{
  switch (a->sync.state) {
  case SYNC_IDLE: return RAID_SYNC_IDLE;
  case SYNC_FROZEN: return RAID_SYNC_FROZEN;
  case SYNC_RUNNING: break;
  }
  return a->sync.job.ops->action;
}
