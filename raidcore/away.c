/* nbdkit-raid: the watcher of members that come and go (theory in away.h). */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array-int.h"
#include "away.h"
#include "manage.h"
#include "missed.h"
#include "util.h"

#define AWAY_POLL_NS 1000000000ull         /* re-check at least this often */

/* After a failed try: the next one, backing off. */
static void
try_failed (struct away_try *w, uint64_t now)
{
  w->backoff_ns = w->backoff_ns ? raid_min_u64 (w->backoff_ns * 2, AWAY_BACKOFF_MAX_NS)
    : AWAY_BACKOFF_MIN_NS;
  w->next_ns = now + w->backoff_ns;
}

static void
try_reset (struct away_try *w)
{
  memset (w, 0, sizeof *w);
}

/* Log a failed try unless it failed exactly as the last logged one did: an
 * unreachable member does not flood the log, but every new reason (another
 * errno, a member that answers with the wrong contents) is reported. */
static void __attribute__ ((format (printf, 2, 3)))
log_once (struct away_try *w, const char *fmt, ...)
{
  char msg[768];
  uint32_t h = 2166136261u;                /* FNV-1a of the message */
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  for (const char *p = msg; *p; p++)
    h = (h ^ (uint8_t) *p) * 16777619u;
  h |= 1;                                  /* 0: nothing logged */
  if (w->logged == h)
    return;
  raid_log (RAID_LOG_WARN, "%s", msg);
  w->logged = h;
}

/* How long one reconnect attempt may take to connect: at most
 * AWAY_CONNECT_MAX_NS (an address that swallows packets must not hold the
 * attempt past the moment the member is back), and no later than the
 * member's write-off at `end`, but at least AWAY_CONNECT_MIN_NS. */
static uint64_t
connect_bound (struct raid_array *a, uint64_t end, uint64_t now)
{
  uint64_t left = a->member_timeout_ns && end > now ? end - now : AWAY_CONNECT_MAX_NS;

  return raid_max_u64 (AWAY_CONNECT_MIN_NS, raid_min_u64 (left, AWAY_CONNECT_MAX_NS));
}

/* Try to take back away member t, open as m (no lock held). */
static void
try_member (struct raid_array *a, int t, struct member *m, uint64_t now, uint64_t bound)
{
  struct away_try *w = &a->away.member[t];
  struct raid_sb *own = malloc (sizeof *own);
  char e[512], why[256];
  bool same;

  if (!own)
    return try_failed (w, now);
  if (member_reconnect_within (m, bound, e, sizeof e) != 0) {
    log_once (w, "%s; trying again", e);
    try_failed (w, now);
  }
  else if (sb_read_newest (m, own, e, sizeof e) != 0) {
    log_once (w, "%s: back, but its superblock cannot be read (%s): not used",
              member_spec (m), e);
    try_failed (w, now);
  }
  else {
    pthread_mutex_lock (&a->state_lock);
    same = state_record_names (a, t, own, why, sizeof why);
    pthread_mutex_unlock (&a->state_lock);
    if (!same) {
      log_once (w, "%s: answers again, but %s: refused", member_spec (m), why);
      try_failed (w, now);
    }
    else if (manage_member_back (a, t, m, own) == 0)
      try_reset (w);
  }
  free (own);
}

/* Try to have down spare t, open as m, back (no lock held): connected
 * again and still this array's member, it gets the current record and is
 * a spare in use again.  Until then it is unverified (pass): connected
 * but not checked, or found to be something else, it is never used. */
static void
try_spare (struct raid_array *a, int t, struct member *m, uint64_t now)
{
  struct away_try *w = &a->away.member[t];
  struct raid_sb *own = malloc (sizeof *own);
  char e[512], why[256];
  bool same = false;

  if (!own)
    return try_failed (w, now);
  if (member_reconnect_within (m, AWAY_CONNECT_MAX_NS, e, sizeof e) != 0)
    log_once (w, "%s; trying again", e);
  else if (sb_read_newest (m, own, e, sizeof e) != 0)
    log_once (w, "spare %s: back, but its superblock cannot be read (%s): not used",
              member_spec (m), e);
  else {
    pthread_mutex_lock (&a->state_lock);
    same = atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE && a->mem[t].m == m &&
      state_record_names (a, t, own, why, sizeof why);
    if (same) {
      a->mem[t].unverified = false;        /* in use again */
      raid_log (RAID_LOG_INFO, "spare %s is back", member_spec (m));
      state_commit (a);                    /* its record is current again */
      state_changed (a);                   /* a role may be waiting for it */
    }
    pthread_mutex_unlock (&a->state_lock);
    if (!same)
      log_once (w, "spare %s: answers again, but %s: not used", member_spec (m), why);
  }
  if (same)
    try_reset (w);
  else
    try_failed (w, now);
  free (own);
}

/* Try a spec that could not be reached at the start (no lock held).
 * True when it is settled (rejoined, or not ours: dropped). */
static bool
try_pending (struct raid_array *a, int i, uint64_t now)
{
  struct away_try *w = &a->away.pending_try[i];
  char e[512];
  int r = manage_rejoin_spec (a, a->away.pending[i], e, sizeof e);

  if (r == 0) {
    raid_log (RAID_LOG_INFO, "%s: reached: it rejoins", a->away.pending[i]);
    return true;
  }
  if (r == ENODEV || r == EBUSY || r == EEXIST || r == EROFS) {
    raid_log (RAID_LOG_WARN, "%s", e);
    return true;
  }
  log_once (w, "%s: not reached yet (%s); trying again", a->away.pending[i], e);
  try_failed (w, now);
  return false;
}

