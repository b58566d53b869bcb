/* nbdkit-raid: interactions between client I/O, management requests and
 * background work.  Each test states the behaviour it expects (the rules
 * of nbdkit-raid-plugin(1): Failures, Live reshape, Management).
 *
 * One test per known interaction defect, numbered as in the issue.  Each
 * test runs in its own forked process under an alarm, so a hang or an
 * abort() in the engine is reported as that test's failure and the others
 * still run.  Interleavings are made deterministic without touching the
 * engine's internals (public headers only):
 *   - members are custom backends over the fixture's in-memory devices whose
 *     operations obey "rules": when armed, an operation of one kind on one
 *     member in an offset range blocks on a gate until the test lets it
 *     through, fails with EIO, or is dropped (a lost write);
 *   - members named in add/replace/reshape requests are simulated devices
 *     ("sim:NAME") handed out by the member open hook;
 *   - raid_test_hooks (reshape_window, reshape_pause) make a reshape move
 *     one window at a time; raid_array_status is polled for positions and
 *     states;
 *   - allocation failures are injected by wrapping posix_memalign at link
 *     time (-Wl,--wrap=posix_memalign), for threads the test did not start.
 * Every wait is bounded.  Where the correct engine waits and the defective
 * one does not, the test waits a bounded time (BOUND_MS) and says why next
 * to the wait.  Where an engine cannot be staged the way a test needs (a
 * finish that flushes nothing, a resize that zeroes with plain writes), the
 * test prints a note and checks nothing it could not stage.
 *
 * Usage: test-interact [--only N]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"
#include "array.h"
#include "bitmap.h"
#include "create.h"
#include "geometry.h"
#include "member.h"
#include "util.h"

#define MSIZE (24u << 20)          /* member size */
#define DOFF (8u << 20)            /* data offset: 4 MiB of head room */
#define CHUNK 65536u
#define BOUND_MS 300               /* "the fixed code waits here, the buggy one does not" */
#define LONG_MS 5000               /* what one bounded background step may take */
#define TEST_TIMEOUT_S 25          /* a test still running then has hung */
#define MAX_RULES 16
#define MAX_SIMS 4

static void run_forked (const char *what, void (*fn) (void *), void *arg, unsigned secs);

static uint64_t
now_ms (void)
{
  return raid_now_mono_ns () / 1000000;
}

static void
sleep_ms (unsigned ms)
{
  usleep (ms * 1000u);
}

static bool
sem_wait_ms (sem_t *s, unsigned ms)
{
  struct timespec ts;
  int r;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long) (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  while ((r = sem_timedwait (s, &ts)) == -1 && errno == EINTR)
    ;
  return r == 0;
}

/* ------------------------------------------------------------------
 * Gates: a member operation stops at a gate until the test opens it.
 */
struct gate {
  sem_t reached, release;
};

static void
gate_init (struct gate *g)
{
  sem_init (&g->reached, 0, 0);
  sem_init (&g->release, 0, 0);
}

/* In a member operation: announce it, wait to be let through.  At most
 * 10 s, so that a test that gave up never leaves the engine stuck here. */
static void
gate_pass (struct gate *g)
{
  sem_post (&g->reached);
  sem_wait_ms (&g->release, 10000);
}

static bool
gate_reached (struct gate *g, unsigned ms)
{
  return sem_wait_ms (&g->reached, ms);
}

static void
gate_open (struct gate *g)
{
  sem_post (&g->release);
}

/* ------------------------------------------------------------------
 * Rules on member operations, and the custom backend that obeys them.
 */
enum op_kind { OP_READ, OP_WRITE, OP_FLUSH, OP_ZERO };
enum rule_act {
  BLOCK,                           /* wait at the gate before the operation */
  NOTIFY,                          /* post gate.reached after it completed */
  FAIL,                            /* fail it with EIO */
  DROP,                            /* skip it, reporting success (a lost write) */
  DELAY,                           /* take DELAY_MS longer (a far member) */
};
#define DELAY_MS 2

struct rule {
  struct memdev *dev;              /* NULL: any member */
  enum op_kind op;
  uint64_t lo, hi;                 /* operations starting in [lo, hi) */
  enum rule_act act;
  _Atomic int armed;               /* times it still fires; -1: until disarmed */
  _Atomic uint64_t last_off;       /* where it fired last */
  struct memdev *_Atomic last_dev; /* on which member */
  struct gate gate;                /* BLOCK */
};

static struct rule *rules[MAX_RULES];
static _Atomic int nrules;

static struct rule *
rule_new (struct memdev *dev, enum op_kind op, uint64_t lo, uint64_t hi,
          enum rule_act act)
{
  struct rule *r = calloc (1, sizeof *r);

  if (atomic_load (&nrules) == MAX_RULES) {
    fprintf (stderr, "test-interact: more than %d rules\n", MAX_RULES);
    exit (1);
  }
  r->dev = dev; r->op = op; r->lo = lo; r->hi = hi; r->act = act;
  gate_init (&r->gate);
  rules[atomic_load (&nrules)] = r;
  atomic_fetch_add (&nrules, 1);
  return r;
}

static void
rule_arm (struct rule *r, int times)
{
  atomic_store (&r->armed, times);
}

/* Disarm every rule before the next case (their memory stays valid for
 * any thread a failed case left behind). */
static void
rules_reset (void)
{
  for (int i = 0; i < atomic_load (&nrules); i++)
    atomic_store (&rules[i]->armed, 0);
  atomic_store (&nrules, 0);
}

/* Before the operation (after = false): 0 to go on, -1 to drop it
 * (report success), else an errno.  After it: NOTIFY rules. */
static int
apply_rules (struct memdev *d, enum op_kind op, uint64_t off, bool after)
{
  for (int i = 0; i < atomic_load (&nrules); i++) {
    struct rule *r = rules[i];
    int n = atomic_load (&r->armed);
    if (!n || r->op != op || (r->dev && r->dev != d) || off < r->lo || off >= r->hi ||
        after != (r->act == NOTIFY))
      continue;
    if (n > 0 && !atomic_compare_exchange_strong (&r->armed, &n, n - 1))
      continue;
    atomic_store (&r->last_off, off);
    atomic_store (&r->last_dev, d);
    if (r->act == BLOCK)
      gate_pass (&r->gate);
    else if (r->act == DELAY)
      sleep_ms (DELAY_MS);
    else if (r->act == NOTIFY)
      sem_post (&r->gate.reached);
    else
      return r->act == FAIL ? EIO : -1;
  }
  return 0;
}

static int
hk_pread (void *p, void *buf, size_t len, uint64_t off)
{
  int r = apply_rules (p, OP_READ, off, false);

  if (r == 0)
    r = md_ops.pread (p, buf, len, off);
  apply_rules (p, OP_READ, off, true);
  return r < 0 ? 0 : r;
}

/* Writes of one member (or of every member: SEEN_ALL) in one range,
 * recorded with the member and the thread that issued them (tests 15, 17):
 * custom members run in the calling thread. */
#define MAX_SEEN 256
#define SEEN_ALL ((struct memdev *) 1)
static struct memdev *_Atomic seen_dev;
static uint64_t seen_lo, seen_hi;
static struct { uint64_t off; size_t len; pthread_t th; struct memdev *d; } seen_w[MAX_SEEN];
static _Atomic int nseen;

static void
see_write (struct memdev *d, uint64_t off, size_t len)
{
  struct memdev *want = atomic_load (&seen_dev);
  int i;

  if ((want != d && want != SEEN_ALL) || off < seen_lo || off >= seen_hi ||
      (i = atomic_fetch_add (&nseen, 1)) >= MAX_SEEN)
    return;
  seen_w[i].off = off;
  seen_w[i].len = len;
  seen_w[i].th = pthread_self ();
  seen_w[i].d = d;
}

/* The most writes of seen_dev in [seen_lo, seen_hi) that were in flight
 * at once (test 18). */
static _Atomic int seen_inflight, seen_inflight_max;

static void
see_inflight (struct memdev *d, uint64_t off, int delta)
{
  int n;

  if (atomic_load (&seen_dev) != d || off < seen_lo || off >= seen_hi)
    return;
  n = atomic_fetch_add (&seen_inflight, delta) + delta;
  for (int m = atomic_load (&seen_inflight_max); n > m &&
       !atomic_compare_exchange_weak (&seen_inflight_max, &m, n);)
    ;
}

/* Record the writes of d (or SEEN_ALL) in [lo, hi) from now on, afresh. */
static void
see_from (struct memdev *d, uint64_t lo, uint64_t hi)
{
  seen_lo = lo;
  seen_hi = hi;
  atomic_store (&nseen, 0);
  atomic_store (&seen_inflight_max, 0);
  atomic_store (&seen_dev, d);
}

static int
hk_pwrite (void *p, const void *buf, size_t len, uint64_t off, bool fua)
{
  int r;

  see_inflight (p, off, 1);
  r = apply_rules (p, OP_WRITE, off, false);
  see_inflight (p, off, -1);
  see_write (p, off, len);

  if (r == 0)
    r = md_ops.pwrite (p, buf, len, off, fua);
  apply_rules (p, OP_WRITE, off, true);
  return r < 0 ? 0 : r;
}

static int
hk_flush (void *p)
{
  int r = apply_rules (p, OP_FLUSH, 0, false);

  if (r == 0)
    r = md_ops.flush (p);
  apply_rules (p, OP_FLUSH, 0, true);
  return r < 0 ? 0 : r;
}

static int
md_zero (struct memdev *d, size_t len, uint64_t off)
{
  if (d->fail_writes || off + len > d->size)
    return EIO;
  memset (d->data + off, 0, len);
  return 0;
}

static int
hk_zero (void *p, size_t len, uint64_t off, bool fua)
{
  int r = apply_rules (p, OP_ZERO, off, false);

  if (r == 0)
    r = md_zero (p, len, off);
  apply_rules (p, OP_ZERO, off, true);
  return r < 0 ? 0 : r;
}

static const struct member_custom_ops hk_ops = {
  .pread = hk_pread, .pwrite = hk_pwrite, .flush = hk_flush, .zero = hk_zero,
};

/* ------------------------------------------------------------------
 * Simulated members named in requests ("sim:NAME"), via the open hook.
 */
struct sim {
  char name[32];
  struct memdev dev;
  _Atomic bool gated;              /* opening it stops at open_gate */
  struct gate open_gate;
};

static struct sim sims[MAX_SIMS];
static int nsims;
static void (*open_delay) (const char *spec);   /* other specs (test 7) */

static struct sim *
sim_find (const char *name)
{
  for (int i = 0; i < nsims; i++)
    if (strcmp (sims[i].name, name) == 0)
      return &sims[i];
  return NULL;
}

/* A new empty device of MSIZE bytes behind the spec `name`. */
static struct memdev *
sim_new (const char *name)
{
  struct sim *s = sim_find (name);

  if (!s)
    s = &sims[nsims++];
  memset (s, 0, sizeof *s);
  snprintf (s->name, sizeof s->name, "%s", name);
  s->dev.size = MSIZE;
  s->dev.data = calloc (1, MSIZE);
  gate_init (&s->open_gate);
  return &s->dev;
}

static struct gate *
sim_gate (const char *name)
{
  struct sim *s = sim_find (name);
  atomic_store (&s->gated, true);
  return &s->open_gate;
}

static struct member *
open_hook (const char *spec)
{
  struct sim *s = sim_find (spec);

  if (!s) {
    if (open_delay)
      open_delay (spec);
    return NULL;
  }
  if (atomic_exchange (&s->gated, false))
    gate_pass (&s->open_gate);
  return member_new_custom (spec, s->dev.size, &hk_ops, &s->dev);
}

/* ------------------------------------------------------------------
 * Jobs: an engine call in its own thread, waited for with a bound.  A job
 * that does not finish is abandoned (it frees itself if it ever ends).
 */
static _Thread_local bool test_thread;   /* threads of this test (not the engine's) */

struct job {
  int (*fn) (struct job *);
  struct raid_array *a;
  sem_t done;
  bool finished;
  _Atomic int refs;
  int ret;
  /* arguments and results */
  uint8_t *buf;
  uint64_t off, len;
  const char *name;
  const char *add[1];
  struct raid_reshape_req req;
  struct raid_status st;
  char err[256];
};

static void
job_put (struct job *j)
{
  if (atomic_fetch_sub (&j->refs, 1) == 1) {
    free (j->buf);
    free (j);
  }
}

static void *
job_main (void *p)
{
  struct job *j = p;

  test_thread = true;
  j->ret = j->fn (j);
  sem_post (&j->done);
  job_put (j);
  return NULL;
}

static struct job *
job_new (int (*fn) (struct job *), struct raid_array *a)
{
  struct job *j = calloc (1, sizeof *j);

  j->fn = fn;
  j->a = a;
  atomic_store (&j->refs, 2);
  sem_init (&j->done, 0, 0);
  return j;
}

static struct job *
job_go (struct job *j)
{
  pthread_t th;

  if (pthread_create (&th, NULL, job_main, j) != 0) {
    perror ("pthread_create");
    exit (1);
  }
  pthread_detach (th);
  return j;
}

/* Whether the job has finished (waiting at most ms for it). */
static bool
job_done (struct job *j, unsigned ms)
{
  if (!j->finished)
    j->finished = sem_wait_ms (&j->done, ms);
  return j->finished;
}

static int j_pwrite (struct job *j) { return raid_array_pwrite (j->a, j->buf, j->len, j->off, 0); }
static int j_pread (struct job *j) { return raid_array_pread (j->a, j->buf, j->len, j->off); }
static int j_start (struct job *j) { return raid_array_start_action (j->a, j->err, sizeof j->err); }
static int j_freeze (struct job *j) { return raid_array_freeze (j->a, j->err, sizeof j->err); }
static int j_resize (struct job *j) { return raid_array_resize (j->a, j->len, true, j->err, sizeof j->err); }
static int j_close (struct job *j) { raid_array_close (j->a); return 0; }
static int j_wait (struct job *j) { return raid_array_wait (j->a, 0.5); }
static int j_check (struct job *j) { return raid_array_check (j->a, false, j->err, sizeof j->err); }

static int
j_status (struct job *j)
{
  raid_array_status (j->a, &j->st);
  return 0;
}

static int
j_replace (struct job *j)
{
  return raid_array_replace (j->a, j->name, NULL, j->err, sizeof j->err);
}

static int
j_reshape (struct job *j)
{
  return raid_array_reshape (j->a, &j->req, &j->st, j->err, sizeof j->err);
}

static int
j_reshape_start (struct job *j)
{
  int r = j_reshape (j);
  return r ? r : j_start (j);
}

/* A write of len bytes of `fill` at off, or a read (fill < 0); io_job
 * starts it. */
static struct job *
io_job_new (struct raid_array *a, int fill, uint64_t len, uint64_t off)
{
  struct job *j = job_new (fill < 0 ? j_pread : j_pwrite, a);

  j->buf = malloc (len);
  memset (j->buf, fill < 0 ? 0 : fill, len);
  j->len = len;
  j->off = off;
  return j;
}

static struct job *
io_job (struct raid_array *a, int fill, uint64_t len, uint64_t off)
{
  return job_go (io_job_new (a, fill, len, off));
}

/* A reshape (prepare) request: level (-1 same), chunk (0 same), one member
 * to add or NULL.  Not started: set more fields, then job_go. */
static struct job *
reshape_job (struct raid_array *a, int level, uint32_t chunk, const char *add)
{
  struct job *j = job_new (j_reshape, a);

  j->add[0] = add;
  j->req = (struct raid_reshape_req) { level, -1, chunk, 0, add ? 1 : 0, j->add };
  return j;
}

/* Run fn; its result if it returns within ms, else -1 (abandoned). */
static int
call_within (struct job *j, unsigned ms)
{
  int r;

  job_go (j);
  r = job_done (j, ms) ? j->ret : -1;
  job_put (j);
  return r;
}

/* Status, unless it does not return within ms (e.g. because the thread we
 * hold at a gate holds the lock status takes). */
static bool
status_within (struct raid_array *a, struct raid_status *st, unsigned ms)
{
  struct job *j = job_go (job_new (j_status, a));
  bool ok = job_done (j, ms);

  if (ok)
    *st = j->st;
  job_put (j);
  return ok;
}

/* ------------------------------------------------------------------
 * Arrays.
 */
static const char *const dev_names[] = { "dev0", "dev1", "dev2", "dev3", "dev4", "dev5" };

/* Assemble over hk_ops members, set the test hooks, start. */
static struct raid_array *
assemble_devs_opts (struct memdev *const *devs, const char *const *names, int n,
                    const struct raid_test_hooks *h, const struct raid_assemble_opts *o)
{
  struct member *ms[RAID_MAX_MEMBERS];
  struct raid_array *a;
  char err[512];

  for (int i = 0; i < n; i++)
    ms[i] = member_new_custom (names[i], devs[i]->size, &hk_ops, devs[i]);
  if (raid_array_assemble (ms, n, o, &a, err, sizeof err) < 0) {
    CHECK (0, "assemble: %s", err);
    return NULL;
  }
  if (h)
    raid_array_set_test_hooks (a, h);
  CHECK (raid_array_start (a) == 0, "raid_array_start");
  return a;
}

static struct raid_array *
assemble_devs (struct memdev *const *devs, const char *const *names, int n,
               const struct raid_test_hooks *h)
{
  return assemble_devs_opts (devs, names, n, h, &(struct raid_assemble_opts) { 0 });
}

/* The fixture's members plus the simulated members named in sims_used. */
static struct raid_array *
reassemble (struct fixture *f, const char *const *sims_used, int nsim,
            const struct raid_test_hooks *h)
{
  struct memdev *devs[RAID_MAX_MEMBERS];
  const char *names[RAID_MAX_MEMBERS];

  for (int i = 0; i < f->n; i++) {
    devs[i] = &f->dev[i];
    names[i] = dev_names[i];
  }
  for (int i = 0; i < nsim; i++) {
    devs[f->n + i] = &sim_find (sims_used[i])->dev;
    names[f->n + i] = sims_used[i];
  }
  return assemble_devs (devs, names, f->n + nsim, h);
}

/* Close within LONG_MS; false (and the array abandoned) when it hangs. */
static bool
close_array (struct raid_array *a)
{
  bool ok = a == NULL || call_within (job_new (j_close, a), LONG_MS) == 0;

  CHECK (ok, "raid_array_close did not return within %u ms", LONG_MS);
  return ok;
}

static void
teardown (struct fixture *f)
{
  if (!close_array (f->a))
    return;
  f->a = NULL;
  for (int i = 0; i < f->n; i++)
    free (f->dev[i].data);
  free (f->model);
}

/* An array of n members (role i on dev i) over hk_ops, filled with a
 * pattern the model holds. */
static bool
setup (struct fixture *f, int level, int n, uint32_t chunk, const struct raid_test_hooks *h)
{
  int r;

  rules_reset ();
  make_array_ex (f, level, level == 0 ? -1 : raid_layout_default (level), n, chunk,
                 MSIZE, DOFF);
  raid_array_close (f->a);
  if (!(f->a = reassemble (f, NULL, 0, h)))
    return false;
  for (uint64_t i = 0; i < f->size; i++)
    f->model[i] = (uint8_t) (1 + (i * 31 + i / 4093) % 251);
  r = raid_array_pwrite (f->a, f->model, f->size, 0, 0);
  CHECK (r == 0, "fill: %s", strerror (r));
  return r == 0;
}

static const struct raid_member_status *
find_spec (const struct raid_status *st, const char *spec)
{
  for (int i = 0; i < st->nmembers; i++)
    if (strcmp (st->members[i].spec, spec) == 0)
      return &st->members[i];
  return NULL;
}

static const struct raid_member_status *
find_role (const struct raid_status *st, int role)
{
  for (int i = 0; i < st->nmembers; i++)
    if (st->members[i].role == role)
      return &st->members[i];
  return NULL;
}

static const char *
state_of (const struct raid_member_status *m)
{
  return m ? raid_member_state_name (m->state) : "absent";
}

/* Until the sync action is idle (true) or secs pass. */
static bool
wait_idle (struct raid_array *a, unsigned secs)
{
  uint64_t end = now_ms () + secs * 1000ull;
  struct raid_status st;

  do {
    raid_array_wait (a, 0.5);
    raid_array_status (a, &st);
    if (st.sync_action == RAID_SYNC_IDLE)
      return true;
    if (st.sync_action == RAID_SYNC_FROZEN)
      sleep_ms (10);
  } while (now_ms () < end);
  return false;
}

static bool
prepare (struct raid_array *a, int level, uint32_t chunk, const char *add, bool start)
{
  const char *adds[1] = { add };
  struct raid_reshape_req req = { level, -1, chunk, 0, add ? 1 : 0, adds };
  char err[256];
  int r = raid_array_reshape (a, &req, NULL, err, sizeof err);

  CHECK (r == 0, "reshape (prepare): %s", err);
  if (r == 0 && start) {
    r = raid_array_start_action (a, err, sizeof err);
    CHECK (r == 0, "start: %s", err);
  }
  return r == 0;
}

/* Drive a reshape to its end, starting it whenever it is frozen (the
 * pause hook leaves it so after every step).  False when it does not end
 * within secs or stops with its record still there. */
static bool
run_reshape (struct raid_array *a, unsigned secs)
{
  uint64_t end = now_ms () + secs * 1000ull;
  struct raid_status st;
  char err[256] = "";

  for (;;) {
    raid_array_status (a, &st);
    if (!st.has_reshape)
      return true;
    if (now_ms () > end || st.sync_action == RAID_SYNC_IDLE)
      break;
    if (st.sync_action == RAID_SYNC_FROZEN &&
        raid_array_start_action (a, err, sizeof err) != 0)
      break;
    raid_array_wait (a, 1);
  }
  CHECK (0, "the reshape did not complete: position %" PRIu64 " of %" PRIu64
         ", sync action %s%s%s", st.reshape.position, st.reshape.total,
         raid_sync_action_name (st.sync_action), *err ? ", start: " : "", err);
  return false;
}

/* With the pause hook: run steps until at most `left` bytes remain. */
static bool
run_steps_until (struct raid_array *a, uint64_t left)
{
  struct raid_status st;
  char err[256] = "";

  for (int i = 0; i < 1000; i++) {
    raid_array_status (a, &st);
    if (!st.has_reshape)
      break;
    if (st.reshape.total - st.reshape.position <= left)
      return true;
    if (raid_array_start_action (a, err, sizeof err) != 0)
      break;
    raid_array_wait (a, 5);
  }
  CHECK (0, "reshape steps: %s", *err ? err : "no reshape left");
  return false;
}

/* Health optimal, nothing running, `spec` in sync in `role`. */
static void
expect_optimal_with (struct raid_array *a, const char *spec, int role, const char *when)
{
  struct raid_status st;
  const struct raid_member_status *m;

  raid_array_status (a, &st);
  m = find_spec (&st, spec);
  CHECK (st.health == RAID_HEALTH_OPTIMAL && st.sync_action == RAID_SYNC_IDLE &&
         !st.has_reshape, "%s: health %s, sync action %s, reshape record %d "
         "(expected optimal, idle, none)", when, raid_health_name (st.health),
         raid_sync_action_name (st.sync_action), st.has_reshape);
  CHECK (m && m->state == RAID_MEMBER_IN_SYNC && m->role == role,
         "%s: %s is %s with role %d (expected in_sync in role %d)", when, spec,
         state_of (m), m ? m->role : -2, role);
}

/* Parity of every row, with the member of `role` on device d. */
static int
parity_with (struct fixture *f, int role, const struct memdev *d)
{
  struct fixture view = *f;

  view.dev[role] = *d;
  return verify_parity (&view, 0);
}

static void
fail_member (struct raid_array *a, const char *name)
{
  char err[256];
  int r = raid_array_fail (a, name, err, sizeof err);

  CHECK (r == 0, "fail %s: %s", name, err);
}

static void
add_member (struct raid_array *a, const char *spec)
{
  char err[256];
  int r = raid_array_add (a, spec, false, err, sizeof err);

  CHECK (r == 0, "add %s: %s", spec, err);
}

/* Add sim:spare (spare) and replace role 0 onto it, the copy held at its
 * first write past row 0 (its second batch, rows 64.. locked): the rule
 * holding it, or NULL (a failed check) when the copy never got there. */
static struct rule *
replace_held (struct fixture *f, struct memdev *spare)
{
  struct rule *copy;
  char err[256];

  add_member (f->a, "sim:spare");
  copy = rule_new (spare, OP_WRITE, DOFF + 1, UINT64_MAX, BLOCK);
  rule_arm (copy, 1);
  CHECK (raid_array_replace (f->a, "0", "sim:spare", err, sizeof err) == 0, "replace: %s", err);
  if (!gate_reached (&copy->gate, LONG_MS)) {
    CHECK (0, "the replace never copied past row 0");
    return NULL;
  }
  return copy;
}

/* ==================================================================
 * 1. Zero of whole stripe rows during a replace.
 * Interleaving: the replace's copy onto the spare stops at its first
 * write past row 0; rows it has copied already are zeroed; the copy goes on.
 * Expected: after the replace the zeroed rows read as zeros, parity is
 * consistent with the replacement, and everything reads back with another
 * member failed.
 */
static void
test_zero_during_replace (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  struct raid_status st;
  struct rule *copy;
  uint64_t rows;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  if (!(copy = replace_held (&f, spare)))
    return;
  rows = raid_min_u64 ((atomic_load (&copy->last_off) - DOFF) / CHUNK, 4);
  CHECK (rows > 0 && raid_array_zero (f.a, rows * raid_array_stripe_width (f.a), 0, 0,
                                      false) == 0, "zero of %" PRIu64 " copied rows", rows);
  memset (f.model, 0, rows * raid_array_stripe_width (f.a));
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 10), "the replace did not end");
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "sim:spare") && find_spec (&st, "sim:spare")->role == 0,
         "the replacement did not take role 0");
  verify_contents (&f, "after the replace");
  CHECK (parity_with (&f, 0, spare) == 0, "rows with wrong parity after the replace");
  fail_member (f.a, "1");
  verify_contents (&f, "after the replace, role 1 failed");
  teardown (&f);
}

/* ==================================================================
 * 2. A request waiting while the reshape's finish holds the whole array.
 * Interleaving: the last step runs; the first member-0 flush made while
 * status shows position == total (the finish, holding the array) is held;
 * W2 (4K at 0) is issued and waits; the finish is released; W2 stops in its
 * data write on member 0; W3 (4K at 32K, same new row) is issued; W2 goes on.
 * Expected: W2 and W3 exclude each other, so no parity update is lost:
 * contents equal the model, also with role 1 (W3's block) failed.  (An
 * engine whose finish flushes nothing while holding the array cannot be
 * staged this way: the test then says so and checks nothing more.)
 */
enum held { HELD, ENDED, STUCK };

static enum held
hold_finish_at_flush (struct raid_array *a, struct rule *fl)
{
  uint64_t end = now_ms () + 10000;
  struct raid_status st;

  while (now_ms () < end) {
    bool at_flush = gate_reached (&fl->gate, 200);
    /* A flush made under the lock status takes makes status wait: that
     * flush is not the finish's (which holds the array, not that lock). */
    bool got = status_within (a, &st, BOUND_MS);
    if (at_flush && got && st.has_reshape && st.reshape.position == st.reshape.total)
      return HELD;
    if (at_flush)
      gate_open (&fl->gate);
    else if (got && !st.has_reshape)
      return ENDED;
    else if (got && st.sync_action == RAID_SYNC_FROZEN)
      job_put (job_go (job_new (j_start, a)));     /* paused again: next step */
  }
  return STUCK;
}

static void
test_finish_race (void)
{
  struct raid_test_hooks h = { .reshape_window = 4u << 20, .reshape_pause = true };
  struct fixture f;
  struct rule *fl, *wr;
  struct job *w2, *w3;
  enum held held;

  if (!setup (&f, 5, 4, CHUNK, &h) || !prepare (f.a, -1, 32768, NULL, false) ||
      !run_steps_until (f.a, h.reshape_window))
    return;
  fl = rule_new (&f.dev[0], OP_FLUSH, 0, UINT64_MAX, BLOCK);
  wr = rule_new (&f.dev[0], OP_WRITE, RAID_META_END, UINT64_MAX, BLOCK);
  rule_arm (fl, -1);
  job_put (job_go (job_new (j_start, f.a)));       /* the last step, then the finish */
  if ((held = hold_finish_at_flush (f.a, fl)) != HELD) {
    CHECK (held == ENDED, "the reshape's last step or finish did not end");
    if (held == ENDED)
      fprintf (stderr, "note: no member flush while the finish ran: not staged\n");
    return;
  }
  rule_arm (wr, 1);
  w2 = io_job (f.a, 0x11, 4096, 0);
  sleep_ms (BOUND_MS);     /* bounded: lets W2 reach its wait on the finish */
  rule_arm (fl, 0);
  gate_open (&fl->gate);
  CHECK (gate_reached (&wr->gate, LONG_MS), "W2 never wrote its data");
  w3 = io_job (f.a, 0x22, 4096, 32768);
  job_done (w3, BOUND_MS); /* bounded: the fixed engine keeps W3 waiting for W2's row */
  gate_open (&wr->gate);
  CHECK (job_done (w2, LONG_MS) && w2->ret == 0, "W2 (waited on the finish) failed");
  CHECK (job_done (w3, LONG_MS) && w3->ret == 0, "W3 (same row) failed");
  job_put (w2);
  job_put (w3);
  memset (f.model, 0x11, 4096);
  memset (f.model + 32768, 0x22, 4096);
  CHECK (wait_idle (f.a, 10), "the reshape did not end");
  verify_contents (&f, "after the finish race");
  fail_member (f.a, "1");
  verify_contents (&f, "after the finish race, role 1 failed");
  teardown (&f);
}

/* ==================================================================
 * 3. A write in flight when prepare and start arrive.
 * Interleaving: a 4K client write at 0 stops in its data write on member
 * 0; prepare + start run meanwhile (in a thread: the fixed engine may make
 * them wait for the write); the write goes on when the first window has
 * read row 0 from member 0, or after BOUND_MS if it does not.
 * Expected: the acknowledged write reads back after the first window moved
 * past it, and after the reshape completes.
 */
static void
test_inflight_prepare (void)
{
  struct raid_test_hooks h = { .reshape_window = 1u << 20, .reshape_pause = true };
  struct fixture f;
  struct raid_status st;
  struct rule *wr, *rd;
  struct job *w, *p;
  uint8_t rb[4096];

  if (!setup (&f, 5, 4, CHUNK, &h))
    return;
  wr = rule_new (&f.dev[0], OP_WRITE, DOFF, DOFF + CHUNK, BLOCK);
  rd = rule_new (&f.dev[0], OP_READ, DOFF, DOFF + CHUNK, NOTIFY);
  rule_arm (wr, 1);
  w = io_job (f.a, 0x55, 4096, 0);
  if (!gate_reached (&wr->gate, LONG_MS)) {
    CHECK (0, "the client write never reached member 0");
    return;
  }
  rule_arm (rd, 1);
  p = reshape_job (f.a, -1, 32768, NULL);
  p->fn = j_reshape_start;
  job_go (p);
  /* bounded: prepare/start return at once unless the engine makes them
   * wait for the write (then give up after 1 s); after them the buggy
   * engine's first window reads row 0 at once, the fixed one waits */
  if (job_done (p, 1000))
    gate_reached (&rd->gate, BOUND_MS);
  gate_open (&wr->gate);
  CHECK (job_done (w, LONG_MS) && w->ret == 0, "the client write was not acknowledged");
  CHECK (job_done (p, LONG_MS) && p->ret == 0, "prepare/start: %s", p->err);
  job_put (w);
  job_put (p);
  memset (f.model, 0x55, 4096);
  raid_array_wait (f.a, 5);                        /* the first window */
  raid_array_status (f.a, &st);
  CHECK (st.has_reshape && st.reshape.position >= 4096, "the first window did not move");
  CHECK (raid_array_pread (f.a, rb, sizeof rb, 0) == 0 && memcmp (rb, f.model, sizeof rb) == 0,
         "acknowledged write lost after the window moved past it: read 0x%02x, wrote 0x55",
         rb[0]);
  run_reshape (f.a, 20);
  verify_contents (&f, "after the reshape");
  teardown (&f);
}

/* ==================================================================
 * 4. raid0 -> raid5 takeover: the write hole during the reshape.
 * Interleaving: after the first window, a 4K write at 0 (new raid5 layout)
 * has its parity write to the added member dropped; power is lost (member
 * images copied as they are); the array is assembled from the copies.
 * Expected: the reshape finishes, `check` finds 0 mismatches, and with a
 * member the crashed write never touched (role 1) failed, every byte reads
 * back.
 */
/* The power is lost: copies of roles 0-2 (the fixture's dev0-dev2) and
 * of the simulated member `added`, named `name`, assembled. */
static struct raid_array *
crash_copy (struct fixture *f, const struct memdev *added, const char *name,
            struct memdev *img)
{
  struct memdev *devs[4] = { &img[0], &img[1], &img[2], &img[3] };
  const char *names[4] = { "dev0", "dev1", "dev2", name };

  for (int i = 0; i < 4; i++) {
    const struct memdev *src = i < 3 ? &f->dev[i] : added;
    img[i] = (struct memdev) { .size = src->size, .data = malloc (src->size) };
    memcpy (img[i].data, src->data, src->size);
  }
  return assemble_devs (devs, names, 4, NULL);
}

/* The power is lost: copies of dev0-dev3 and of `spare`, in img and
 * pointed to by devs (for assemble_devs with dev0..dev3, sim:spare). */
static void
crash_images (struct fixture *f, const struct memdev *spare, struct memdev img[5],
              struct memdev *devs[5])
{
  for (int i = 0; i < 5; i++) {
    const struct memdev *src = i < 4 ? &f->dev[i] : spare;
    img[i] = (struct memdev) { .size = src->size, .data = malloc (src->size) };
    memcpy (img[i].data, src->data, src->size);
    devs[i] = &img[i];
  }
}

/* After a crash and whatever recovery it owed: the check finds no parity
 * mismatch, and everything reads back with member `fail` failed. */
static void
check_after_crash (struct fixture *f, const char *fail)
{
  struct raid_status st;
  char err[256], when[64];

  CHECK (raid_array_check (f->a, false, err, sizeof err) == 0, "check: %s", err);
  CHECK (wait_idle (f->a, 10), "check did not end");
  raid_array_status (f->a, &st);
  CHECK (st.mismatch_count == 0, "check after the crash: %" PRIu64 " mismatches",
         st.mismatch_count);
  fail_member (f->a, fail);
  snprintf (when, sizeof when, "after the crash, role %s failed", fail);
  verify_contents (f, when);
}

static void
test_takeover_write_hole (void)
{
  struct raid_test_hooks h = { .reshape_window = 1u << 20, .reshape_pause = true };
  struct memdev *added = sim_new ("sim:add"), img[4];
  struct fixture f;
  struct raid_status st;
  const struct raid_member_status *m;
  struct rule *drop;

  if (!setup (&f, 0, 3, CHUNK, &h) || !prepare (f.a, 5, 0, "sim:add", true))
    return;
  raid_array_wait (f.a, 5);
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:add");
  CHECK (m && st.reshape.position >= 4096, "takeover: first window");
  if (!m)
    return;
  drop = rule_new (added, OP_WRITE, m->data_offset, m->data_offset + CHUNK, DROP);
  rule_arm (drop, 1);
  memset (f.model, 0xEE, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "write at 0");
  CHECK (atomic_load (&drop->armed) == 0, "the write wrote no parity to the added member");
  f.a = crash_copy (&f, added, "sim:add", img);               /* the crashed array is abandoned */
  f.level = 5;
  f.layout = RAID_LAYOUT_PARITY_N;
  f.n = 4;
  if (!f.a || !run_reshape (f.a, 20) || !wait_idle (f.a, 10))
    return;
  check_after_crash (&f, "1");
}

/* ==================================================================
 * 4b. A journal replay at a dirty start reaches a member being rebuilt.
 * Interleaving: role 3 is failed and recovered onto a spare; the recovery
 * stops at its second batch and is frozen, so the record says the spare
 * holds the rows of the first batch.  A 4 KiB write at 0 (row 0, whose
 * parity is role 3's) reaches role 0 but its parity write to the spare is
 * lost; the members are copied as a crash left them and assembled again.
 * Expected: the replay writes the logged parity onto the spare (it holds
 * row 0: the recovery will not redo it), so after the recovery ends the
 * check finds no mismatch and the write reads back with role 0 failed.
 */
/* Role 3 failed and recovered onto spare ("sim:spare"), the recovery
 * frozen after its first batch: the spare holds those rows and is still
 * rebuilding.  False (reported) when it could not be staged. */
static bool
recovery_frozen (struct fixture *f, struct memdev *spare)
{
  struct rule *gate;
  struct job *fz;

  fail_member (f->a, "3");
  gate = rule_new (spare, OP_WRITE, DOFF + 1, UINT64_MAX, BLOCK);
  rule_arm (gate, 1);
  add_member (f->a, "sim:spare");
  if (!gate_reached (&gate->gate, LONG_MS)) {
    CHECK (0, "the recovery never wrote past its first batch");
    return false;
  }
  fz = job_go (job_new (j_freeze, f->a));
  /* The freeze must reach the worker while the batch is held, or the
   * recovery (a few batches) may end first: "no action is running".  It
   * makes its transition before it waits for the batch, so status shows
   * it frozen then: wait for that (bounded), not for a fixed time. */
  for (uint64_t end = now_ms () + LONG_MS; now_ms () < end; sleep_ms (1)) {
    struct raid_status st;
    if (status_within (f->a, &st, LONG_MS) && st.sync_action == RAID_SYNC_FROZEN)
      break;
  }
  gate_open (&gate->gate);
  CHECK (job_done (fz, LONG_MS) && fz->ret == 0, "freeze: %s", fz->err);
  return true;
}

static void
test_replay_to_rebuilding (void)
{
  struct memdev *spare = sim_new ("sim:spare"), img[4];
  struct fixture f;
  struct raid_status st;
  struct rule *drop;
  char err[256];

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))   /* the fill's records retired */
    return;
  if (!recovery_frozen (&f, spare))
    return;
  raid_array_status (f.a, &st);
  CHECK (st.sync_action == RAID_SYNC_FROZEN && find_spec (&st, "sim:spare") &&
         find_spec (&st, "sim:spare")->state == RAID_MEMBER_REBUILDING,
         "the recovery is not frozen with the spare rebuilding");
  drop = rule_new (spare, OP_WRITE, DOFF, DOFF + CHUNK, DROP);
  rule_arm (drop, 1);
  memset (f.model, 0xEE, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "write at 0");
  CHECK (atomic_load (&drop->armed) == 0, "the write wrote no parity to the spare");
  if (!(f.a = crash_copy (&f, spare, "sim:spare", img)))   /* the array is abandoned */
    return;
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "sim:spare") &&
         find_spec (&st, "sim:spare")->state == RAID_MEMBER_REBUILDING,
         "after the crash: the spare is not rebuilding");
  if (st.sync_action == RAID_SYNC_FROZEN)
    CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  CHECK (wait_idle (f.a, 20), "the recovery did not end");
  expect_optimal_with (f.a, "sim:spare", 3, "after the recovery");
  check_after_crash (&f, "0");
}