/* One pass over the away members (state lock held; dropped around I/O and
 * management).  Returns when the next pass is due. */
static uint64_t
pass (struct raid_array *a)
{
  uint64_t now = raid_now_mono_ns (), wake = now + AWAY_POLL_NS;

  for (int t = 0; t < (int) a->sb.nmembers && !a->away.stop; t++) {
    struct member *m = a->mem[t].m;
    uint64_t since = a->mem[t].away_ns, end = since + a->member_timeout_ns;
    struct away_try *w = &a->away.member[t];

    if (m && atomic_load (&a->mem[t].state) == RAID_MEMBER_SPARE &&
        (member_is_down (m) || a->mem[t].unverified)) {
      a->mem[t].unverified = true;         /* until try_spare has checked it */
      if (now >= w->next_ns) {             /* a spare whose connection was lost */
        pthread_mutex_unlock (&a->state_lock);
        try_spare (a, t, m, now);
        pthread_mutex_lock (&a->state_lock);
      }
      wake = raid_min_u64 (wake, w->next_ns);
      continue;
    }
    if (atomic_load (&a->mem[t].state) != RAID_MEMBER_MISSING ||
        a->sb.members[t].role < 0 || !since) {
      try_reset (w);
      a->away.grace_over[t] = false;
      continue;
    }
    if (!m) {                              /* absent since the start */
      if (a->member_timeout_ns && now < end)
        wake = raid_min_u64 (wake, end);
      else if (!a->away.grace_over[t]) {
        a->away.grace_over[t] = true;      /* a spare may take the role */
        state_changed (a);
      }
      continue;
    }
    if (a->member_timeout_ns && now >= end) {
      pthread_mutex_unlock (&a->state_lock);
      manage_write_off (a, t, since);
      pthread_mutex_lock (&a->state_lock);
      continue;
    }
    if (now >= w->next_ns) {
      uint64_t bound = connect_bound (a, end, now);
      pthread_mutex_unlock (&a->state_lock);
      try_member (a, t, m, now, bound);
      pthread_mutex_lock (&a->state_lock);
    }
    wake = raid_min_u64 (wake, raid_min_u64 (w->next_ns, end));
  }
  for (int i = 0; i < a->away.npending && !a->away.stop; i++) {
    struct away_try *w = &a->away.pending_try[i];
    if (now >= w->next_ns) {
      bool settled;
      pthread_mutex_unlock (&a->state_lock);
      settled = try_pending (a, i, now);
      pthread_mutex_lock (&a->state_lock);
      if (settled) {
        free (a->away.pending[i]);
        a->away.pending[i] = a->away.pending[--a->away.npending];
        a->away.pending_try[i] = a->away.pending_try[a->away.npending];
        i--;
        continue;
      }
    }
    wake = raid_min_u64 (wake, w->next_ns);
  }
  return wake;
}

static void *
watcher (void *arg)
{
  struct raid_array *a = arg;
  uint64_t seen = 0;

  pthread_mutex_lock (&a->state_lock);
  while (!a->away.stop) {
    uint64_t wake;
    struct timespec ts;

    pthread_mutex_unlock (&a->state_lock);
    missed_settle (a);                     /* maps begun meanwhile */
    pthread_mutex_lock (&a->state_lock);
    seen = a->state_gen;
    wake = pass (a);
    if (a->away.stop || a->state_gen != seen)
      continue;                            /* something changed: look again */
    ts.tv_sec = wake / 1000000000;
    ts.tv_nsec = wake % 1000000000;
    pthread_cond_timedwait (&a->changed, &a->state_lock, &ts);
  }
  pthread_mutex_unlock (&a->state_lock);
  return NULL;
}

int
away_start (struct raid_array *a)
{
  int r;

  if (a->readonly || a->away.started)
    return 0;
  if ((r = pthread_create (&a->away.thread, NULL, watcher, a)) != 0)
    return r;
  a->away.started = true;
  return 0;
}

void
away_stop (struct raid_array *a)
{
  if (!a->away.started)
    return;
  pthread_mutex_lock (&a->state_lock);
  a->away.stop = true;
  pthread_cond_broadcast (&a->changed);
  pthread_mutex_unlock (&a->state_lock);
  pthread_join (a->away.thread, NULL);
  a->away.started = false;
}

void
away_fini (struct raid_array *a)
{
  for (int i = 0; i < a->away.npending; i++)
    free (a->away.pending[i]);
  a->away.npending = 0;
}

int
raid_array_add_pending (struct raid_array *a, const char *spec)
{
  char *s;

  if (a->away.npending == SB_MAX_MEMBERS || !(s = strdup (spec)))
    return ENOMEM;
  pthread_mutex_lock (&a->state_lock);
  a->away.pending[a->away.npending] = s;
  try_reset (&a->away.pending_try[a->away.npending]);
  a->away.npending++;
  pthread_cond_broadcast (&a->changed);
  pthread_mutex_unlock (&a->state_lock);
  return 0;
}