/* 44.  A replay that cannot read a member's log.  Interleaving: a 4 KiB
 * write at 0 (row 0, whose parity is role 3's: its record is on dev3's
 * log alone) reaches role 0, its parity write to dev3 is lost; power is
 * lost; at the start the read of dev3's log fails (EIO), tried again too.
 * Expected: dev3 is failed (its records would be skipped and its parity of
 * row 0 matches neither version), the write reads back, and once a spare
 * has recovered role 3 the check finds no mismatch and everything reads
 * back with role 0 failed.  (A replay that counted a read error and went
 * on kept dev3 in sync with that parity.) */
static void
test_replay_unreadable_log (void)
{
  struct memdev img[4], *devs[4];
  const char *names[4] = { "dev0", "dev1", "dev2", "dev3" };
  struct fixture f;
  struct raid_status st;
  struct rule *drop, *eio;
  uint64_t cons;

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))   /* the fill's records retired */
    return;
  sim_new ("sim:spare");
  cons = SB_RING_SIZE;                         /* where create put the log */
  drop = rule_new (&f.dev[3], OP_WRITE, DOFF, DOFF + CHUNK, DROP);
  rule_arm (drop, 1);
  memset (f.model, 0xEE, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "write at 0");
  CHECK (atomic_load (&drop->armed) == 0, "the write wrote no parity to dev3");
  for (int i = 0; i < 4; i++) {                /* the array is abandoned */
    img[i] = (struct memdev) { .size = f.dev[i].size, .data = malloc (f.dev[i].size) };
    memcpy (img[i].data, f.dev[i].data, f.dev[i].size);
    devs[i] = &img[i];
  }
  eio = rule_new (&img[3], OP_READ, cons, cons + 1, FAIL);
  rule_arm (eio, 2);                           /* the read and its retry */
  if (!(f.a = assemble_devs (devs, names, 4, NULL)))
    return;
  CHECK (atomic_load (&eio->armed) == 0, "the start did not read dev3's log");
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "dev3") && find_spec (&st, "dev3")->state == RAID_MEMBER_FAULTY,
         "dev3, whose log could not be read, is %s", state_of (find_spec (&st, "dev3")));
  verify_contents (&f, "after the start");
  add_member (f.a, "sim:spare");
  CHECK (wait_idle (f.a, 20), "the recovery did not end");
  expect_optimal_with (f.a, "sim:spare", 3, "after the recovery");
  check_after_crash (&f, "0");
}

/* 45.  A replay that cannot read the log of a member the array cannot do
 * without.  Interleaving: a 4 KiB write at 0, power lost; the start is
 * without dev2, and reading dev3's log fails: (a) once (a transient
 * error), (b) every time, (c) every time, with force=true.
 * Expected: (a) the read is tried again and the start goes on degraded;
 * (b) the start fails saying so, having replayed nothing: a start that
 * reads the log goes on degraded; (c) starts degraded, dev3's records
 * skipped (warned) and a resync of the whole array owed.  (Failing dev3 made the failure permanent: the
 * record said it faulty.)  Every byte reads back in each start. */
/* The power was lost: a start from fresh copies of dev0, dev1 and dev3
 * (every earlier one is abandoned), force as given; the read of dev3's
 * log fails `times` times (rule *eio, made on the copy). */
static struct raid_array *
start_without_dev2 (struct fixture *f, struct rule **eio, int times, bool force,
                    char *err, size_t errlen)
{
  const char *names[3] = { "dev0", "dev1", "dev3" };
  struct member *ms[3];
  struct raid_array *a;

  for (int i = 0; i < 3; i++) {
    const struct memdev *src = &f->dev[i == 2 ? 3 : i];
    struct memdev *d = malloc (sizeof *d);
    *d = (struct memdev) { .size = src->size, .data = malloc (src->size) };
    memcpy (d->data, src->data, src->size);
    if (i == 2) {
      *eio = rule_new (d, OP_READ, SB_RING_SIZE, SB_RING_SIZE + 1, FAIL);
      rule_arm (*eio, times);
    }
    ms[i] = member_new_custom (names[i], d->size, &hk_ops, d);
  }
  if (raid_array_assemble (ms, 3, &(struct raid_assemble_opts) { .force = force }, &a,
                           err, errlen) < 0)
    return NULL;
  CHECK (raid_array_start (a) == 0, "raid_array_start");
  return a;
}

static void
test_replay_log_needed (void)
{
  struct fixture f;
  struct raid_status st;
  struct rule *eio;
  char err[512];

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))
    return;
  memset (f.model, 0xEE, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "write at 0");
  f.a = start_without_dev2 (&f, &eio, 1, false, err, sizeof err);     /* (a) */
  CHECK (f.a != NULL, "(a) a read error tried again: %s", err);
  if (!f.a)
    return;
  CHECK (atomic_load (&eio->armed) == 0, "(a) the log was not read");
  raid_array_status (f.a, &st);
  CHECK (st.health == RAID_HEALTH_DEGRADED, "(a) health %d", (int) st.health);
  verify_contents (&f, "(a)");
  CHECK (start_without_dev2 (&f, &eio, -1, false, err, sizeof err) == NULL, "(b) started");
  CHECK (strstr (err, "cannot read the write-hole log of dev3") &&
         strstr (err, "cannot do without it: nothing was replayed"),
         "(b) the refusal: %s", err);
  f.a = start_without_dev2 (&f, &eio, 0, false, err, sizeof err);
  CHECK (f.a != NULL, "(b) then, its log read: %s", err);
  if (!f.a)
    return;
  raid_array_status (f.a, &st);
  CHECK (st.health == RAID_HEALTH_DEGRADED, "(b) health %d", (int) st.health);
  verify_contents (&f, "(b)");
  f.a = start_without_dev2 (&f, &eio, -1, true, err, sizeof err);     /* (c) */
  CHECK (f.a != NULL, "(c) force=true: %s", err);
  if (!f.a)
    return;
  rule_arm (eio, 0);
  raid_array_status (f.a, &st);
  CHECK (st.health == RAID_HEALTH_DEGRADED, "(c) health %d", (int) st.health);
  CHECK (st.resync_owed == 0, "(c) a resync of everything is not owed (%" PRIu64 ")",
         st.resync_owed);
  verify_contents (&f, "(c)");
}

/* ==================================================================
 * 5. Block status during a reshape (real sparse files).
 * Interleaving: the first window moves; 64K are written at 0 (below the
 * boundary) and flushed.
 * Expected: no extent covering [0, 64K) is reported as zero.
 */
struct ext_probe {
  uint64_t lo, hi;
  bool zero;
};

static int
ext_cb (void *o, uint64_t off, uint64_t len, bool zero)
{
  struct ext_probe *e = o;

  if (zero && off < e->hi && off + len > e->lo)
    e->zero = true;
  return 0;
}

static void
name_files (char (*path)[64], int n)
{
  for (int i = 0; i < n; i++) {
    snprintf (path[i], 64, "/dev/shm/test-interact-%d-%d", (int) getpid (), i);
    unlink (path[i]);
  }
}

/* An array over n files: the first nmembers are created with raid_create,
 * the rest are left empty (members to add). */
static struct raid_array *
create_files (char (*path)[64], int n, int nmembers, int level, uint64_t size)
{
  const char *specs[8];
  struct member *ms[8];
  struct raid_array *a;
  uint8_t uuid[RAID_UUID_LEN];
  struct raid_create_opts o = { .level = level, .layout = -1, .chunk = CHUNK,
                                .size = size, .nmembers = nmembers, .members = specs };
  char err[512];

  for (int i = 0; i < n; i++) {
    specs[i] = path[i];
    if (i >= nmembers) {                 /* members to add later: empty files */
      FILE *fp = fopen (path[i], "w");
      CHECK (fp && ftruncate (fileno (fp), size) == 0, "%s: %s", path[i], strerror (errno));
      if (fp)
        fclose (fp);
    }
  }
  if (raid_create (&o, uuid, err, sizeof err) < 0) {
    CHECK (0, "raid_create: %s", err);
    return NULL;
  }
  for (int i = 0; i < nmembers; i++)
    if (!(ms[i] = member_open (path[i], MEMBER_READ_WRITE, err, sizeof err))) {
      CHECK (0, "%s", err);
      return NULL;
    }
  if (raid_array_assemble (ms, nmembers, &(struct raid_assemble_opts) { 0 }, &a,
                           err, sizeof err) < 0) {
    CHECK (0, "assemble: %s", err);
    return NULL;
  }
  return a;
}

static void
test_extents_during_reshape (void)
{
  char path[4][64];
  struct ext_probe e = { 0, 65536, false };
  struct raid_status st;
  struct raid_array *a;
  uint8_t buf[65536], rb[65536];

  name_files (path, 4);
  if (!(a = create_files (path, 4, 4, 5, 64u << 20)))
    return;
  raid_array_set_test_hooks (a, &(struct raid_test_hooks) {
      .reshape_window = 1u << 20, .reshape_pause = true });
  CHECK (raid_array_start (a) == 0, "start");
  if (prepare (a, -1, 32768, NULL, true)) {
    raid_array_wait (a, 5);
    raid_array_status (a, &st);
    CHECK (st.reshape.boundary >= sizeof buf, "boundary at %" PRIu64, st.reshape.boundary);
    memset (buf, 0x5a, sizeof buf);
    CHECK (raid_array_pwrite (a, buf, sizeof buf, 0, 0) == 0 && raid_array_flush (a) == 0,
           "write + flush");
    CHECK (raid_array_pread (a, rb, sizeof rb, 0) == 0 && memcmp (rb, buf, sizeof rb) == 0,
           "read back");
    CHECK (raid_array_extents (a, 1u << 20, 0, ext_cb, &e) == 0, "extents");
    CHECK (!e.zero, "block status reports data written below the reshape boundary "
           "([0, 64K), boundary %" PRIu64 ") as zero", st.reshape.boundary);
  }
  close_array (a);
  for (int i = 0; i < 4; i++)
    unlink (path[i]);
}

/* ==================================================================
 * 6. `add` during a reshape of a degraded array.
 * Interleaving: after the first window, role 1 fails and a spare is added;
 * the spare's first data write stops at a gate.
 * Expected: the spare stays `spare` while the reshape runs; the reshape
 * completes; recovery onto the spare then starts by itself (status shows
 * recover with the spare rebuilding), ends optimal with the spare in_sync;
 * data intact; the same after close and reassembly.
 */
static void
test_add_during_reshape (void)
{
  struct raid_test_hooks h = { .reshape_window = 1u << 20, .reshape_pause = true };
  struct memdev *spare = sim_new ("sim:spare");
  static const char *const used[] = { "sim:spare" };
  struct fixture f;
  struct raid_status st;
  const struct raid_member_status *m;
  struct rule *rb;

  if (!setup (&f, 5, 4, CHUNK, &h) || !prepare (f.a, -1, 32768, NULL, true))
    return;
  raid_array_wait (f.a, 5);
  fail_member (f.a, "1");
  add_member (f.a, "sim:spare");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->state == RAID_MEMBER_SPARE && m->role == -1, "a spare added during the "
         "reshape is %s with role %d (expected spare until the reshape ends)",
         state_of (m), m ? m->role : -2);
  rb = rule_new (spare, OP_WRITE, RAID_META_END, UINT64_MAX, BLOCK);
  rule_arm (rb, 1);
  if (!run_reshape (f.a, 20))
    rule_arm (rb, 0);                              /* reported; nothing to wait for */
  else if (gate_reached (&rb->gate, LONG_MS)) {
    raid_array_status (f.a, &st);
    m = find_spec (&st, "sim:spare");
    CHECK (st.sync_action == RAID_SYNC_RECOVER && m && m->state == RAID_MEMBER_REBUILDING,
           "spare written during %s while %s (expected recover, rebuilding)",
           raid_sync_action_name (st.sync_action), state_of (m));
    gate_open (&rb->gate);
  }
  else
    CHECK (0, "recovery onto the spare did not start after the reshape");
  CHECK (wait_idle (f.a, 10), "recovery did not end");
  expect_optimal_with (f.a, "sim:spare", 1, "after the reshape and recovery");
  verify_contents (&f, "after the reshape and recovery");
  if (!close_array (f.a) || !(f.a = reassemble (&f, used, 1, NULL)))
    return;
  CHECK (wait_idle (f.a, 10), "after restart: not idle");
  expect_optimal_with (f.a, "sim:spare", 1, "after restart");
  verify_contents (&f, "after restart");
  teardown (&f);
}

/* ==================================================================
 * 7. Management requests are serialized.
 */

/* 7a. Two reshape requests adding one member each, from two threads, each
 * held in its member open until the other is there too (bounded).  Run in
 * a child process, so an abort() is a failure, not a crash of the test
 * (the array is created in another child: this process forks with no
 * threads).  Expected: one succeeds, the other gets EBUSY and changes
 * nothing; the array reassembles with one member added. */
static char race_path[5][64];
static _Atomic int race_arrived;

static void
race_rendezvous (const char *spec)
{
  uint64_t end = now_ms () + BOUND_MS;

  if (strcmp (spec, race_path[3]) && strcmp (spec, race_path[4]))
    return;
  atomic_fetch_add (&race_arrived, 1);
  /* bounded: serialized requests never meet here */
  while (atomic_load (&race_arrived) < 2 && now_ms () < end)
    sleep_ms (1);
}

static void
two_reshapes_child (void *unused)
{
  char err[512];
  struct member *ms[3];
  struct raid_array *a;
  struct job *j[2];

  for (int i = 0; i < 3; i++)
    ms[i] = member_open (race_path[i], MEMBER_READ_WRITE, err, sizeof err);
  if (raid_array_assemble (ms, 3, &(struct raid_assemble_opts) { 0 }, &a, err,
                           sizeof err) < 0 || raid_array_start (a) != 0) {
    CHECK (0, "assemble: %s", err);
    return;
  }
  open_delay = race_rendezvous;
  for (int i = 0; i < 2; i++)
    j[i] = job_go (reshape_job (a, -1, 0, race_path[3 + i]));
  if (!job_done (j[0], LONG_MS) || !job_done (j[1], LONG_MS)) {
    CHECK (0, "concurrent reshape requests hang");
    return;                                        /* abandoned: the child ends */
  }
  CHECK ((j[0]->ret == 0) + (j[1]->ret == 0) == 1 &&
         (j[0]->ret == EBUSY || j[1]->ret == EBUSY),
         "two concurrent reshape requests returned %d (%s) and %d (%s): expected one "
         "success and one EBUSY", j[0]->ret, j[0]->err, j[1]->ret, j[1]->err);
  close_array (a);
}

static void
two_reshapes_create (void *unused)
{
  close_array (create_files (race_path, 5, 3, 5, 32u << 20));
}

static void
race_two_reshapes (void)
{
  char err[512];
  struct raid_array *a;
  struct member *ms[5];
  struct raid_status st;
  int added = 0;

  name_files (race_path, 5);
  run_forked ("create for two concurrent reshapes", two_reshapes_create, NULL, 15);
  run_forked ("two concurrent reshapes", two_reshapes_child, NULL, 15);
  for (int i = 0; i < 5; i++)
    ms[i] = member_open (race_path[i], MEMBER_READ_WRITE, err, sizeof err);
  if (raid_array_assemble (ms, 5, &(struct raid_assemble_opts) { 0 }, &a, err,
                           sizeof err) < 0)
    CHECK (0, "after two concurrent reshapes the array does not assemble: %s", err);
  else {
    raid_array_status (a, &st);
    for (int i = 3; i < 5; i++)
      added += find_spec (&st, race_path[i]) != NULL;
    CHECK (st.has_reshape && st.reshape.to.raid_disks == 4 && added == 1,
           "after two concurrent reshapes: reshape %d to %d members, %d of 2 added",
           st.has_reshape, st.reshape.to.raid_disks, added);
    close_array (a);
  }
  for (int i = 0; i < 5; i++)
    unlink (race_path[i]);
}

/* 7b. resize (growing back after a shrink, held in its zeroing of the new
 * space) racing a reshape.  Expected: never both succeed with the reshape
 * planned for the old size; the loser gets EBUSY; data intact.  (A resize
 * that zeroes with plain writes cannot be held this way: said, not checked.) */
static bool
zeroing_held (struct rule *zr, struct job *rz)
{
  for (uint64_t end = now_ms () + LONG_MS; now_ms () < end; )
    if (gate_reached (&zr->gate, 50))
      return true;
    else if (job_done (rz, 0)) {
      fprintf (stderr, "note: resize zeroed nothing with zero operations: not staged\n");
      return false;
    }
  CHECK (0, "resize neither zeroed the new space nor returned");
  return false;
}

static void
race_resize_reshape (void)
{
  struct fixture f;
  struct rule *zr;
  struct job *rz, *rs;
  uint64_t full, W;
  char err[256];

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  full = f.size;
  W = raid_array_stripe_width (f.a);
  CHECK (raid_array_resize (f.a, full - 4 * W, true, err, sizeof err) == 0, "shrink: %s", err);
  zr = rule_new (NULL, OP_ZERO, 0, UINT64_MAX, BLOCK);
  rule_arm (zr, 1);
  rz = job_new (j_resize, f.a);
  rz->len = full;
  job_go (rz);
  if (!zeroing_held (zr, rz)) {
    teardown (&f);
    return;
  }
  rs = job_go (reshape_job (f.a, -1, 32768, NULL));
  job_done (rs, BOUND_MS);  /* bounded: serialized, the reshape waits for the resize */
  gate_open (&zr->gate);
  CHECK (job_done (rz, LONG_MS) && job_done (rs, LONG_MS), "resize/reshape hang");
  if (rz->ret == 0 && rs->ret == 0)
    CHECK (rs->st.size == full, "resize and reshape both succeeded, but the reshape was "
           "prepared for %" PRIu64 " bytes and the array now exports %" PRIu64,
           rs->st.size, full);
  else
    CHECK ((rz->ret == 0 && rs->ret == EBUSY) || (rs->ret == 0 && rz->ret == EBUSY),
           "resize %d (%s), reshape %d (%s): the loser must get EBUSY",
           rz->ret, rz->err, rs->ret, rs->err);
  memset (f.model + full - 4 * W, 0, 4 * W);
  f.size = rz->ret == 0 ? full : full - 4 * W;
  if (rs->ret == 0)
    run_reshape (f.a, 20);
  verify_contents (&f, "after resize racing reshape");
  teardown (&f);
}

/* 7c. replace racing a reshape that is held in opening the member it adds
 * (the replace's copy is held too, so it cannot end meanwhile).
 * Expected: exactly one succeeds, the other gets EBUSY and leaves nothing
 * behind (no reshape record / the spare still a spare). */
static void
race_replace_reshape (void)
{
  static const char *const used[] = { "sim:spare", "sim:add" };
  struct memdev *spare = sim_new ("sim:spare");
  struct fixture f;
  struct raid_status st;
  struct rule *cp;
  struct gate *og;
  struct job *rs, *rp;
  char err[256];

  sim_new ("sim:add");
  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  add_member (f.a, "sim:spare");
  cp = rule_new (spare, OP_WRITE, RAID_META_END, UINT64_MAX, BLOCK);
  rule_arm (cp, 1);
  og = sim_gate ("sim:add");
  rs = job_go (reshape_job (f.a, -1, 0, "sim:add"));
  if (!gate_reached (og, LONG_MS)) {
    CHECK (0, "the reshape never opened its member");
    return;
  }
  rp = job_new (j_replace, f.a);
  rp->name = "0";
  job_done (job_go (rp), BOUND_MS);  /* bounded: serialized, the replace waits */
  gate_open (og);
  CHECK (job_done (rs, LONG_MS) && job_done (rp, LONG_MS), "replace/reshape hang");
  raid_array_status (f.a, &st);
  CHECK ((rs->ret == 0) != (rp->ret == 0) && (rs->ret == EBUSY || rp->ret == EBUSY),
         "reshape %d (%s), replace %d (%s): expected one success and one EBUSY",
         rs->ret, rs->err, rp->ret, rp->err);
  CHECK (st.has_reshape == (rs->ret == 0), "reshape returned %d but a reshape record %s",
         rs->ret, st.has_reshape ? "exists" : "does not exist");
  CHECK (rp->ret == 0 || (find_spec (&st, "sim:spare") &&
                          find_spec (&st, "sim:spare")->state == RAID_MEMBER_SPARE),
         "replace returned %d but the spare is %s", rp->ret,
         state_of (find_spec (&st, "sim:spare")));
  rule_arm (cp, 0);
  gate_open (&cp->gate);
  if (st.has_reshape && st.sync_action == RAID_SYNC_FROZEN)
    raid_array_abort (f.a, err, sizeof err);
  CHECK (wait_idle (f.a, 10), "replace/reshape race: never idle");
  verify_contents (&f, "after replace racing reshape");
  if (close_array (f.a) && (f.a = reassemble (&f, used, 2, NULL)) != NULL)
    verify_contents (&f, "after replace racing reshape, reassembled");
  teardown (&f);
}

/* 7d. freeze racing start: start is held while it records "running"
 * (member 0's flush); freeze arrives meanwhile.
 * Expected: status consistent (reshape.running exactly when the sync
 * action is reshape); if freeze returned 0 the reshape is frozen and does
 * not move. */
static void
race_start_freeze (void)
{
  struct raid_test_hooks h = { .reshape_window = 1u << 20 };
  uint64_t smax = 16u << 20;
  struct fixture f;
  struct raid_status s1, s2;
  struct rule *fl;
  struct job *sj, *fz;
  char err[256];
  bool staged;

  if (!setup (&f, 5, 4, CHUNK, &h) || !prepare (f.a, -1, 32768, NULL, false))
    return;
  raid_array_set_speed (f.a, NULL, &smax, err, sizeof err);
  fl = rule_new (&f.dev[0], OP_FLUSH, 0, UINT64_MAX, BLOCK);
  rule_arm (fl, 1);
  sj = job_go (job_new (j_start, f.a));
  staged = gate_reached (&fl->gate, 1000);
  fz = job_go (job_new (j_freeze, f.a));
  job_done (fz, BOUND_MS);  /* bounded: serialized, freeze waits for start */
  if (staged)
    gate_open (&fl->gate);
  CHECK (job_done (sj, LONG_MS) && job_done (fz, LONG_MS), "start/freeze hang");
  CHECK (sj->ret == 0, "start: %s", sj->err);
  raid_array_status (f.a, &s1);
  CHECK (s1.reshape.running == (s1.sync_action == RAID_SYNC_RESHAPE),
         "status inconsistent after start racing freeze: reshape %s, sync action %s",
         s1.reshape.running ? "running" : "frozen", raid_sync_action_name (s1.sync_action));
  if (fz->ret == 0) {
    CHECK (s1.sync_action == RAID_SYNC_FROZEN, "freeze returned 0 but the sync action "
           "is %s", raid_sync_action_name (s1.sync_action));
    sleep_ms (BOUND_MS);    /* bounded observation: a frozen reshape does not move */
    raid_array_status (f.a, &s2);
    CHECK (s2.has_reshape && s2.reshape.position == s1.reshape.position,
           "freeze returned 0 but the reshape moved from %" PRIu64 " to %" PRIu64,
           s1.reshape.position, s2.has_reshape ? s2.reshape.position : s1.reshape.total);
  }
  raid_array_freeze (f.a, err, sizeof err);
  teardown (&f);
}

static void
test_management_races (void)
{
  race_two_reshapes ();
  race_resize_reshape ();
  race_replace_reshape ();
  race_start_freeze ();
}

/* ==================================================================
 * 8. The reshape's finish zeroes the grown capacity.
 * Interleaving: a grow (4 -> 5 members) runs; every member zero operation
 * stops at a gate; at the one made while status shows position == total
 * (the finish), a client read of existing data is issued.
 * Expected: the read completes while that zeroing is held at its gate.
 */
static void
test_finish_zeroing (void)
{
  struct fixture f;
  struct raid_status st;
  struct rule *zr;
  struct job *rd;
  uint64_t end, old;
  bool seen = false;

  sim_new ("sim:add");
  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  old = f.size;
  zr = rule_new (NULL, OP_ZERO, 0, UINT64_MAX, BLOCK);
  rule_arm (zr, -1);
  if (!prepare (f.a, -1, 0, "sim:add", true))
    return;
  for (end = now_ms () + 15000; !seen && now_ms () < end; ) {
    bool at_zero = gate_reached (&zr->gate, 200);
    bool got = status_within (f.a, &st, BOUND_MS);
    if (at_zero && got && st.has_reshape && st.reshape.position == st.reshape.total) {
      seen = true;
      rd = io_job (f.a, -1, 65536, 0);
      /* The zeroing stays held at its gate: a read that completes now
       * did not wait for it (a bug would keep it waiting past LONG_MS). */
      CHECK (job_done (rd, LONG_MS), "a read of existing data waited for the finish's "
             "zeroing of the grown capacity (held at its gate for %u ms)", LONG_MS);
      rule_arm (zr, 0);
      gate_open (&zr->gate);
      CHECK (job_done (rd, LONG_MS) && rd->ret == 0 && memcmp (rd->buf, f.model, 65536) == 0,
             "read during the finish");
      job_put (rd);
    }
    else if (at_zero)
      gate_open (&zr->gate);
    else if (got && !st.has_reshape)
      break;
  }
  if (!seen)
    fprintf (stderr, "note: no member was zeroed while the finish ran\n");
  rule_arm (zr, 0);
  CHECK (wait_idle (f.a, 10), "the grow did not end");
  raid_array_status (f.a, &st);
  CHECK (st.size > old && !st.has_reshape, "grow: size %" PRIu64, st.size);
  verify_contents (&f, "after the grow");
  teardown (&f);
}

/* ==================================================================
 * 9. A read error met by a write's read-modify-write, a rebuild (raid6,
 * and raid5, where the batch cannot be rebuilt without the role), a
 * replace's copy on an array that lost another member meanwhile (which
 * cannot rebuild the source's role either), a scrub, a raid1 repair
 * whose other mirror holds wrong bytes in a row of the same batch, a
 * raid5 repair next to a row with torn parity, a scrub over a region of
 * 30 rows whose reads keep failing.
 * Interleaving: the next read of a member's data area fails once (for the
 * write: of whichever member its read phase reads first).
 * Expected (nbdkit-raid-plugin(1), Failures): the block is reconstructed
 * (or read again), the operation succeeds, the error is counted, the
 * member stays in_sync; only the row whose read failed is rebuilt: the
 * raid5 rebuild and the replace end, the raid1 row keeps the bytes its
 * reads returned, the torn row keeps its data and gets its parity
 * recomputed; the bad region counts once per batch (the member is not
 * failed for it).
 */
static struct rule *
read_error_once (struct memdev *d)
{
  struct rule *r = rule_new (d, OP_READ, DOFF, UINT64_MAX, FAIL);
  rule_arm (r, 1);
  return r;
}

static void
expect_counted (struct raid_array *a, int role, enum raid_health health, const char *when)
{
  struct raid_status st;
  const struct raid_member_status *m;

  raid_array_status (a, &st);
  m = find_role (&st, role);
  CHECK (m && m->state == RAID_MEMBER_IN_SYNC && m->errors >= 1, "%s: the member of role "
         "%d is %s with %u errors (expected in_sync, the error counted)", when, role,
         state_of (m), m ? m->errors : 0);
  CHECK (st.health == health, "%s: health %s, expected %s", when,
         raid_health_name (st.health), raid_health_name (health));
}

static void
rmw_read_error (bool degraded)
{
  const char *when = degraded ? "write on degraded raid5" : "write (read-modify-write)";
  struct fixture f;
  struct rule *r;
  int w;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  if (degraded)
    fail_member (f.a, "2");
  r = read_error_once (NULL);
  memset (f.model + CHUNK + 8192, 0x66, 4096);     /* in role 1's block of row 0 */
  w = raid_array_pwrite (f.a, f.model + CHUNK + 8192, 4096, CHUNK + 8192, 0);
  CHECK (w == 0, "%s with one read error: %s", when, strerror (w));
  if (atomic_load (&r->armed) != 0) {
    CHECK (0, "%s: the write read nothing", when);
    return;
  }
  expect_counted (f.a, (int) (atomic_load (&r->last_dev) - f.dev),
                  degraded ? RAID_HEALTH_DEGRADED : RAID_HEALTH_OPTIMAL, when);
  verify_contents (&f, when);
  CHECK (degraded || verify_parity (&f, 0) == 0, "%s: rows with wrong parity", when);
  teardown (&f);
}

static void
rebuild_read_error (int level)
{
  struct fixture f;
  struct raid_status st;
  struct rule *r;

  sim_new ("sim:spare");
  if (!setup (&f, level, 5, CHUNK, NULL))
    return;
  fail_member (f.a, "0");
  r = read_error_once (&f.dev[2]);
  add_member (f.a, "sim:spare");
  CHECK (wait_idle (f.a, 10), "rebuild did not end");
  CHECK (atomic_load (&r->armed) == 0, "rebuild: role 2 was not read");
  expect_counted (f.a, 2, RAID_HEALTH_OPTIMAL, "rebuild");
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "sim:spare") && find_spec (&st, "sim:spare")->role == 0 &&
         find_spec (&st, "sim:spare")->state == RAID_MEMBER_IN_SYNC,
         "rebuild: the spare is %s", state_of (find_spec (&st, "sim:spare")));
  verify_contents (&f, "after the rebuild");
  if (level == 6 && raid_array_health (f.a) == RAID_HEALTH_OPTIMAL) {
    fail_member (f.a, "1");
    fail_member (f.a, "3");
    verify_contents (&f, "after the rebuild, roles 1 and 3 failed");
  }
  teardown (&f);
}

/* A replace of role 1 whose copy waits at its first read of the source
 * while role 2 is failed, then has that read fail once: the array can no
 * longer rebuild role 1, so only reading each row of the batch again
 * copies it.  Expected: the replace completes (the spare holds role 1),
 * the contents intact.  (The error's count is not checked here: the
 * replaced member leaves the table when the replace ends.) */
static void
replace_read_error_degraded (void)
{
  const char *when = "replace, role 2 failed, one read of the source failing";
  struct fixture f;
  struct raid_status st;
  struct rule *b, *r;
  char err[256];

  sim_new ("sim:spare");
  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  add_member (f.a, "sim:spare");
  b = rule_new (&f.dev[1], OP_READ, DOFF, UINT64_MAX, BLOCK);
  rule_arm (b, 1);
  r = read_error_once (&f.dev[1]);          /* the same read, once the gate opens */
  CHECK (raid_array_replace (f.a, "1", "sim:spare", err, sizeof err) == 0, "replace: %s", err);
  if (!gate_reached (&b->gate, LONG_MS)) {
    CHECK (0, "%s: the copy never read the source", when);
    teardown (&f);
    return;
  }
  fail_member (f.a, "2");
  gate_open (&b->gate);
  CHECK (wait_idle (f.a, 10), "%s: the replace did not end", when);
  CHECK (atomic_load (&r->armed) == 0, "%s: the failing read never came", when);
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "sim:spare") && find_spec (&st, "sim:spare")->role == 1 &&
         find_spec (&st, "sim:spare")->state == RAID_MEMBER_IN_SYNC,
         "%s: the spare is %s (expected in_sync in role 1)", when,
         state_of (find_spec (&st, "sim:spare")));
  CHECK (st.health == RAID_HEALTH_DEGRADED, "%s: health %s", when,
         raid_health_name (st.health));
  verify_contents (&f, when);
  teardown (&f);
}

/* A check (repair: a repair) run to its end while rule r is armed: the
 * rule must have fired (every armed hit taken). */
static void
scrub_with_rule (struct fixture *f, bool repair, struct rule *r, const char *when)
{
  char err[256];

  CHECK (raid_array_check (f->a, repair, err, sizeof err) == 0, "%s: %s", when, err);
  CHECK (wait_idle (f->a, 10), "%s: the %s did not end", when, repair ? "repair" : "check");
  CHECK (atomic_load (&r->armed) == 0, "%s: the failing read never came", when);
}

static void
scrub_read_error (void)
{
  struct fixture f;
  struct raid_status st;
  struct rule *r;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  r = read_error_once (&f.dev[1]);
  scrub_with_rule (&f, false, r, "scrub");
  expect_counted (f.a, 1, RAID_HEALTH_OPTIMAL, "scrub");
  raid_array_status (f.a, &st);
  CHECK (st.mismatch_count == 0, "scrub: %" PRIu64 " mismatches", st.mismatch_count);
  verify_contents (&f, "after the scrub");
  CHECK (verify_parity (&f, 0) == 0, "scrub: rows with wrong parity");
  teardown (&f);
}

/* A repair of a raid1 whose role 1 holds wrong bytes in row 3 (read from
 * role 0: 3 mod 3); role 0's first read fails once.  Only the rows whose
 * own read fails may take another mirror's bytes: row 3 keeps role 0's
 * (the model's), and role 1 is repaired with them. */
static void
mirror_repair_read_error (void)
{
  struct fixture f;
  struct rule *r;

  if (!setup (&f, 1, 3, CHUNK, NULL))
    return;
  memset (f.dev[1].data + DOFF + 3 * CHUNK, 0xee, 4096);
  r = read_error_once (&f.dev[0]);
  scrub_with_rule (&f, true, r, "mirror repair");
  expect_counted (f.a, 0, RAID_HEALTH_OPTIMAL, "mirror repair");
  verify_contents (&f, "after the mirror repair with a read error");
  CHECK (verify_parity (&f, 0) == 0, "mirror repair: the mirrors differ");
  teardown (&f);
}

/* A read error in a resync batch of a raid5 (resync policy) whose row 5
 * holds torn parity: only the row whose read failed is rebuilt from
 * parity; row 5's data, readable, stays (its parity is recomputed). */
static void
resync_read_error (void)
{
  struct fixture f;
  struct rule *r;
  struct raid_geom g;
  struct raid_row rr;
  char err[256];

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  raid_geom_init (&g, 5, f.layout, CHUNK, 4, err, sizeof err);
  raid_geom_row (&g, 5, &rr);
  memset (f.dev[rr.pd].data + DOFF + 5 * CHUNK, 0xee, 4096);   /* torn parity */
  /* The first read of the member holding row 5's first data block fails
   * once: without the row-by-row redo, row 5's block would be rebuilt
   * from the torn parity. */
  r = read_error_once (&f.dev[rr.data[0]]);
  scrub_with_rule (&f, true, r, "repair next to torn parity");
  verify_contents (&f, "after a repair with a read error next to torn parity");
  CHECK (verify_parity (&f, 0) == 0, "repair with a read error: rows with wrong parity");
  teardown (&f);
}

/* A bad region: every read of role 1 starting in its first 30 rows fails
 * during a scrub.  The rows are read again one by one, and each fails:
 * the region counts once per batch, not once per row, so the member is
 * not failed for a region the scrub repairs (20 errors would). */
static void
scrub_bad_region (void)
{
  struct fixture f;
  struct raid_status st;
  const struct raid_member_status *m;
  struct rule *r;
  char err[256];

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  r = rule_new (&f.dev[1], OP_READ, DOFF, DOFF + 30 * (uint64_t) CHUNK, FAIL);
  rule_arm (r, -1);
  CHECK (raid_array_check (f.a, false, err, sizeof err) == 0, "check: %s", err);
  CHECK (wait_idle (f.a, 10), "check did not end");
  rule_arm (r, 0);
  raid_array_status (f.a, &st);
  m = find_role (&st, 1);
  CHECK (m && m->state == RAID_MEMBER_IN_SYNC && m->errors >= 1 && m->errors <= 2,
         "bad region: role 1 is %s with %u errors (expected in_sync, 1 or 2)",
         state_of (m), m ? m->errors : 0);
  CHECK (st.health == RAID_HEALTH_OPTIMAL, "bad region: health %s",
         raid_health_name (st.health));
  verify_contents (&f, "after a scrub over a bad region");
  CHECK (verify_parity (&f, 0) == 0, "bad region: rows with wrong parity");
  teardown (&f);
}

static void
test_read_errors (void)
{
  rmw_read_error (false);
  rmw_read_error (true);
  rebuild_read_error (6);
  rebuild_read_error (5);       /* a transient error: the batch goes on */
  replace_read_error_degraded ();
  scrub_read_error ();
  mirror_repair_read_error ();
  resync_read_error ();
  scrub_bad_region ();
}

/* ==================================================================
 * 10. Allocation failure in the replace copy.
 * Interleaving: the first allocation of at least ALLOC_FAIL_MIN bytes by
 * an engine thread after arming fails; a replace starts (4 MiB chunks: its
 * copy buffer is at least one chunk, while what it allocates before
 * locking rows is smaller); a client write to the rows of that copy follows.
 * Expected: the write completes within 2 s (the failed copy released its
 * rows); the array stays optimal; data intact.
 */
#define ALLOC_FAIL_MIN (2u << 20)
static _Atomic bool alloc_fail_armed;
static sem_t alloc_failed;

int __real_posix_memalign (void **p, size_t align, size_t size);
int __wrap_posix_memalign (void **p, size_t align, size_t size);

static _Thread_local bool hold_alloc;     /* this thread's next allocation waits at
                                             hold_gate (test 27) */
static struct gate hold_gate;

int
__wrap_posix_memalign (void **p, size_t align, size_t size)
{
  if (hold_alloc) {
    hold_alloc = false;
    gate_pass (&hold_gate);
  }
  if (size >= ALLOC_FAIL_MIN && !test_thread && atomic_exchange (&alloc_fail_armed, false)) {
    sem_post (&alloc_failed);
    return ENOMEM;
  }
  return __real_posix_memalign (p, align, size);
}

static void
test_copy_enomem (void)
{
  struct fixture f;
  struct job *w;
  char err[256];
  bool hit;

  sim_new ("sim:spare");
  if (!setup (&f, 5, 4, 4u << 20, NULL))
    return;
  add_member (f.a, "sim:spare");
  sem_init (&alloc_failed, 0, 0);
  atomic_store (&alloc_fail_armed, true);
  CHECK (raid_array_replace (f.a, "0", "sim:spare", err, sizeof err) == 0, "replace: %s", err);
  hit = sem_wait_ms (&alloc_failed, LONG_MS);
  if (!hit) {
    CHECK (0, "no allocation of the replace copy failed: the injection did not trigger");
    teardown (&f);
    return;
  }
  w = io_job (f.a, 0x77, 4096, 0);
  if (!job_done (w, 2000)) {
    CHECK (0, "a client write to the rows of the copy that hit ENOMEM did not complete "
           "within 2 s (rows left locked)");
    return;                                        /* abandoned: the process ends */
  }
  CHECK (w->ret == 0, "write after ENOMEM: %s", strerror (w->ret));
  memset (f.model, 0x77, 4096);
  job_put (w);
  CHECK (wait_idle (f.a, 10), "after ENOMEM the replace never ended");
  CHECK (raid_array_health (f.a) == RAID_HEALTH_OPTIMAL, "after ENOMEM in the replace "
         "copy the array is %s", raid_health_name (raid_array_health (f.a)));
  verify_contents (&f, "after ENOMEM in the replace copy");
  teardown (&f);
}

/* ==================================================================
 * 11. A reshape step failing beyond redundancy.
 * Interleaving: after the first window, role 1 is failed by request and
 * role 2's member starts failing every read and write; the next step runs.
 * Expected: status self-consistent (reshape.running exactly when the sync
 * action is reshape), role 2 not in_sync, health failed or the reshape
 * frozen, I/O returns EIO, control calls return promptly, nothing spins.
 */
static double
cpu_seconds (void)
{
  struct rusage ru;

  getrusage (RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void
expect_prompt_controls (struct raid_array *a)
{
  int (*const fns[]) (struct job *) = { j_start, j_freeze, j_wait, j_check, j_status };
  static const char *const names[] = { "start", "freeze", "wait", "check", "status" };
  int r;

  for (int i = 0; i < 5; i++) {
    uint64_t t0 = now_ms ();
    call_within (job_new (fns[i], a), 1000);
    CHECK (now_ms () - t0 < 1000, "%s did not return within 1 s", names[i]);
  }
  r = call_within (io_job_new (a, -1, 4096, 0), 1000);
  CHECK (r == EIO, "read of the failed array: %d (expected EIO)", r);
  r = call_within (io_job_new (a, 0, 4096, 0), 1000);
  CHECK (r == EIO, "write to the failed array: %d (expected EIO)", r);
}

static void
test_reshape_failure_status (void)
{
  struct raid_test_hooks h = { .reshape_window = 1u << 20, .reshape_pause = true };
  struct fixture f;
  struct raid_status st;
  const struct raid_member_status *m;
  double cpu0;

  if (!setup (&f, 5, 4, CHUNK, &h) || !prepare (f.a, -1, 32768, NULL, true))
    return;
  raid_array_wait (f.a, 5);
  fail_member (f.a, "1");
  f.dev[2].fail_reads = f.dev[2].fail_writes = 1;
  call_within (job_new (j_start, f.a), 1000);
  raid_array_wait (f.a, 5);
  if (!status_within (f.a, &st, 1000)) {
    CHECK (0, "status does not return after the failed step");
    return;
  }
  m = find_role (&st, 2);
  CHECK (st.reshape.running == (st.sync_action == RAID_SYNC_RESHAPE),
         "status inconsistent: reshape %s while the sync action is %s",
         st.reshape.running ? "running" : "frozen", raid_sync_action_name (st.sync_action));
  CHECK (m && m->state != RAID_MEMBER_IN_SYNC, "role 2 fails every I/O but is %s",
         state_of (m));
  CHECK (st.health == RAID_HEALTH_FAILED ||
         (st.has_reshape && st.sync_action == RAID_SYNC_FROZEN),
         "after the failed step: health %s, sync action %s (expected failed, or frozen)",
         raid_health_name (st.health), raid_sync_action_name (st.sync_action));
  expect_prompt_controls (f.a);
  cpu0 = cpu_seconds ();
  sleep_ms (500);
  CHECK (cpu_seconds () - cpu0 < 0.25, "%.2f s of CPU in 0.5 s with nothing to do: a "
         "thread spins", cpu_seconds () - cpu0);
  teardown (&f);
}

/* ==================================================================
 * 12. RAID6: two failed members, two spares added one after the other.
 * Interleaving: roles 0 and 1 fail; spare A is added and its recovery
 * stops in its first data write; spare B is added meanwhile.
 * Expected: B stays a spare while A's recovery runs, then is recovered
 * too: optimal, both in_sync, data intact (also with two others failed).
 */
static void
test_two_spares (void)
{
  struct memdev *sa = sim_new ("sim:spareA");
  struct fixture f;
  struct raid_status st;
  const struct raid_member_status *m;
  struct rule *rb;

  sim_new ("sim:spareB");
  if (!setup (&f, 6, 5, CHUNK, NULL))
    return;
  fail_member (f.a, "0");
  fail_member (f.a, "1");
  rb = rule_new (sa, OP_WRITE, RAID_META_END, UINT64_MAX, BLOCK);
  rule_arm (rb, 1);
  add_member (f.a, "sim:spareA");
  CHECK (gate_reached (&rb->gate, LONG_MS), "recovery onto spare A did not start");
  add_member (f.a, "sim:spareB");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spareB");
  CHECK (m && m->state == RAID_MEMBER_SPARE, "spare B added during a recovery is %s "
         "(expected spare until that recovery ends)", state_of (m));
  gate_open (&rb->gate);
  for (uint64_t end = now_ms () + 10000; now_ms () < end; ) {
    if (!wait_idle (f.a, 1))
      continue;
    sleep_ms (200);         /* bounded: the hand-over to the waiting spare */
    raid_array_status (f.a, &st);
    if (st.sync_action == RAID_SYNC_IDLE)
      break;
  }
  expect_optimal_with (f.a, "sim:spareA", 0, "two spares: A");
  expect_optimal_with (f.a, "sim:spareB", 1, "two spares: B");
  verify_contents (&f, "after both recoveries");
  if (raid_array_health (f.a) == RAID_HEALTH_OPTIMAL) {
    fail_member (f.a, "2");
    fail_member (f.a, "3");
    verify_contents (&f, "after both recoveries, roles 2 and 3 failed");
  }
  teardown (&f);
}

/* ==================================================================
 * 13. The rebuild as a pipeline: the new member's writes overlap the
 * survivors' reads (nbdkit-raid-plugin(1), Rebuild).
 * (a) Interleaving: role 3 of a RAID5 of 4 is recovered onto a spare; its
 *     first data write stops at a gate.  Expected: by then the survivors
 *     have read less than half of the first batch (4 MiB of each member):
 *     the rebuild writes what it has rebuilt while it reads the rest.
 * (b) Role 4 of a RAID6 of 5 is recovered; a survivor's read fails in the
 *     middle of a batch (rows 24-31).  Expected: the recovery completes, the error is counted once (the redo
 *     does not read that member again), the spare holds its role, data
 *     reads back with another member failed, parity verifies.
 * (c) The spare's write fails in the middle of a batch.  Expected: the
 *     spare is faulty, the recovery ends, the array is degraded (not
 *     failed) and every byte reads back.
 */
#define PIPE_BATCH (4u << 20)      /* the rebuild's batch per member (sync.c) */

static void
pipeline_overlap (void)
{
  struct memdev *spare = sim_new ("sim:spare");
  struct fixture f;
  struct rule *w;
  unsigned long long rd;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  fail_member (f.a, "3");
  w = rule_new (spare, OP_WRITE, DOFF, UINT64_MAX, BLOCK);
  rule_arm (w, 1);
  __atomic_store_n (&f.dev[0].rbytes, 0, __ATOMIC_SEQ_CST);
  add_member (f.a, "sim:spare");
  if (!gate_reached (&w->gate, LONG_MS)) {
    CHECK (0, "overlap: the recovery never wrote to the spare");
    return;
  }
  rd = __atomic_load_n (&f.dev[0].rbytes, __ATOMIC_SEQ_CST);
  CHECK (rd < PIPE_BATCH / 2, "overlap: role 0 had read %llu bytes when the spare's "
         "first write was issued (expected less than half a batch, %u)", rd, PIPE_BATCH / 2);
  gate_open (&w->gate);
  CHECK (wait_idle (f.a, 20), "overlap: the recovery did not end");
  expect_optimal_with (f.a, "sim:spare", 3, "overlap");
  verify_contents (&f, "overlap: after the recovery");
  CHECK (parity_with (&f, 3, spare) == 0, "overlap: rows with wrong parity");
  teardown (&f);
}

static void
pipeline_read_error (void)
{
  struct memdev *spare = sim_new ("sim:spare");
  struct fixture f;
  struct raid_status st;
  struct rule *r;
  const struct raid_member_status *m;

  if (!setup (&f, 6, 5, CHUNK, NULL))
    return;
  fail_member (f.a, "4");
  r = rule_new (&f.dev[1], OP_READ, DOFF + 24 * CHUNK, DOFF + 32 * CHUNK, FAIL);
  rule_arm (r, 1);
  add_member (f.a, "sim:spare");
  CHECK (wait_idle (f.a, 20), "read error: the recovery did not end");
  CHECK (atomic_load (&r->armed) == 0, "read error: rows 24-31 of role 1 were never "
         "read");
  expect_optimal_with (f.a, "sim:spare", 4, "read error");
  raid_array_status (f.a, &st);
  m = find_role (&st, 1);
  CHECK (m && m->errors == 1, "read error: role 1 has %u errors (expected 1: the "
         "redo does not read it again)", m ? m->errors : 0);
  CHECK (parity_with (&f, 4, spare) == 0, "read error: rows with wrong parity");
  if (raid_array_health (f.a) == RAID_HEALTH_OPTIMAL) {
    fail_member (f.a, "1");
    verify_contents (&f, "read error: after the recovery, role 1 failed");
  }
  teardown (&f);
}

static void
pipeline_write_error (void)
{
  struct memdev *spare = sim_new ("sim:spare");
  struct fixture f;
  struct raid_status st;
  struct rule *r;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  fail_member (f.a, "3");
  r = rule_new (spare, OP_WRITE, DOFF + 16 * CHUNK, DOFF + 24 * CHUNK, FAIL);
  rule_arm (r, 1);
  add_member (f.a, "sim:spare");
  CHECK (wait_idle (f.a, 20), "write error: the recovery did not end");
  CHECK (atomic_load (&r->armed) == 0, "write error: rows 16-23 of the spare were "
         "never written");
  raid_array_status (f.a, &st);
  CHECK (st.health == RAID_HEALTH_DEGRADED && find_spec (&st, "sim:spare") &&
         find_spec (&st, "sim:spare")->state == RAID_MEMBER_FAULTY,
         "write error: health %s, the spare %s (expected degraded, faulty)",
         raid_health_name (st.health), state_of (find_spec (&st, "sim:spare")));
  verify_contents (&f, "write error: degraded");
  teardown (&f);
}

static void
test_rebuild_pipeline (void)
{
  pipeline_overlap ();
  pipeline_read_error ();
  pipeline_write_error ();
}

/* ==================================================================
 * 14. Journal copies bound for one member share its log writes
 * (group commit, the journal's theory statement).
 * (a) Interleaving: in a RAID5 of 4 (left-symmetric), rows 0, 4, 8 and 12
 *     have their parity on role 3, which holds their records (PLACEMENT:
 *     one copy, on the row's P member).  4K writes to rows 0 and 4 stop at
 *     their log writes on role 3 (two batches in flight, as many as a
 *     member takes); writes to rows 8 and 12 follow meanwhile.  Expected:
 *     once the first two are let through, the other two records reach
 *     role 3 in one batch: one thread writes both (each writer wrote its
 *     own before), and all four writes read back.
 * (b) The same, and the log write that carries the two records fails.
 *     Expected: both writes are redone without role 3 (their records on
 *     two other members) and succeed; role 3 is faulty, the array
 *     degraded, every write reads back.
 */
#define LOG_LO (256u << 10)        /* the consistency area: after the ring */
#define ROW4 (4ull * 3 * CHUNK)    /* RAID5 of 4: a row holds 3 chunks */
#define JHDR 512u                  /* a 4K write's record header */

/* The threads that wrote the record headers seen, by log position (the
 * order the records were reserved in). */
static int
header_threads (pthread_t *th, int max)
{
  uint64_t off[8];
  int n = 0;

  for (int i = 0; i < atomic_load (&nseen) && i < MAX_SEEN && n < max && n < 8; i++) {
    int j = n;
    if (seen_w[i].len != JHDR)
      continue;
    n++;
    for (; j > 0 && off[j - 1] > seen_w[i].off; j--) {
      off[j] = off[j - 1];
      th[j] = th[j - 1];
    }
    off[j] = seen_w[i].off;
    th[j] = seen_w[i].th;
  }
  return n;
}

static void
group_commit_case (bool fail)
{
  struct fixture f;
  struct rule *hold, *bad, *rd8, *rd12;
  struct job *w[4];
  pthread_t th[8];
  int nh;

  /* Assembled again after the fill: role 3's log latency is measured
   * afresh (a fill slowed by a stall of the machine would make it count as
   * a far member, which takes one batch at a time, not the two this case
   * holds). */
  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))
    return;
  /* bad comes first: a held write, let through, meets no armed rule. */
  bad = rule_new (&f.dev[3], OP_WRITE, LOG_LO, RAID_META_END, FAIL);
  hold = rule_new (&f.dev[3], OP_WRITE, LOG_LO, RAID_META_END, BLOCK);
  rule_arm (hold, 2);
  see_from (&f.dev[3], LOG_LO, RAID_META_END);
  w[0] = io_job (f.a, 0xA1, 4096, 0);
  w[1] = io_job (f.a, 0xA2, 4096, ROW4);
  if (!gate_reached (&hold->gate, LONG_MS) || !gate_reached (&hold->gate, LONG_MS)) {
    CHECK (0, "group commit: the first two writes never wrote their records");
    return;
  }
  if (fail)
    rule_arm (bad, 1);
  /* Each of them reads two blocks of its row (the two other data blocks,
   * or its old data and parity) before its record is made: once all four
   * reads are seen, what is left before the copies are queued is work in
   * memory. */
  rd8 = rule_new (NULL, OP_READ, DOFF + 8 * CHUNK, DOFF + 9 * CHUNK, NOTIFY);
  rd12 = rule_new (NULL, OP_READ, DOFF + 12 * CHUNK, DOFF + 13 * CHUNK, NOTIFY);
  rule_arm (rd8, 2);
  rule_arm (rd12, 2);
  w[2] = io_job (f.a, 0xB3, 4096, 2 * ROW4);
  w[3] = io_job (f.a, 0xC4, 4096, 3 * ROW4);
  CHECK (gate_reached (&rd8->gate, LONG_MS) && gate_reached (&rd8->gate, LONG_MS) &&
         gate_reached (&rd12->gate, LONG_MS) && gate_reached (&rd12->gate, LONG_MS),
         "group commit: the writes to rows 8 and 12 never read their rows");
  sleep_ms (BOUND_MS);     /* the fixed code queues their copies here */
  gate_open (&hold->gate);
  gate_open (&hold->gate);
  for (int i = 0; i < 4; i++) {
    CHECK (job_done (w[i], LONG_MS) && w[i]->ret == 0, "group commit: write %d: %s", i,
           job_done (w[i], 0) ? strerror (w[i]->ret) : "did not return");
    memset (f.model + i * ROW4, w[i]->buf[0], 4096);
  }
  atomic_store (&seen_dev, NULL);
  nh = header_threads (th, 8);
  if (!fail)
    CHECK (nh == 4 && !pthread_equal (th[0], th[2]) && !pthread_equal (th[1], th[2]) &&
           pthread_equal (th[2], th[3]),
           "group commit: %d record headers on role 3; the last two %s written by one "
           "thread (expected 4, and one thread: one batch)", nh,
           nh == 4 && pthread_equal (th[2], th[3]) ? "were" : "were not");
  else {
    struct raid_status st;
    raid_array_status (f.a, &st);
    CHECK (atomic_load (&bad->armed) == 0, "group commit: the shared write never came");
    CHECK (st.health == RAID_HEALTH_DEGRADED && find_role (&st, 3) &&
           find_role (&st, 3)->state == RAID_MEMBER_FAULTY, "group commit: health %s, "
           "role 3 %s (expected degraded, faulty)", raid_health_name (st.health),
           state_of (find_role (&st, 3)));
  }
  verify_contents (&f, fail ? "group commit, the shared log write failed" : "group commit");
  for (int i = 0; i < 4; i++)
    job_put (w[i]);
  teardown (&f);
}

static void
test_group_commit (void)
{
  group_commit_case (false);
  group_commit_case (true);
}

/* ==================================================================
 * 16. A record written before a member left its role is not replayed
 * onto the member that takes the role next (JOINS, the journal's theory).
 * Interleaving: RAID5 of 4, left-symmetric: row 1 holds data index 0 on
 * role 3 and its parity on role 2.  A 4K write at the start of row 1
 * (role 3's block) is logged; role 3 is failed; the same 4K are written
 * again (degraded: only the parity changes) and flushed; a spare is
 * added and recovers role 3, which rebuilds that block from the parity;
 * then the power is lost (the members are copied as they are) and the
 * array is assembled from the copies.
 * Expected: the replay does not put the first write's block back on the
 * spare: the flushed second write reads back, the check finds no
 * mismatch, and every byte reads back with role 0 failed.  The old code
 * replays the first record (no checkpoint came between) and the second
 * write is lost.
 */
#define ROW1 (3ull * CHUNK)        /* RAID5 of 4: row 1's first byte */

static void
test_join_after_leave (void)
{
  struct memdev *spare = sim_new ("sim:spare"), img[4];
  struct fixture f;
  uint8_t *back;

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))   /* the fill's records retired */
    return;
  memset (f.model + ROW1, 0x51, 4096);
  CHECK (raid_array_pwrite (f.a, f.model + ROW1, 4096, ROW1, 0) == 0, "first write");
  fail_member (f.a, "3");
  memset (f.model + ROW1, 0x52, 4096);
  CHECK (raid_array_pwrite (f.a, f.model + ROW1, 4096, ROW1, 0) == 0, "second write");
  CHECK (raid_array_flush (f.a) == 0, "flush");
  add_member (f.a, "sim:spare");
  CHECK (wait_idle (f.a, 20), "the recovery did not end");
  expect_optimal_with (f.a, "sim:spare", 3, "after the recovery");
  if (!(f.a = crash_copy (&f, spare, "sim:spare", img)))   /* the array is abandoned */
    return;
  back = malloc (4096);
  CHECK (raid_array_pread (f.a, back, 4096, ROW1) == 0 && back[0] == 0x52 &&
         back[4095] == 0x52, "after the crash: row 1 reads 0x%02x, not the flushed "
         "second write's 0x52", back[0]);
  free (back);
  CHECK (wait_idle (f.a, 20), "the array did not settle after the crash");
  check_after_crash (&f, "0");
}

/* ==================================================================
 * 17. Where a partial write's record goes (PLACEMENT, the journal's
 * theory): on its row's parity members only, when they are in sync.
 * (a) RAID5 of 4: a 4K write to each of rows 0..3 writes exactly one log
 *     copy, on the row's P member.
 * (b) RAID6 of 5: exactly two, on the row's P and Q members.
 * (c) RAID5 of 4 with role 3 failed: a 4K write to row 0 (P on role 3)
 *     writes two copies, on two other members.
 * Record copies are counted per member as the record headers written to
 * its consistency area (a 4K write's header is one 512-byte sector).
 */
/* Record headers written to each member since the last call. */
static void
log_writes (const struct fixture *f, int *n)
{
  int k = raid_min_u64 ((uint64_t) atomic_load (&nseen), MAX_SEEN);

  for (int i = 0; i < f->n; i++) {
    n[i] = 0;
    for (int j = 0; j < k; j++)
      n[i] += seen_w[j].d == &f->dev[i] && seen_w[j].len == JHDR;
  }
  atomic_store (&nseen, 0);
}

static void
placement_case (int level, int n, int failed)
{
  struct fixture f;
  struct raid_geom g;
  char err[128];
  int seen[6];

  if (!setup (&f, level, n, CHUNK, NULL) ||
      raid_geom_init (&g, level, raid_layout_default (level), CHUNK, n, err, sizeof err))
    return;
  if (failed >= 0) {
    char name[16];
    snprintf (name, sizeof name, "%d", failed);
    fail_member (f.a, name);
  }
  see_from (SEEN_ALL, LOG_LO, RAID_META_END);
  for (uint64_t row = 0; row < 4; row++) {
    struct raid_row R;
    int total = 0, others = 0;
    raid_geom_row (&g, row, &R);
    if (failed >= 0 && R.pd != failed)
      continue;
    memset (f.model + row * g.stripe_width, 0x60 + (int) row, 4096);
    CHECK (raid_array_pwrite (f.a, f.model + row * g.stripe_width, 4096,
                              row * g.stripe_width, 0) == 0, "placement: write row %" PRIu64, row);
    log_writes (&f, seen);
    for (int i = 0; i < n; i++) {
      total += seen[i];
      if (i != R.pd && i != R.qd)
        others += seen[i] != 0;
    }
    if (failed < 0)
      CHECK (total == (R.qd >= 0 ? 2 : 1) && seen[R.pd] == 1 && (R.qd < 0 || seen[R.qd] == 1),
             "raid%d row %" PRIu64 ": %d log writes, %d on P (role %d), %d on Q (expected "
             "exactly one on each parity member)", level, row, total, seen[R.pd], R.pd,
             R.qd >= 0 ? seen[R.qd] : 0);
    else
      CHECK (total == 2 && seen[failed] == 0 && others == 2,
             "raid%d row %" PRIu64 " with its P member failed: %d log writes on %d "
             "members (expected one on each of two other members)", level, row, total, others);
  }
  atomic_store (&seen_dev, NULL);
  verify_contents (&f, "placement");
  teardown (&f);
}

static void
test_record_placement (void)
{
  placement_case (5, 4, -1);
  placement_case (6, 5, -1);
  placement_case (5, 4, 3);
}

/* ==================================================================
 * 18. A far member's log writes are shared (GROUP COMMIT, the journal's
 * theory): a member whose log writes take long has one batch in flight,
 * so the records that arrive meanwhile go out together.
 * Interleaving: RAID5 of 4; every write to role 3's consistency area takes
 * DELAY_MS longer.  Sixteen 4K writes to rows whose parity is on role 3
 * (0, 4, ..., 60) run at once, after a few one by one let the member's
 * latency be measured.
 * Expected: at most one log write on role 3 in flight at any time (a
 * fast member takes two), fewer log writes than records, and every write
 * reads back.
 */
static void
test_far_member_batches (void)
{
  struct fixture f;
  struct rule *slow;
  struct job *w[16];
  int warm = 4;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  slow = rule_new (&f.dev[3], OP_WRITE, LOG_LO, RAID_META_END, DELAY);
  rule_arm (slow, -1);
  for (int i = 0; i < warm; i++) {        /* latency seen: one log write each */
    memset (f.model + (uint64_t) i * ROW4, 0x70 + i, 4096);
    CHECK (raid_array_pwrite (f.a, f.model + (uint64_t) i * ROW4, 4096,
                              (uint64_t) i * ROW4, 0) == 0, "far member: warm-up write %d", i);
  }
  see_from (&f.dev[3], LOG_LO, RAID_META_END);
  for (int i = 0; i < 16; i++)
    w[i] = io_job (f.a, 0x80 + i, 4096, (uint64_t) (warm + i) * ROW4);
  for (int i = 0; i < 16; i++) {
    CHECK (job_done (w[i], LONG_MS) && w[i]->ret == 0, "far member: write %d: %s", i,
           job_done (w[i], 0) ? strerror (w[i]->ret) : "did not return");
    memset (f.model + (uint64_t) (warm + i) * ROW4, w[i]->buf[0], 4096);
  }
  atomic_store (&seen_dev, NULL);
  {
    int writes = 0, k = raid_min_u64 ((uint64_t) atomic_load (&nseen), MAX_SEEN);
    uint64_t last_end = UINT64_MAX;
    for (int j = 0; j < k; j++) {           /* member writes: runs of vectors */
      if (seen_w[j].off != last_end)
        writes++;
      last_end = seen_w[j].off + seen_w[j].len;
    }
    CHECK (atomic_load (&seen_inflight_max) == 1,
           "far member: %d log writes on role 3 in flight at once (expected 1)",
           atomic_load (&seen_inflight_max));
    CHECK (writes < 16, "far member: %d log writes for 16 records (expected fewer: "
           "records that arrive during one share the next)", writes);
  }
  rules_reset ();
  verify_contents (&f, "far member");
  teardown (&f);
}

/* ==================================================================
 * 19. A write's payload is not superseded by an intent of the same write
 * (REPLAY: an intent supersedes only payload numbered below its write's
 * first record).
 * Interleaving: RAID5 of 4, left-symmetric, role 0 failed.  A write
 * covers row 0's blocks 1 and 2 and block 0 from offset x: the first x of
 * every column are partial segments (logged with their data and parity),
 * the rest a full one (an intent).  Parity writes to role 3 below x are
 * lost; the power is lost; the members are assembled from copies.
 * (a) chunk 64K, x = 4K: one round of records.
 * (b) chunk 512K, x = 384K: the partial segments (128K wide) need two
 *     rounds, the intent comes in the second.
 * Expected: the replay writes the logged parity, so the failed role's
 * first x bytes (outside the write) read back as before.  Numbered after
 * the payload (a), or in a later round (b), the intent made replay skip
 * the payload, and those bytes read back wrong.
 */
static void
intent_case (uint32_t chunk, uint64_t x)
{
  struct memdev img[4];
  struct fixture f;
  struct rule *drop;
  uint64_t len = 3 * (uint64_t) chunk - x;
  uint8_t *back = malloc (x), *buf = malloc (len);

  if (!setup (&f, 5, 4, chunk, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))   /* the fill's records retired */
    goto out;
  fail_member (f.a, "0");
  drop = rule_new (&f.dev[3], OP_WRITE, DOFF, DOFF + x, DROP);
  rule_arm (drop, -1);
  memset (buf, 0x5C, len);
  CHECK (raid_array_pwrite (f.a, buf, len, x, 0) == 0, "chunk %" PRIu32 ": write", chunk);
  CHECK (atomic_load (&drop->last_dev) == &f.dev[3], "chunk %" PRIu32 ": no parity write "
         "below x was lost", chunk);
  rule_arm (drop, 0);
  if (!(f.a = crash_copy (&f, &f.dev[3], "dev3", img)))   /* the array is abandoned */
    goto out;
  CHECK (raid_array_pread (f.a, back, x, 0) == 0 && memcmp (back, f.model, x) == 0,
         "chunk %" PRIu32 ": after the crash, role 0's first %" PRIu64 " bytes (outside "
         "the write) read back wrong", chunk, x);
  teardown (&f);
 out:
  free (back);
  free (buf);
}

static void
test_intent_before_payload (void)
{
  intent_case (CHUNK, 4096);
  intent_case (512u << 10, 384u << 10);
}

/* ==================================================================
 * 20. A member that has just caught up does not take its rows' records
 * before the next checkpoint (PLACEMENT).
 * Interleaving: RAID5 of 4; role 3 (row 0's parity) is failed and
 * recovered onto a spare; while the recovery is frozen, a 4K write at 0
 * is logged (the spare is not in sync: on two other members); the
 * recovery ends; the same 4K are written again and flushed; the power is
 * lost, and the array is assembled from copies without the spare.
 * Expected: the second write reads back.  Had its record gone to the
 * spare alone, the replay would find only the first write's record and
 * put its older bytes over the flushed second write.
 */
static void
test_placement_after_recovery (void)
{
  struct memdev *spare = sim_new ("sim:spare"), img[4];
  struct memdev *devs[3] = { &img[0], &img[1], &img[2] };
  struct fixture f;
  struct raid_status st;
  char err[256];
  uint8_t *back = malloc (4096);

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))
    goto out;
  if (!recovery_frozen (&f, spare))
    goto out;
  memset (f.model, 0x31, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "first write");
  CHECK (raid_array_start_action (f.a, err, sizeof err) == 0, "start: %s", err);
  CHECK (wait_idle (f.a, 20), "the recovery did not end");
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "sim:spare") && find_spec (&st, "sim:spare")->state ==
         RAID_MEMBER_IN_SYNC, "the spare is not in sync after the recovery");
  memset (f.model, 0x32, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "second write");
  CHECK (raid_array_flush (f.a) == 0, "flush");
  for (int i = 0; i < 3; i++) {           /* the crash; the spare is lost with it */
    img[i] = (struct memdev) { .size = f.dev[i].size, .data = malloc (f.dev[i].size) };
    memcpy (img[i].data, f.dev[i].data, f.dev[i].size);
  }
  if (!(f.a = assemble_devs (devs, dev_names, 3, NULL)))
    goto out;
  CHECK (raid_array_pread (f.a, back, 4096, 0) == 0 && back[0] == 0x32 && back[4095] == 0x32,
         "after the crash without the spare: offset 0 reads 0x%02x, not the flushed "
         "second write's 0x32", back[0]);
  verify_contents (&f, "after the crash without the spare");
 out:
  free (back);
}

/* ==================================================================
 * 21. A write planned while a member was away, still reading when the
 * member comes back and its delta resync begins.
 * Interleaving: RAID5 of 4 assembled without role 3 (it is away: its
 * map of missed regions records what it misses); the last chunk is
 * written (a marked region for the delta); then a 4K write of role 3's
 * block in row 1 is planned without role 3 (a reconstruct-write: it
 * reads row 1's other data blocks) and stops in its read of role 0; role
 * 3 comes back (a pending spec, the same bytes) and its delta begins;
 * the write goes on once the delta has ended, or after BOUND_MS.
 * Expected: the write's row is resynced on role 3 (every row's parity
 * holds with role 3's bytes; its map marks the row only after its reads,
 * so a delta that walked past row 1 meanwhile would leave role 3's block
 * stale there, with role 3 in sync).
 */
static void
test_delta_inflight_write (void)
{
  struct memdev *back = sim_new ("sim:back");
  struct memdev *devs[3];
  const struct raid_member_status *m;
  struct fixture f;
  struct raid_status st;
  struct rule *rd;
  struct job *w;
  uint64_t end;

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a))
    return;
  memcpy (back->data, f.dev[3].data, MSIZE);         /* role 3's bytes, kept */
  for (int i = 0; i < 3; i++)
    devs[i] = &f.dev[i];
  if (!(f.a = assemble_devs (devs, dev_names, 3, NULL)))
    return;
  memset (f.model + f.size - CHUNK, 0x4d, CHUNK);
  CHECK (raid_array_pwrite (f.a, f.model + f.size - CHUNK, CHUNK, f.size - CHUNK, 0) == 0,
         "write of the last chunk while role 3 is away");
  /* row 1 of left-symmetric RAID5 of 4: P on role 2, role 3's block first
   * (array offset 3 chunks), role 0's next (member offset 1 chunk) */
  rd = rule_new (&f.dev[0], OP_READ, DOFF + CHUNK, DOFF + 2 * CHUNK, BLOCK);
  rule_arm (rd, 1);
  w = io_job (f.a, 0x4e, 4096, 3 * CHUNK);
  if (!gate_reached (&rd->gate, LONG_MS)) {
    CHECK (0, "the write of role 3's block never read role 0's block of its row");
    return;
  }
  CHECK (raid_array_add_pending (f.a, "sim:back") == 0, "add_pending");
  /* bounded: the defective engine's delta ends at once (row 1 is not
   * marked yet); the fixed one waits for the write */
  for (end = now_ms () + BOUND_MS + 1000; now_ms () < end; sleep_ms (20)) {
    raid_array_status (f.a, &st);
    if ((m = find_spec (&st, "sim:back")) && m->state == RAID_MEMBER_IN_SYNC)
      break;
  }
  gate_open (&rd->gate);
  CHECK (job_done (w, LONG_MS) && w->ret == 0, "the write was not acknowledged");
  job_put (w);
  memset (f.model + 3 * CHUNK, 0x4e, 4096);
  CHECK (wait_idle (f.a, 20), "the delta did not end");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:back");
  CHECK (m && m->role == 3 && m->state == RAID_MEMBER_IN_SYNC,
         "role 3 is %s after its delta, not in sync", state_of (m));
  CHECK (raid_array_flush (f.a) == 0, "flush");
  CHECK (parity_with (&f, 3, back) == 0, "a row's parity does not hold with role 3's "
         "bytes after its delta: the write planned while it was away was not resynced");
  verify_contents (&f, "after the delta");
  fail_member (f.a, "dev0");
  verify_contents (&f, "with role 0 failed (row 1 rebuilt from role 3)");
}

/* ==================================================================
 * 22. Changes of several member transitions while a role is already lost.
 * The engine recomputes the health at each transition; requests read it
 * without waiting for the change (their fast path to EIO on a failed
 * array), and the log says when it changes.
 * (a) Interleaving: RAID5 of 3 assembled without role 2 (away, within a
 *     60 s member timeout: the spare waits instead of recovering it); a
 *     spare replaces role 0's member; at the first log line after "the
 *     source leaves" (inside the switch) a client write of role 0's block
 *     is issued and waited for up to BOUND_MS, then the switch goes on.
 *     Expected: the write succeeds, "array is now failed" is never logged,
 *     the spare holds role 0 in sync, the array is degraded, contents hold.
 *     (An engine that failed the source before its replacement took the
 *     role showed a failed array there: the write got EIO at once.)
 * (b) Interleaving: RAID5 of 4 shrunk to 3 members one window at a time;
 *     role 1 is failed midway; the reshape runs to its end (role 3's
 *     member leaves its role).  Expected: "array is now failed" is never
 *     logged; the member the shrink freed recovers role 1; contents hold.
 *     (An engine whose member left its role before the new layout took
 *     over counted two lost roles of the old layout.)
 */
static _Atomic int watch_failed;           /* "array is now failed" seen */
static _Atomic int watch_stage;            /* 1: wait for "(replaced)", 2: write at the next line */
static struct raid_array *watch_array;
static struct job *watch_write;

/* What raidcore prints without a sink: the log sinks below echo it. */
static void
echo_log (enum raid_log_level lvl, const char *msg)
{
  if (lvl != RAID_LOG_DEBUG)
    fprintf (stderr, "%s\n", msg);
}

static void
watch_log (enum raid_log_level lvl, const char *msg)
{
  echo_log (lvl, msg);
  if (strstr (msg, "array is now failed"))
    atomic_store (&watch_failed, 1);
  if (atomic_load (&watch_stage) == 2) {
    atomic_store (&watch_stage, 0);
    watch_write = io_job (watch_array, 0x5a, 4096, 0);
    job_done (watch_write, BOUND_MS);      /* the fixed engine holds it: bounded */
  }
  if (atomic_load (&watch_stage) == 1 && strstr (msg, "(replaced)"))
    atomic_store (&watch_stage, 2);
}

static void
switch_health_replace (void)
{
  struct memdev *devs[2];
  const struct raid_member_status *m;
  struct fixture f;
  struct raid_status st;
  char err[256];

  sim_new ("sim:spare");
  if (!setup (&f, 5, 3, CHUNK, NULL) || !close_array (f.a))
    return;
  devs[0] = &f.dev[0];
  devs[1] = &f.dev[1];
  if (!(f.a = assemble_devs_opts (devs, dev_names, 2, NULL,
                                  &(struct raid_assemble_opts) { .member_timeout = 60 })))
    return;
  add_member (f.a, "sim:spare");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->state == RAID_MEMBER_SPARE && st.health == RAID_HEALTH_DEGRADED,
         "(a) before the replace: the spare is %s, the array %s (expected a spare, "
         "degraded)", state_of (m), raid_health_name (st.health));
  watch_array = f.a;
  atomic_store (&watch_stage, 1);
  raid_log_set_sink (watch_log);
  CHECK (raid_array_replace (f.a, "dev0", "sim:spare", err, sizeof err) == 0,
         "(a) replace: %s", err);
  CHECK (wait_idle (f.a, 20), "(a) the replace did not end");
  raid_log_set_sink (NULL);
  CHECK (watch_write != NULL, "(a) the switch logged nothing after the source left");
  if (watch_write) {
    CHECK (job_done (watch_write, LONG_MS) && watch_write->ret == 0,
           "(a) a write during the replace's switch failed: %s (the array was "
           "degraded before and after it)", strerror (watch_write->ret));
    if (watch_write->ret == 0)
      memset (f.model, 0x5a, 4096);
    job_put (watch_write);
  }
  CHECK (!atomic_load (&watch_failed), "(a) \"array is now failed\" was logged during "
         "the replace's switch (the array was degraded before and after it)");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->role == 0 && m->state == RAID_MEMBER_IN_SYNC &&
         st.health == RAID_HEALTH_DEGRADED, "(a) after the replace: the spare is %s in "
         "role %d, the array %s (expected in_sync in role 0, degraded)", state_of (m),
         m ? m->role : -2, raid_health_name (st.health));
  verify_contents (&f, "(a) after the replace");
}

static void
switch_health_shrink (void)
{
  struct raid_test_hooks h = { .reshape_window = 1u << 20, .reshape_pause = true };
  struct raid_reshape_req req = { -1, -1, 0, 3, 0, NULL };
  struct fixture f;
  struct raid_status st;
  char err[512], *p;
  uint64_t cap;

  if (!setup (&f, 5, 4, CHUNK, &h))
    return;
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == ENOSPC &&
         (p = strstr (err, "at most ")) != NULL, "(b) shrink before resize: %s", err);
  cap = (p = strstr (err, "at most ")) ? strtoull (p + 8, NULL, 10) : 0;
  CHECK (cap > 0 && raid_array_resize (f.a, cap, true, err, sizeof err) == 0,
         "(b) resize: %s", err);
  f.size = cap;
  atomic_store (&watch_failed, 0);
  raid_log_set_sink (watch_log);
  CHECK (raid_array_reshape (f.a, &req, NULL, err, sizeof err) == 0, "(b) prepare: %s", err);
  if (!run_steps_until (f.a, cap / 2))
    goto out;
  fail_member (f.a, "dev1");
  if (!run_reshape (f.a, 20))
    goto out;
  CHECK (!atomic_load (&watch_failed), "(b) \"array is now failed\" was logged when "
         "the shrink ended (the array was degraded before and after it)");
  CHECK (wait_idle (f.a, 20), "(b) the recovery onto the member the shrink freed did not end");
  raid_array_status (f.a, &st);
  CHECK (st.health == RAID_HEALTH_OPTIMAL && st.geom.raid_disks == 3,
         "(b) after the shrink and the recovery of role 1 onto the member it freed: "
         "%s with %d roles (expected optimal, 3)", raid_health_name (st.health),
         st.geom.raid_disks);
  verify_contents (&f, "(b) after the shrink, role 1 failed and recovered");
 out:
  raid_log_set_sink (NULL);
}

static void
test_switch_health (void)
{
  switch_health_replace ();
  switch_health_shrink ();
}

/* ==================================================================
 * 23. A replace whose target fails in the replace's own last step.
 * Interleaving: RAID5 of 3 and a spare; the spare replaces role 0's
 * member; the first flush of the spare after the replace has begun fails
 * (the array is idle, so that is the flush of the checkpoint the replace
 * makes before the spare takes the role: the copy is complete by then).
 * Expected: the spare does not take the role (it is faulty); role 0's
 * member stays in sync in role 0; the array is optimal; no transition is
 * refused ("internal:" in the log); contents hold, also with role 1
 * failed.  (An engine that did not look at the target again after that
 * checkpoint bound the faulty spare to role 0 and retired the member it
 * replaced: the array degraded, and failed had a role been lost before.)
 */
static struct rule *fin_flush;
static _Atomic int fin_internal;

static void
fin_log (enum raid_log_level lvl, const char *msg)
{
  echo_log (lvl, msg);
  if (strstr (msg, "internal:"))
    atomic_store (&fin_internal, 1);
  if (fin_flush && strstr (msg, "replacing dev0 (role 0) with sim:spare"))
    rule_arm (fin_flush, 1);               /* from the replace's start on (logged
                                              after the commit that begins it) */
}

static void
test_replace_target_fails_at_finish (void)
{
  const struct raid_member_status *m;
  struct memdev *spare;
  struct fixture f;
  struct raid_status st;
  char err[256];

  if (!setup (&f, 5, 3, CHUNK, NULL))
    return;
  spare = sim_new ("sim:spare");
  fin_flush = rule_new (spare, OP_FLUSH, 0, UINT64_MAX, FAIL);
  add_member (f.a, "sim:spare");
  raid_log_set_sink (fin_log);
  CHECK (raid_array_replace (f.a, "dev0", "sim:spare", err, sizeof err) == 0,
         "replace: %s", err);
  CHECK (wait_idle (f.a, 20), "the replace did not end");
  raid_log_set_sink (NULL);
  fin_flush = NULL;
  raid_array_status (f.a, &st);
  m = find_role (&st, 0);
  CHECK (m && m->state == RAID_MEMBER_IN_SYNC && strcmp (m->spec, "dev0") == 0,
         "role 0 is held by %s (%s), not by dev0 in sync: the replace switched to a "
         "target that had failed", m ? m->spec : "nobody", state_of (m));
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->role < 0 && m->state == RAID_MEMBER_FAULTY,
         "the failed target is %s with role %d (expected faulty, no role)", state_of (m),
         m ? m->role : -2);
  CHECK (st.health == RAID_HEALTH_OPTIMAL, "the array is %s (expected optimal)",
         raid_health_name (st.health));
  CHECK (!atomic_load (&fin_internal), "a transition was refused (\"internal:\" logged)");
  CHECK (memcmp (spare->data + DOFF, f.dev[0].data + DOFF, f.size / 2) == 0,
         "the spare does not hold all of role 0: the replace ended before its copy was "
         "complete, not in its last step");
  verify_contents (&f, "after the replace whose target failed");
  fail_member (f.a, "1");
  verify_contents (&f, "after the replace whose target failed, role 1 failed");
}

/* ==================================================================
 * 24. The member being replaced fails in the middle of the copy.
 * Interleaving: the replace's copy onto the spare stops at its first write
 * past row 0; role 0's member (the one being replaced) is failed; a client
 * write of role 0's block in row 0 (a row copied already) runs; the copy
 * goes on and the replace becomes a recovery from its cursor.
 * Expected: the replacement holds that write (what it copied was good, and
 * every write since must reach it): contents equal the model and parity is
 * consistent with it, also with role 1 failed.  (Before: with its member
 * failed the role took no write until the replace stopped, the recovery
 * went on from the cursor, and the block kept its copied, old bytes; found
 * by stress seed 2478436581.)
 */
static void
test_replace_source_fails_midcopy (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  const struct raid_member_status *m;
  struct raid_status st;
  struct rule *copy;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  if (!(copy = replace_held (&f, spare)))
    return;
  fail_member (f.a, "0");
  memset (f.model, 0x5a, 4096);
  CHECK (raid_array_pwrite (f.a, f.model, 4096, 0, 0) == 0, "write of role 0's block in row 0");
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 10), "the replace, then the recovery, did not end");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->role == 0 && m->state == RAID_MEMBER_IN_SYNC,
         "the replacement is %s with role %d (expected in_sync in role 0)", state_of (m),
         m ? m->role : -2);
  CHECK (memcmp (spare->data + DOFF, f.model, 4096) == 0,
         "the replacement lacks the write made after the member it replaces failed");
  verify_contents (&f, "after the replace became a recovery");
  CHECK (parity_with (&f, 0, spare) == 0, "rows with wrong parity after the recovery");
  fail_member (f.a, "1");
  verify_contents (&f, "after the recovery, role 1 failed");
  teardown (&f);
}

/* ==================================================================
 * 25-28. Which member serves a replaced role while the member being
 * replaced fails (a reviewer's tests of a first fix for 24, which let the
 * target serve the role from the moment its member failed; each failed
 * on it, each passes on the code before and after).
 * 25. During a replace (copy held as in 24), role 0's member fails reads
 * until its read error past STATE_MAX_READ_ERRORS makes it faulty, in a
 * client read of role 0.  Expected: every read returns the right bytes
 * (the first fix took the failed read for good data: the member serving
 * the role was asked again after the error had changed it). */
static void
test_replace_read_error_limit (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  struct raid_status st;
  struct rule *copy, *rf;
  uint8_t *buf = malloc (4096);
  int bad = -1;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  if (!(copy = replace_held (&f, spare)))
    return;
  rf = rule_new (&f.dev[0], OP_READ, DOFF, UINT64_MAX, FAIL);
  rule_arm (rf, -1);
  for (int i = 0; i < 25; i++) {
    memset (buf, 0, 4096);
    int r = raid_array_pread (f.a, buf, 4096, 0);
    if ((r != 0 || memcmp (buf, f.model, 4096) != 0) && bad < 0)
      bad = i;
  }
  raid_array_status (f.a, &st);
  printf ("  role-0 member (dev0) is %s, errors %u\n", state_of (find_spec (&st, "dev0")),
          find_spec (&st, "dev0") ? find_spec (&st, "dev0")->errors : 0);
  CHECK (bad < 0, "read #%d of role 0's block in row 0 returned wrong bytes", bad + 1);
  rule_arm (rf, 0);
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 10), "the replace, then the recovery, did not end");
  verify_contents (&f, "after the recovery");
  free (buf);
  teardown (&f);
}

/* 26. As 25, but the read error past the limit is the copy's own read of
 * the member being replaced.  Expected: the cursor never passes rows the
 * target did not get; the replacement ends equal to the replaced member
 * (which still holds every row). */
static void
test_replace_copy_read_error_limit (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  const struct raid_member_status *m;
  struct raid_status st;
  struct rule *copy, *rf;
  uint64_t W;
  uint8_t *buf;
  unsigned errs = 0;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  W = raid_array_stripe_width (f.a);
  buf = malloc (W);
  if (!(copy = replace_held (&f, spare)))
    return;
  printf ("  copy held at member offset %" PRIu64 " (row %" PRIu64 ")\n",
          atomic_load (&copy->last_off), (atomic_load (&copy->last_off) - DOFF) / CHUNK);
  /* rows 128..: the next batch's (not yet read) rows */
  rf = rule_new (&f.dev[0], OP_READ, DOFF + 128 * CHUNK, UINT64_MAX, FAIL);
  rule_arm (rf, -1);
  for (uint64_t row = 128; row < 190 && errs < 20; row++) {
    CHECK (raid_array_pread (f.a, buf, W, row * W) == 0, "read row %" PRIu64, row);
    CHECK (memcmp (buf, f.model + row * W, W) == 0, "read row %" PRIu64 " wrong", row);
    raid_array_status (f.a, &st);
    m = find_spec (&st, "dev0");
    errs = m ? m->errors : 0;
  }
  printf ("  dev0 errors now %u\n", errs);
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 10), "the replace, then the recovery, did not end");
  rule_arm (rf, 0);
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  printf ("  spare is %s role %d; dev0 %s\n", state_of (m), m ? m->role : -2,
          state_of (find_spec (&st, "dev0")));
  {
    uint64_t badrows = 0;
    for (uint64_t row = 0; row < 256; row++)
      if (memcmp (spare->data + DOFF + row * CHUNK, f.dev[0].data + DOFF + row * CHUNK, CHUNK))
        badrows++;
    CHECK (badrows == 0, "%" PRIu64 " rows of role 0 differ between the replacement and "
           "the replaced member (which still holds them all)", badrows);
  }
  verify_contents (&f, "after the replace became a recovery");
  free (buf);
  teardown (&f);
}

/* 27. A plain (unlocked) read of row 200 (the copy has not reached it)
 * planned while role 0's member was in sync, held between its plan and its
 * member I/O (at its first allocation) while that member is failed.
 * Expected: the right bytes (the first fix sent it to the target, which
 * does not hold that row yet). */
static int
j_pread_held (struct job *j)
{
  hold_alloc = true;
  return raid_array_pread (j->a, j->buf, j->len, j->off);
}

static void
test_replace_read_planned_before_failure (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  struct rule *copy;
  struct job *rd;
  uint64_t W, off;

  gate_init (&hold_gate);
  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  W = raid_array_stripe_width (f.a);
  off = 200 * W;                           /* row 200: role 0 holds data index 0 */
  if (!(copy = replace_held (&f, spare)))
    return;
  rd = io_job_new (f.a, -1, 4096, off);
  rd->fn = j_pread_held;
  job_go (rd);
  if (!gate_reached (&hold_gate, LONG_MS)) {
    CHECK (0, "the read allocated nothing");
    return;
  }
  fail_member (f.a, "0");
  gate_open (&hold_gate);
  CHECK (job_done (rd, LONG_MS) && rd->ret == 0, "the read failed");
  CHECK (memcmp (rd->buf, f.model + off, 4096) == 0,
         "the read of row 200 (above the copy cursor) returned wrong bytes (%s)",
         rd->buf[0] == 0 && rd->buf[4095] == 0 ? "zeros: the spare's" : "other");
  job_put (rd);
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 10), "the replace, then the recovery, did not end");
  verify_contents (&f, "after the recovery");
  teardown (&f);
}

/* 28. As 25, but the read error past the limit is a read-modify-write's
 * read of role 0.  Expected: contents and parity right after the replace
 * became a recovery. */
static void
test_replace_rmw_read_error_limit (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  struct rule *copy, *rf;
  uint8_t *buf = malloc (4096);
  uint64_t off;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  off = 200 * raid_array_stripe_width (f.a) + 8192;   /* role 0, row 200 */
  if (!(copy = replace_held (&f, spare)))
    return;
  rf = rule_new (&f.dev[0], OP_READ, DOFF, UINT64_MAX, FAIL);
  rule_arm (rf, -1);
  for (int i = 0; i < 20; i++)
    CHECK (raid_array_pread (f.a, buf, 4096, 0) == 0 && memcmp (buf, f.model, 4096) == 0,
           "read %d", i);
  off += 100;                              /* unaligned: RMW (reads role 0 and P) */
  memset (f.model + off, 0x77, 1000);
  CHECK (raid_array_pwrite (f.a, f.model + off, 1000, off, 0) == 0, "RMW write");
  rule_arm (rf, 0);
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 10), "the replace, then the recovery, did not end");
  verify_contents (&f, "after the recovery");
  CHECK (parity_with (&f, 0, spare) == 0, "rows with wrong parity after the recovery");
  free (buf);
  teardown (&f);
}

/* ==================================================================
 * 29-33.  Writes of every plan after the member being
 * replaced failed, rows below the copy cursor (0..127; the copy is held
 * in its second batch, rows 64..127 locked), a few above (300..).
 * Expected: the replacement, once the replace became a recovery, holds
 * exactly role 0; parity right; contents right with another role failed.
 */
static void
win_write (struct fixture *f, uint64_t off, uint64_t len, int fill, unsigned flags)
{
  int r;
  memset (f->model + off, fill, len);
  r = raid_array_pwrite (f->a, f->model + off, len, off, flags);
  CHECK (r == 0, "write %" PRIu64 "+%" PRIu64 ": %s", off, len, strerror (r));
}

static void
win_zero (struct fixture *f, uint64_t off, uint64_t len)
{
  int r;
  memset (f->model + off, 0, len);
  r = raid_array_zero (f->a, len, off, 0, false);
  CHECK (r == 0, "zero %" PRIu64 "+%" PRIu64 ": %s", off, len, strerror (r));
}

static void
window_case (int level, int n, int also_fail, bool gather)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  const struct raid_member_status *m;
  struct raid_status st;
  struct rule *copy;
  uint64_t W, C = CHUNK;
  int fill = 0x11;

  if (gather)
    fixture_opts.gather = true;
  if (!setup (&f, level, n, CHUNK, NULL))
    return;
  W = raid_array_stripe_width (f.a);
  if (!(copy = replace_held (&f, spare)))
    return;
  printf ("  copy held at row %" PRIu64 "\n", (atomic_load (&copy->last_off) - DOFF) / CHUNK);
  fail_member (f.a, "0");
  if (also_fail >= 0) {
    char nm[16];
    snprintf (nm, sizeof nm, "%d", also_fail);
    fail_member (f.a, nm);
  }
  /* partial writes into every block of rows 1..2n (RECON: role 0 data,
   * parity, or untouched) */
  for (uint64_t row = 1; row <= (uint64_t) (2 * n); row++)
    for (uint64_t b = 0; b * C < W; b++)
      win_write (&f, row * W + b * C + 100, 1000, fill++, 0);
  /* aligned 4 KiB in every block of rows 20..25 */
  for (uint64_t row = 12; row < 18; row++)
    for (uint64_t b = 0; b * C < W; b++)
      win_write (&f, row * W + b * C + 8192, 4096, fill++, 0);
  /* whole blocks (RCW-like): all but the last block of rows 30..35 */
  for (uint64_t row = 18; row < 24; row++)
    win_write (&f, row * W, W - C, fill++, 0);
  /* all but the first block */
  for (uint64_t row = 24; row < 30; row++)
    win_write (&f, row * W + C, W - C, fill++, 0);
  /* full rows (SEG_FULL) */
  win_write (&f, 30 * W, 4 * W, fill++, 0);
  /* rows 50.5 .. 55.5: mixed */
  win_write (&f, 34 * W + W / 2 + 512, 5 * W, fill++, 0);
  /* FUA */
  win_write (&f, 40 * W + 3000, 70000, fill++, RAID_IO_FUA);
  win_write (&f, 41 * W, 2 * W, fill++, RAID_IO_FUA);
  /* zero: whole rows, and partial */
  win_zero (&f, 44 * W, 6 * W);
  win_zero (&f, 50 * W + 777, 3 * W);
  win_zero (&f, 54 * W + 4096, 8192);
  /* small unaligned writes, gatherable stream */
  for (uint64_t o = 56 * W; o < 57 * W + 5000; o += 3000)
    win_write (&f, o, 3000, fill++, 0);
  /* above the cursor */
  win_write (&f, 200 * W + 100, 1000, fill++, 0);
  win_zero (&f, 210 * W, 2 * W);
  CHECK (raid_array_flush (f.a) == 0, "flush");
  raid_array_status (f.a, &st);
  printf ("  before the stop: dev0 %s, spare %s\n", state_of (find_spec (&st, "dev0")),
          state_of (find_spec (&st, "sim:spare")));
  {
    /* a write of the held batch's rows (64..127): waits for its locks */
    memset (f.model + 70 * W + 5000, 0xab, 20000);
    struct job *wj = io_job (f.a, 0xab, 20000, 70 * W + 5000);
    sleep_ms (50);
    gate_open (&copy->gate);
    CHECK (job_done (wj, LONG_MS) && wj->ret == 0, "write in the held batch");
    job_put (wj);
  }
  CHECK (wait_idle (f.a, 20), "the replace, then the recovery, did not end");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->role == 0 && m->state == RAID_MEMBER_IN_SYNC,
         "the replacement is %s with role %d (expected in_sync in role 0)", state_of (m),
         m ? m->role : -2);
  verify_contents (&f, "after the recovery");
  if (also_fail < 0) {
    CHECK (parity_with (&f, 0, spare) == 0, "rows with wrong parity after the recovery");
    fail_member (f.a, "1");
    verify_contents (&f, "after the recovery, role 1 failed");
  }
  else if (level == 6) {
    fail_member (f.a, "1");
    verify_contents (&f, "after the recovery, roles 1 and also_fail failed");
  }
  teardown (&f);
}

static void test_win_r5 (void) { window_case (5, 4, -1, false); }
static void test_win_r6 (void) { window_case (6, 5, -1, false); }
static void test_win_r6_two (void) { window_case (6, 5, 3, false); }
static void test_win_r1 (void) { window_case (1, 3, -1, false); }
static void test_win_r5_gather (void) { window_case (5, 4, -1, true); }
/* 34.  Crash in the window: role 0's member failed during the
 * replace, journaled writes below the cursor (role 0's blocks go to the
 * target alone), one in-place parity write lost; the members are copied
 * as the crash left them and assembled again.  Expected: the replay puts
 * nothing on the faulty source or the target (a spare now), the array
 * recovers role 0 onto the spare, contents and parity right. */
static void
win_crash (bool io_fail)
{
  struct memdev *spare = sim_new ("sim:spare"), img[5], *devs[5];
  const char *names[5] = { "dev0", "dev1", "dev2", "dev3", "sim:spare" };
  struct fixture f;
  struct raid_status st;
  struct rule *copy, *drop;
  uint64_t W;
  uint8_t *d0, *sp;

  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL)))
    return;
  W = raid_array_stripe_width (f.a);
  if (!(copy = replace_held (&f, spare)))
    return;
  if (io_fail) {
    struct rule *wf = rule_new (&f.dev[0], OP_WRITE, DOFF, UINT64_MAX, FAIL);
    rule_arm (wf, -1);
  }
  else
    fail_member (f.a, "0");
  /* row 2 (RAID5 of 4 left-symmetric: parity on role 1; role 0 data): lose
   * dev1's in-place parity write */
  drop = rule_new (&f.dev[1], OP_WRITE, DOFF + 2 * CHUNK, DOFF + 3 * CHUNK, DROP);
  rule_arm (drop, 1);
  for (uint64_t row = 1; row < 8; row++) {
    memset (f.model + row * W + 100, 0x30 + (int) row, 5000);
    CHECK (raid_array_pwrite (f.a, f.model + row * W + 100, 5000, row * W + 100, 0) == 0,
           "write row %" PRIu64, row);
  }
  memset (f.model + 10 * W, 0x44, 2 * W);
  CHECK (raid_array_pwrite (f.a, f.model + 10 * W, 2 * W, 10 * W, 0) == 0, "full rows");
  CHECK (atomic_load (&drop->armed) == 0, "no parity write dropped");
  d0 = malloc (MSIZE); sp = malloc (MSIZE);
  memcpy (d0, f.dev[0].data, MSIZE);
  memcpy (sp, spare->data, MSIZE);
  crash_images (&f, spare, img, devs);
  /* the crashed array is abandoned (its copy held at the gate) */
  if (!(f.a = assemble_devs (devs, names, 5, NULL)))
    return;
  for (int i = 0; i < 4; i++)
    f.dev[i] = img[i];
  raid_array_status (f.a, &st);
  printf ("  after the crash: dev0 %s role %d, spare %s role %d, sync %s\n",
          state_of (find_spec (&st, "dev0")), find_spec (&st, "dev0") ? find_spec (&st, "dev0")->role : -2,
          state_of (find_spec (&st, "sim:spare")),
          find_spec (&st, "sim:spare") ? find_spec (&st, "sim:spare")->role : -2,
          raid_sync_action_name (st.sync_action));
  CHECK (memcmp (img[0].data + DOFF, d0 + DOFF, MSIZE - DOFF) == 0,
         "the replay wrote onto the faulty source");
  verify_contents (&f, "after the crash (degraded)");
  CHECK (wait_idle (f.a, 20), "the recovery did not end");
  raid_array_status (f.a, &st);
  printf ("  then: spare %s role %d\n", state_of (find_spec (&st, "sim:spare")),
          find_spec (&st, "sim:spare") ? find_spec (&st, "sim:spare")->role : -2);
  verify_contents (&f, "after the crash and recovery");
  f.dev[0] = img[4];
  CHECK (verify_parity (&f, 0) == 0, "rows with wrong parity after recovery");
  check_after_crash (&f, "1");
  free (d0); free (sp);
}
static void test_win_crash (void) { win_crash (false); }
static void test_win_crash_io (void) { win_crash (true); }

/* 37-38.  A replace cut short by a crash (37: the members copied as the
 * held copy left them) or by a clean stop (38: the copy slowed, then the
 * array closed), with writes made during the copy on both sides of its
 * cursor; the members are assembled again.  Expected: the replace begins
 * again by itself and ends: the spare holds role 0, in sync, and the
 * replaced member is no longer listed; contents and parity right, also
 * with role 1 failed.  (Before the target's entry recorded the replace,
 * the spare came back a spare and dev0 kept its role.) */
static void
replace_restart (bool crash)
{
  struct memdev *spare = sim_new ("sim:spare"), img[5], *devs[5];
  const char *names[5] = { "dev0", "dev1", "dev2", "dev3", "sim:spare" };
  const char *sims_used[1] = { "sim:spare" };
  const uint64_t slow = 1 << 20;
  struct fixture f;
  struct raid_status st;
  const struct raid_member_status *m;
  struct rule *copy;
  char err[256];
  uint64_t W;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  W = raid_array_stripe_width (f.a);
  if (!(copy = replace_held (&f, spare)))
    return;
  for (int i = 0; i < 5; i++) {           /* not the held batch's rows 64..127 */
    uint64_t row = (uint64_t []) { 1, 30, 150, 200, 250 }[i];
    memset (f.model + row * W + 300, 0x60 + (int) row % 64, 7000);
    CHECK (raid_array_pwrite (f.a, f.model + row * W + 300, 7000, row * W + 300, 0) == 0,
           "write row %" PRIu64, row);
  }
  if (crash) {
    crash_images (&f, spare, img, devs);
    /* the crashed array is abandoned (its copy held at the gate) */
    if (!(f.a = assemble_devs (devs, names, 5, NULL)))
      return;
    for (int i = 0; i < 4; i++)
      f.dev[i] = img[i];
    spare = &img[4];
  }
  else {
    CHECK (raid_array_set_speed (f.a, NULL, &slow, err, sizeof err) == 0, "set: %s", err);
    gate_open (&copy->gate);
    if (!close_array (f.a) || !(f.a = reassemble (&f, sims_used, 1, NULL)))
      return;
  }
  CHECK (wait_idle (f.a, 20), "the replace did not end after the restart");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->role == 0 && m->state == RAID_MEMBER_IN_SYNC,
         "after the restart the spare is %s with role %d (expected in_sync in role 0)",
         state_of (m), m ? m->role : -2);
  CHECK (!find_spec (&st, "dev0"), "the replaced member is still listed (%s)",
         state_of (find_spec (&st, "dev0")));
  verify_contents (&f, "after the replace resumed");
  CHECK (parity_with (&f, 0, spare) == 0, "rows with wrong parity with the replacement");
  f.dev[0] = *spare;
  check_after_crash (&f, "1");
}
static void test_replace_crash (void) { replace_restart (true); }

/* 40, 41, 43.  A crash during a replace, then a start without a member:
 * the one being replaced (40), the spare (41), or another (43); the
 * absent one's role within its member-timeout grace.  Expected: the
 * replace is not begun again (40: its member is gone; 41: its spare; 43:
 * the array is degraded, and the spare may be needed for the role) and
 * the record of it is dropped for good: the spare stays a spare, also
 * when the next start has every member back.  The data reads right
 * throughout.  (41 kept the record on the absent spare and a later start
 * ran a replace nobody had asked for any more; 43 ran the replace on the
 * degraded array and used up its only spare.) */
static void
replace_forgotten (int absent)
{
  struct memdev *spare = sim_new ("sim:spare"), img[5], *devs[5], *some[4];
  const char *names[5] = { "dev0", "dev1", "dev2", "dev3", "sim:spare" }, *some_names[4];
  const struct raid_assemble_opts grace = { .member_timeout = 600 };
  struct fixture f;
  struct raid_status st;
  struct rule *copy;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  if (!(copy = replace_held (&f, spare)))
    return;
  crash_images (&f, spare, img, devs);
  for (int i = 0, k = 0; i < 5; i++)
    if (i != absent) {
      some[k] = devs[i];
      some_names[k++] = names[i];
    }
  /* the crashed array is abandoned (its copy held at the gate) */
  if (!(f.a = assemble_devs_opts (some, some_names, 4, NULL, &grace)))
    return;
  for (int i = 0; i < 4; i++)
    f.dev[i] = img[i];
  CHECK (wait_idle (f.a, 10), "not idle without %s", names[absent]);
  raid_array_status (f.a, &st);
  CHECK (st.sync_action == RAID_SYNC_IDLE, "sync %s without %s",
         raid_sync_action_name (st.sync_action), names[absent]);
  CHECK (absent == 4 || (find_spec (&st, "sim:spare") &&
                         find_spec (&st, "sim:spare")->state == RAID_MEMBER_SPARE),
         "without %s the spare is %s (expected spare)", names[absent],
         state_of (find_spec (&st, "sim:spare")));
  verify_contents (&f, "without a member");
  if (!close_array (f.a) || !(f.a = assemble_devs (devs, names, 5, NULL)))
    return;
  CHECK (wait_idle (f.a, 10), "not idle with every member back");
  raid_array_status (f.a, &st);
  CHECK (find_spec (&st, "sim:spare") && find_spec (&st, "sim:spare")->state ==
         RAID_MEMBER_SPARE, "with every member back the spare is %s (expected spare: "
         "the replace was forgotten)", state_of (find_spec (&st, "sim:spare")));
  CHECK (find_spec (&st, "dev0") && find_spec (&st, "dev0")->role == 0,
         "dev0 is %s (expected role 0)", state_of (find_spec (&st, "dev0")));
  verify_contents (&f, "with every member back");
  teardown (&f);
}
static void test_replace_forgotten (void) { replace_forgotten (0); }
static void test_replace_forgotten_spare (void) { replace_forgotten (4); }
static void test_replace_forgotten_degraded (void) { replace_forgotten (2); }

/* 42.  A crash during a replace of role 0 onto sim:spare while another
 * spare (sim:s1, earlier in the table) waits; a start without dev0 and no
 * grace: role 0 is recovered onto sim:s1.  Expected: the replace is
 * forgotten, not begun against sim:s1 once the recovery ends (it would
 * retire a member nobody asked to replace): sim:s1 holds role 0, in sync;
 * sim:spare stays a spare. */
static void
test_replace_source_recovered (void)
{
  struct memdev *spare = sim_new ("sim:spare"), *s1 = sim_new ("sim:s1"), img[6], *devs[5];
  const char *names[5] = { "dev1", "dev2", "dev3", "sim:s1", "sim:spare" };
  const struct memdev *src[5];
  const struct raid_member_status *m;
  struct fixture f;
  struct raid_status st;
  struct rule *copy;

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  add_member (f.a, "sim:s1");
  if (!(copy = replace_held (&f, spare)))
    return;
  src[0] = &f.dev[1]; src[1] = &f.dev[2]; src[2] = &f.dev[3]; src[3] = s1; src[4] = spare;
  for (int i = 0; i < 5; i++) {
    img[i] = (struct memdev) { .size = src[i]->size, .data = malloc (src[i]->size) };
    memcpy (img[i].data, src[i]->data, src[i]->size);
    devs[i] = &img[i];
  }
  /* the crashed array is abandoned (its copy held at the gate) */
  if (!(f.a = assemble_devs (devs, names, 5, NULL)))
    return;
  for (int i = 1; i < 4; i++)
    f.dev[i] = img[i - 1];
  CHECK (wait_idle (f.a, 20), "the recovery did not end");
  raid_array_status (f.a, &st);
  m = find_spec (&st, "sim:s1");
  CHECK (m && m->role == 0 && m->state == RAID_MEMBER_IN_SYNC,
         "sim:s1 is %s with role %d (expected in_sync in role 0)", state_of (m),
         m ? m->role : -2);
  m = find_spec (&st, "sim:spare");
  CHECK (m && m->state == RAID_MEMBER_SPARE,
         "sim:spare is %s (expected spare: the replace was forgotten)", state_of (m));
  f.dev[0] = img[3];
  verify_contents (&f, "after the recovery");
  CHECK (verify_parity (&f, 0) == 0, "rows with wrong parity after the recovery");
  teardown (&f);
}
static void test_replace_stop (void) { replace_restart (false); }

/* 39.  A replace aborted, then a clean stop.  Expected: nothing begins
 * again at the next start: the spare stays a spare, dev0 keeps role 0. */
static void
test_replace_aborted_restart (void)
{
  struct memdev *spare = sim_new ("sim:spare");
  const char *sims_used[1] = { "sim:spare" };
  const uint64_t slow = 1 << 20;
  struct fixture f;
  struct raid_status st;
  struct rule *copy;
  char err[256];

  if (!setup (&f, 5, 4, CHUNK, NULL))
    return;
  if (!(copy = replace_held (&f, spare)))
    return;
  CHECK (raid_array_set_speed (f.a, NULL, &slow, err, sizeof err) == 0, "set: %s", err);
  gate_open (&copy->gate);
  CHECK (raid_array_abort (f.a, err, sizeof err) == 0, "abort: %s", err);
  if (!close_array (f.a) || !(f.a = reassemble (&f, sims_used, 1, NULL)))
    return;
  CHECK (wait_idle (f.a, 20), "not idle after the restart");
  raid_array_status (f.a, &st);
  CHECK (st.sync_action == RAID_SYNC_IDLE, "sync %s after the restart",
         raid_sync_action_name (st.sync_action));
  CHECK (find_spec (&st, "sim:spare") && find_spec (&st, "sim:spare")->state ==
         RAID_MEMBER_SPARE, "the spare is %s (expected spare)",
         state_of (find_spec (&st, "sim:spare")));
  CHECK (find_spec (&st, "dev0") && find_spec (&st, "dev0")->role == 0 &&
         find_spec (&st, "dev0")->state == RAID_MEMBER_IN_SYNC, "dev0 is %s",
         state_of (find_spec (&st, "dev0")));
  verify_contents (&f, "after the restart");
  teardown (&f);
}
/* 36.  The target fails in the window (its writes fail) after
 * role 0's member failed.  Expected: client writes succeed (the target's
 * failure does not fail them), the replace ends with the target faulty,
 * contents right (degraded). */
static void
test_win_target_fails (void)
{
  struct fixture f;
  struct memdev *spare = sim_new ("sim:spare");
  struct raid_status st;
  struct rule *copy, *tf;
  uint64_t W;

  if (!setup (&f, 6, 5, CHUNK, NULL))
    return;
  W = raid_array_stripe_width (f.a);
  if (!(copy = replace_held (&f, spare)))
    return;
  fail_member (f.a, "0");
  tf = rule_new (spare, OP_WRITE, DOFF, DOFF + 64 * CHUNK, FAIL);
  rule_arm (tf, -1);
  for (uint64_t row = 1; row < 12; row++) {
    memset (f.model + row * W + 100, 0x60 + (int) row, 3 * CHUNK);
    CHECK (raid_array_pwrite (f.a, f.model + row * W + 100, 3 * CHUNK, row * W + 100, 0) == 0,
           "write row %" PRIu64, row);
  }
  memset (f.model + 20 * W, 0, 2 * W);
  CHECK (raid_array_zero (f.a, 2 * W, 20 * W, 0, false) == 0, "zero");
  raid_array_status (f.a, &st);
  printf ("  spare %s\n", state_of (find_spec (&st, "sim:spare")));
  rule_arm (tf, 0);
  gate_open (&copy->gate);
  CHECK (wait_idle (f.a, 20), "the replace did not end");
  raid_array_status (f.a, &st);
  printf ("  after: spare %s role %d, health %s\n", state_of (find_spec (&st, "sim:spare")),
          find_spec (&st, "sim:spare") ? find_spec (&st, "sim:spare")->role : -2,
          raid_health_name (st.health));
  verify_contents (&f, "after the target failed");
  teardown (&f);
}

/* ==================================================================
 * 46. Writes that dirty clean regions of the write-intent bitmap at the
 * same moment share a page write (SHARED in regmap.h).
 * Interleaving: RAID5 of 4, --consistency=bitmap, every bit clear (a clean
 * start).  A 4K write to region 0 stops in its page write on member 0;
 * meanwhile 4K writes to regions 1..7 set their bits in memory and wait
 * for that page write to end; it goes on.
 * Expected: two page writes on member 0 (the one stopped, then one that
 * carries the other seven bits), the eight bits set on every member, and
 * every write reads back.  Each writer writing the page in turn made
 * eight.
 */
#define REGION4 (32ull * 3 * CHUNK)   /* RAID5 of 4: a 2 MiB region's rows */

static void
test_bitmap_shared_page (void)
{
  struct fixture f;
  struct rule *pg;
  struct job *w[8];
  bool marked = false;
  int writes;

  fixture_consistency = SB_CONS_BITMAP;
  if (!setup (&f, 5, 4, CHUNK, NULL) || !close_array (f.a) ||
      !(f.a = reassemble (&f, NULL, 0, NULL))) {  /* a clean start clears the bits */
    fixture_consistency = 0;
    return;
  }
  fixture_consistency = 0;
  CHECK (f.size == 8 * REGION4, "array of %" PRIu64 " bytes, expected 8 regions", f.size);
  CHECK (!bitmap_row_dirty (f.a, 0), "a bit is set after a clean start");
  pg = rule_new (&f.dev[0], OP_WRITE, LOG_LO, RAID_META_END, BLOCK);
  rule_arm (pg, 1);
  see_from (&f.dev[0], LOG_LO, RAID_META_END);
  w[0] = io_job (f.a, 0x40, 4096, 0);
  CHECK (gate_reached (&pg->gate, LONG_MS), "region 0's page write never started");
  for (int i = 1; i < 8; i++)
    w[i] = io_job (f.a, 0x40 + i, 4096, i * REGION4);
  for (uint64_t end = now_ms () + LONG_MS; !marked && now_ms () < end; sleep_ms (1)) {
    marked = true;
    for (int i = 1; i < 8; i++)
      marked &= bitmap_row_dirty (f.a, i * REGION4 / (3 * CHUNK));
  }
  CHECK (marked, "regions 1..7 were not marked while region 0's page write waited");
  gate_open (&pg->gate);
  for (int i = 0; i < 8; i++) {
    CHECK (job_done (w[i], LONG_MS) && w[i]->ret == 0, "write %d failed", i);
    memset (f.model + i * REGION4, w[i]->buf[0], 4096);
  }
  atomic_store (&seen_dev, NULL);
  writes = atomic_load (&nseen);
  CHECK (writes == 2, "%d page writes on member 0 for 8 regions marked at once (expected 2: "
         "the seven waiting share one)", writes);
  for (int d = 0; d < 4; d++)
    CHECK (f.dev[d].data[LOG_LO] == 0xFF, "member %d's bitmap holds %#x, not the 8 bits",
           d, f.dev[d].data[LOG_LO]);
  rules_reset ();
  verify_contents (&f, "bitmap shared page");
  teardown (&f);
}

/* ================================================================== */

static const struct {
  const char *name;
  void (*fn) (void);
} tests[] = {
  { "zero_during_replace", test_zero_during_replace },
  { "finish_race", test_finish_race },
  { "inflight_prepare", test_inflight_prepare },
  { "takeover_write_hole", test_takeover_write_hole },
  { "replay_to_rebuilding", test_replay_to_rebuilding },
  { "extents_during_reshape", test_extents_during_reshape },
  { "add_during_reshape", test_add_during_reshape },
  { "management_races", test_management_races },
  { "finish_zeroing", test_finish_zeroing },
  { "read_errors", test_read_errors },
  { "copy_enomem", test_copy_enomem },
  { "reshape_failure_status", test_reshape_failure_status },
  { "two_spares", test_two_spares },
  { "rebuild_pipeline", test_rebuild_pipeline },
  { "group_commit", test_group_commit },
  { "join_after_leave", test_join_after_leave },
  { "record_placement", test_record_placement },
  { "far_member_batches", test_far_member_batches },
  { "intent_before_payload", test_intent_before_payload },
  { "placement_after_recovery", test_placement_after_recovery },
  { "delta_inflight_write", test_delta_inflight_write },
  { "switch_health", test_switch_health },
  { "replace_target_fails_at_finish", test_replace_target_fails_at_finish },
  { "replace_source_fails_midcopy", test_replace_source_fails_midcopy },
  { "replace_read_error_limit", test_replace_read_error_limit },
  { "replace_copy_read_error_limit", test_replace_copy_read_error_limit },
  { "replace_read_planned_before_failure", test_replace_read_planned_before_failure },
  { "replace_rmw_read_error_limit", test_replace_rmw_read_error_limit },
  { "replace_window_r5", test_win_r5 },
  { "replace_window_r6", test_win_r6 },
  { "replace_window_r6_two", test_win_r6_two },
  { "replace_window_r1", test_win_r1 },
  { "replace_window_r5_gather", test_win_r5_gather },
  { "replace_window_crash", test_win_crash },
  { "replace_window_crash_io", test_win_crash_io },
  { "replace_window_target_fails", test_win_target_fails },
  { "replace_resumed_after_crash", test_replace_crash },
  { "replace_resumed_after_stop", test_replace_stop },
  { "replace_aborted_restart", test_replace_aborted_restart },
  { "replace_forgotten", test_replace_forgotten },
  { "replace_forgotten_spare", test_replace_forgotten_spare },
  { "replace_source_recovered", test_replace_source_recovered },
  { "replace_forgotten_degraded", test_replace_forgotten_degraded },
  { "replay_unreadable_log", test_replay_unreadable_log },
  { "replay_log_needed", test_replay_log_needed },
  { "bitmap_shared_page", test_bitmap_shared_page },
};
#define NTESTS ((int) (sizeof tests / sizeof tests[0]))

/* Run fn(arg) in a child process that dies by SIGALRM after secs; add the
 * checks and failures it reports.  A child that dies (abort, alarm) or
 * exits without reporting counts as one failed check. */
static void
run_forked (const char *what, void (*fn) (void *), void *arg, unsigned secs)
{
  int fd[2], status, c = 0, fl = 0;
  bool reported;
  FILE *fp;
  pid_t pid;

  fflush (stdout);
  fflush (stderr);
  if (pipe (fd) != 0 || (pid = fork ()) < 0) {
    perror ("fork");
    exit (1);
  }
  if (pid == 0) {
    close (fd[0]);
    checks = failures = 0;
    test_thread = true;
    alarm (secs);
    fn (arg);
    fflush (stdout);
    fflush (stderr);
    dprintf (fd[1], "%d %d\n", checks, failures);
    _exit (0);
  }
  close (fd[1]);
  while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
    ;
  fp = fdopen (fd[0], "r");
  reported = fscanf (fp, "%d %d", &c, &fl) == 2;
  fclose (fp);
  checks += c;
  failures += fl;
  if (!reported || !WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    checks++;
    failures++;
    if (WIFSIGNALED (status))
      fprintf (stderr, "%s: FAIL: %s\n", what, WTERMSIG (status) == SIGALRM
               ? "did not end (hung)" : strsignal (WTERMSIG (status)));
    else
      fprintf (stderr, "%s: FAIL: exited with status %d without a report\n", what,
               WEXITSTATUS (status));
  }
}

static void
run_test (void *arg)
{
  tests[(intptr_t) arg].fn ();
}

int
main (int argc, char **argv)
{
  int only = 0;

  if (argc == 3 && strcmp (argv[1], "--only") == 0)
    only = atoi (argv[2]);
  if ((argc != 1 && argc != 3) || (argc == 3 && (only < 1 || only > NTESTS))) {
    fprintf (stderr, "usage: %s [--only N]   (N = 1..%d)\n", argv[0], NTESTS);
    return 2;
  }
  member_set_open_hook (open_hook);
  for (int i = 0; i < NTESTS; i++) {
    int f0 = failures, c0 = checks;
    uint64_t t0 = now_ms ();
    char what[64];
    if (only && only != i + 1)
      continue;
    snprintf (what, sizeof what, "test %d (%s)", i + 1, tests[i].name);
    run_forked (what, run_test, (void *) (intptr_t) i, TEST_TIMEOUT_S);
    printf ("test-interact: %s: %s (%d checks, %d failures, %.1f s)\n", what,
            failures > f0 ? "FAILED" : "ok", checks - c0, failures - f0,
            (now_ms () - t0) / 1000.0);
  }
  return test_summary ("test-interact");
}
