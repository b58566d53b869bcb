/* nbdkit-raid: the stripe engine — array reads and writes on one layout.
 *
 * THEORY
 *
 * A request is cut into groups of whole stripe rows (at most GROUP_BYTES of
 * data each).  Every group runs one fixed, explicit sequence; nothing is
 * steered by flags set elsewhere:
 *
 *   1. plan    From a snapshot of the roles not to use (state_bad_roles,
 *              plus roles whose read failed in this group), describe every
 *              row segment: which blocks the request touches, and how
 *              parity is produced (enum seg_plan).
 *   2. lock    Writes, and reads that must reconstruct, lock the group's rows
 *              in ascending order (stripe-lock.h).  Plain reads of healthy
 *              blocks take no lock: a read racing a write to the same bytes
 *              may see either, as NBD allows.
 *   3. read    One batch of member reads, issued in parallel (mio_run).
 *   4. compute Patch new data into old blocks, make parity (read-modify-write
 *              delta, reconstruct-write, or full reconstruction).
 *   5. write   One batch of member writes, in parallel, under the layout's
 *              write-hole policy (consistency.h decides which).  FUA: a
 *              group with a segment that is not a whole row may flush
 *              every member first, as the blocks its parity came from must
 *              be durable too (flush_fua_sources).
 *   6. unlock
 *
 * Plans (levels 4, 5, 6; k data blocks per row, nparity 1 or 2):
 *   SEG_FULL  every data block of the columns is overwritten: no reads;
 *             parity is computed straight from the client's buffer.
 *   SEG_RMW   read the touched blocks and the parity, apply the delta
 *             (old XOR new) to parity.  Reads: touched + nparity.
 *   SEG_RCW   read the blocks not wholly overwritten, compute parity from
 *             all data.  Reads: k - fully covered.  The cheaper of RMW/RCW
 *             by member reads is chosen (ties go to RCW).
 *   SEG_RECON a role of the row is unusable: read every usable block
 *             (once: a read request's own blocks come from the same read),
 *             rebuild the missing data blocks whose old content is still
 *             needed (those not wholly overwritten) from parity, patch,
 *             recompute all parity, write the usable touched blocks, the
 *             usable parity and every block being repaired.  When more
 *             blocks are unreadable than parity can rebuild, but the
 *             touched blocks and the parity can be read, SEG_RMW is used
 *             instead: the parity delta needs no other block.
 * Level 0 writes and reads data directly; level 1 writes every mirror and
 * reads one.
 *
 * Member I/O: run_runs (run_pieces for one list) is the only function that
 * issues member I/O of a layout's data area.  It coalesces pieces per
 * member, and sends every write or zeroing of the layout's mirror role (a
 * replace) to the mirror target as well — so no write path can forget the
 * replacement.  When the member being replaced has failed (the replace
 * stops at its next check and the target takes the role, recovering from
 * the copy cursor), the role is unusable, but its writes are still planned
 * and go to the target alone (G->mirror_only, from the group's snapshot):
 * the rows the target already holds must not miss them.  Which member a
 * piece goes to is decided by the role's binding and that snapshot only,
 * never by member states read again later.
 *
 * Columns: parity is computed over column ranges aligned to COL_ALIGN
 * (4 KiB, which divides every chunk size), so isa-l's length rules hold for
 * any request; unaligned request edges become reads of the enclosing
 * aligned range of that block (which RMW/RCW need anyway).
 *
 * Failures: a failed member I/O is reported to the state (state.h) and the
 * group is done again from step 1, under the same row locks.  A write error
 * made the member faulty: the redo has one more unusable role.  A read error
 * was counted: the redo treats that role as missing for reading
 * (G->exclude), rebuilds its blocks from the others and writes them back
 * onto it (a failed rewrite makes it faulty).  Each redo follows one more
 * excluded or faulty role, so there are at most 2 * raid_disks of them.
 * A background batch (check, resync, rebuild, a replace's copy: many
 * rows) whose read failed is redone one row at a time instead
 * (check_locked, rebuild_rest, copy_rest),
 * so that a role is excluded only in the rows it cannot read; the error
 * is counted once per batch (G->counted).  A
 * redo after a partial write is safe because every write plan writes a
 * complete new state of the columns it covers (data and parity consistent
 * with each other): whichever of the previous attempt's writes landed, the
 * usable members decode to the new data for the written blocks and the old
 * data elsewhere, and the redo reads that and writes it again.
 *
 * Memory: buffers come from a per-thread arena reset at every group, so the
 * steady state allocates nothing per request; full rows use the client's
 * buffer directly (zero copy for data, only parity is produced).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "array-int.h"
#include "consistency.h"
#include "journal.h"
#include "parity.h"
#include "stripe.h"
#include "util.h"

#define COL_ALIGN 4096u
#define GROUP_BYTES (8u << 20)
#define MAX_IOV 1024

/* ---------------------------------------------------------------------
 * Per-thread arena: bump allocation, reset per group.
 */
struct arena_blk {
  struct arena_blk *next;
  size_t cap, used;
  uint8_t *data;
};

struct arena {
  struct arena_blk *head;            /* current block first */
  size_t total;                      /* sum of caps: size of the merged block */
};

static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void
arena_free_chain (struct arena_blk *b)
{
  while (b) {
    struct arena_blk *n = b->next;
    free (b->data);
    free (b);
    b = n;
  }
}

static void
arena_destroy (void *p)
{
  struct arena *ar = p;
  arena_free_chain (ar->head);
  free (ar);
}

static void
arena_key_init (void)
{
  pthread_key_create (&arena_key, arena_destroy);
}

static struct arena_blk *
arena_blk_new (size_t cap)
{
  struct arena_blk *b = calloc (1, sizeof *b);
  if (!b)
    return NULL;
  b->data = raid_alloc_aligned (cap);
  if (!b->data) {
    free (b);
    return NULL;
  }
  b->cap = cap;
  return b;
}

/* Start a new group: all earlier allocations become invalid.  When the last
 * group needed more than one block, merge into one block of the total so
 * the steady state is a single block and no allocation. */
static struct arena *
arena_reset (void)
{
  struct arena *ar;

  pthread_once (&arena_once, arena_key_init);
  ar = pthread_getspecific (arena_key);
  if (!ar) {
    ar = calloc (1, sizeof *ar);
    if (!ar)
      return NULL;
    pthread_setspecific (arena_key, ar);
  }
  if (ar->head && ar->head->next) {
    arena_free_chain (ar->head);
    ar->head = arena_blk_new (ar->total);
    if (!ar->head)
      ar->total = 0;
  }
  if (ar->head)
    ar->head->used = 0;
  return ar;
}

static void *
arena_alloc (struct arena *ar, size_t size)
{
  struct arena_blk *b = ar->head;
  void *p;

  size = raid_round_up (size ? size : 1, RAID_ALIGN);
  if (!b || b->cap - b->used < size) {
    size_t cap = raid_max_u64 (size, 1u << 20);
    b = arena_blk_new (cap);
    if (!b)
      return NULL;
    b->next = ar->head;
    ar->head = b;
    ar->total += cap;
  }
  p = b->data + b->used;
  b->used += size;
  return p;
}

/* size bytes at the offset from a RAID_ALIGN boundary that `like` has (a
 * block that shares a client buffer's offset: parity.c then runs its
 * aligned kernels on both). */
static void *
arena_alloc_like (struct arena *ar, size_t size, const void *like)
{
  uint8_t *p = arena_alloc (ar, size + RAID_ALIGN);

  return p ? p + ((uintptr_t) like & (RAID_ALIGN - 1)) : NULL;
}

/* ---------------------------------------------------------------------
 * Member I/O pieces, coalesced per member into one vectored op.
 */
struct piece_list {
  struct piece *p;
  size_t n, cap;
};

static int
piece_add (struct arena *ar, struct piece_list *pl, int role, uint64_t off,
           void *ptr, size_t len)
{
  if (pl->n == pl->cap) {
    size_t cap = pl->cap ? pl->cap * 2 : 64;
    struct piece *np = arena_alloc (ar, cap * sizeof *np);
    if (!np)
      return ENOMEM;
    if (pl->n)
      memcpy (np, pl->p, pl->n * sizeof *np);
    pl->p = np;
    pl->cap = cap;
  }
  pl->p[pl->n++] = (struct piece) { role, off, ptr, len };
  return 0;
}

/* The mirror target of a write of L, while its replace is copying. */
static struct member *
mirror_target (struct raid_array *a, const struct layout *L, enum mio_op op)
{
  int s = L->mirror_slot;

  if (op == MIO_READ || L->mirror_role < 0 || s < 0 ||
      atomic_load (&a->mem[s].state) != RAID_MEMBER_REBUILDING)
    return NULL;
  return a->mem[s].m;
}

/* Append to mios the ops for pieces[0..n) of role r, on member m, merging
 * contiguous ones; returns the new count. */
static size_t
gather_role (struct member *m, const struct piece *pp, size_t n, int r, enum mio_op op,
             unsigned mflags, struct mio *mios, size_t nmio, struct iovec *iov,
             size_t *niov)
{
  struct mio *cur = NULL;

  for (size_t i = 0; i < n; i++) {
    const struct piece *p = &pp[i];
    if (p->role != r)
      continue;
    if (cur && cur->off + cur->len == p->off &&
        (op == MIO_ZERO || cur->iovcnt < MAX_IOV)) {
      cur->len += p->len;
      if (op == MIO_ZERO)
        continue;
      struct iovec *last = &cur->iov[cur->iovcnt - 1];
      if ((uint8_t *) last->iov_base + last->iov_len == (uint8_t *) p->ptr)
        last->iov_len += p->len;
      else {
        iov[(*niov)++] = (struct iovec) { p->ptr, p->len };
        cur->iovcnt++;
      }
      continue;
    }
    cur = &mios[nmio++];
    *cur = (struct mio) { .m = m, .op = op, .flags = mflags, .off = p->off, .len = p->len };
    assert (cur->m != NULL);
    if (op != MIO_ZERO) {
      cur->iov = &iov[*niov];
      cur->iovcnt = 1;
      iov[(*niov)++] = (struct iovec) { p->ptr, p->len };
    }
  }
  return nmio;
}

/* One list of pieces, all of one op, for run_runs. */
struct piece_run {
  const struct piece *pp;
  size_t n;
  enum mio_op op;
  unsigned mflags;
  uint32_t mirror_only;              /* roles whose pieces go to the mirror
                                        target alone (writes) */
  uint32_t failed;                   /* out: roles whose member failed */
  bool quiet;                        /* reads of a fill: a failure is not
                                        reported to the state (the redo
                                        without fills reads, and reports,
                                        what the request needs) */
  uint32_t quiet_roles;              /* roles whose read failures are not
                                        reported: already counted in this
                                        batch (G->counted) */
};

/* Issue the pieces of runs[0..nruns) (nruns <= 2) together, in parallel.
 * Writes and zeroes of L's mirror role also go to the mirror target.
 * Returns 0 or ENOMEM; each run's `failed` gets the roles whose member
 * failed one of its pieces, each reported to the state (a read error is
 * counted, a write error makes the member faulty).  A failed mirror target
 * is reported (it goes faulty, which ends the replace) but does not fail
 * the request. */
static int
run_runs (struct raid_array *a, const struct layout *L, struct arena *ar,
          struct piece_run *runs, int nruns)
{
  size_t total = 0, nmio = 0, niov = 0, first[2], own[2], end[2];
  bool writes = false;
  int ran;
  struct mio *mios;
  struct iovec *iov;

  assert (nruns <= 2);
  for (int k = 0; k < nruns; k++) {
    runs[k].failed = 0;
    total += runs[k].n;
  }
  if (total == 0)
    return 0;
  mios = arena_alloc (ar, 2 * total * sizeof *mios);
  iov = arena_alloc (ar, total * sizeof *iov);
  if (!mios || !iov)
    return ENOMEM;
  for (int k = 0; k < nruns; k++) {
    struct member *mirror = mirror_target (a, L, runs[k].op);
    first[k] = nmio;
    for (int r = 0; r < L->g.raid_disks; r++) {
      struct member *m = runs[k].mirror_only & (1u << r) ? mirror
                                                       : state_role_member (a, L, r);
      if (m)                             /* (no mirror: the target failed) */
        nmio = gather_role (m, runs[k].pp, runs[k].n, r, runs[k].op, runs[k].mflags,
                            mios, nmio, iov, &niov);
    }
    own[k] = nmio;
    for (size_t i = first[k]; mirror && i < own[k]; i++)
      if (mios[i].m == state_role_member (a, L, L->mirror_role)) {
        mios[nmio] = mios[i];
        mios[nmio++].m = mirror;
      }
    end[k] = nmio;
  }
  for (int k = 0; k < nruns; k++)
    writes |= runs[k].op != MIO_READ;
  if (writes)
    rowcache_bump (&a->rowcache);          /* rowcache.h R1, R2 */
  ran = mio_run (mios, nmio);
  if (writes)
    rowcache_bump (&a->rowcache);
  if (ran == 0)
    return 0;
  for (int k = 0; k < nruns; k++)
    for (size_t i = first[k]; i < end[k]; i++) {
      uint32_t roles = 0;
      if (mios[i].err == 0)
        continue;
      for (int r = 0; i < own[k] && r < L->g.raid_disks; r++)
        if (!(runs[k].mirror_only & (1u << r)) && state_role_member (a, L, r) == mios[i].m)
          roles |= 1u << r;
      if (!runs[k].quiet && !(runs[k].op == MIO_READ && (roles & runs[k].quiet_roles)))
        state_member_error (a, mios[i].m, mios[i].err, runs[k].op != MIO_READ, mios[i].off);
      runs[k].failed |= roles;
    }
  return 0;
}

/* Issue pieces [0, n), all of one op, in parallel (run_runs with one run):
 * *failed gets the roles whose member failed. */
static int
run_pieces (struct raid_array *a, const struct layout *L, struct arena *ar,
            const struct piece *pp, size_t n, enum mio_op op, unsigned mflags,
            uint32_t *failed)
{
  struct piece_run run = { pp, n, op, mflags, 0, 0 };
  int err = run_runs (a, L, ar, &run, 1);

  *failed = run.failed;
  return err;
}

/* ---------------------------------------------------------------------
 * Row segments.
 */
enum seg_plan { SEG_FULL, SEG_RMW, SEG_RCW, SEG_RECON };

struct touch {
  int di;                            /* data index */
  uint32_t s, e;                     /* columns [s, e) within the chunk */
  uint8_t *src;                      /* client bytes for column s */
};

struct seg {
  uint64_t row;
  uint32_t c0, c1;                   /* aligned columns */
  enum seg_plan plan;
  bool read_in_place;                /* a read: readable blocks a touch covers
                                        wholly are read into the client's
                                        buffer (read_target) */
  bool fill;                         /* a read of the whole row, kept in the
                                        row cache for the request that
                                        continues it (rowcache.h) */
  int ntouch;
  struct touch t[RAID_MAX_MEMBERS];
  /* Blocks over [c0, c1): index slot (0..k-1) for data, k for P, k+1 for Q. */
  uint8_t *blk[RAID_MAX_MEMBERS + 2];
  uint8_t *old[RAID_MAX_MEMBERS];    /* RMW: old data by touch index */
  size_t wr_first, wr_end;           /* its pieces in the group's write list */
};

struct group {
  struct raid_array *a;
  const struct layout *L;
  struct arena *ar;
  uint32_t unusable;                 /* roles not to use in any row (state) */
  uint32_t exclude;                  /* roles whose read failed: not read,
                                        rebuilt and written back */
  uint32_t counted;                  /* roles whose read error this batch
                                        has counted: not counted again when
                                        its rows are read one by one */
  uint32_t rb_mask;                  /* roles being rebuilt: good below rb_row */
  uint32_t mirror_only;              /* unusable roles written to the replace
                                        target alone (its member failed) */
  uint64_t rb_row;
  uint64_t rb_logged;                /* state_rb_logged: rows of rb_mask's
                                        roles from here need a rebuild after
                                        a crash */
  uint32_t repair;                   /* roles whose rebuilt blocks are written */
  bool stream;                       /* a read that continues a stream: its
                                        partial rows that need a rebuild are
                                        read whole, for the row cache */
  uint64_t fill_epoch;               /* the row cache's epoch before the reads */
  bool no_fill;                      /* a read of a fill failed: the redo reads
                                        only what the request needs */
  struct raid_row rr;                /* scratch */
  struct seg *segs;
  size_t nsegs, capsegs;
  struct piece_list rd, wr;
};

/* Roles not to read in `row`.  Taken from a snapshot made while holding the
 * row locks (or, for unlocked reads, of rows the rebuild has already passed:
 * the rebuild cursor only moves forward, so they stay good). */
static uint32_t
bad_at (const struct group *G, uint64_t row)
{
  return G->unusable | G->exclude | (row >= G->rb_row ? G->rb_mask : 0);
}

/* Roles not to write in `row`.  Excluded roles are written (repaired), and
 * so is a role being rebuilt, in every row: above the cursor its blocks are
 * not read, but writes keep what it holds current (a member that rejoins
 * by delta holds valid data above the cursor, outside the regions it
 * missed). */
static uint32_t
dead_at (const struct group *G, uint64_t row)
{
  (void) row;
  return G->unusable & ~G->mirror_only;
}

/* The replace's role, when its member has left in sync while the copy goes
 * on (the target is still being written): as a mask, else 0. */
static uint32_t
orphaned_mirror (const struct group *G)
{
  const struct layout *L = G->L;

  if (L->mirror_role < 0 || L->mirror_slot < 0 || !(G->unusable & (1u << L->mirror_role)) ||
      atomic_load (&G->a->mem[L->mirror_slot].state) != RAID_MEMBER_REBUILDING)
    return 0;
  return 1u << L->mirror_role;
}

static void
snapshot (struct group *G)
{
  G->unusable = state_bad_roles (G->a, G->L, &G->rb_mask, &G->rb_row);
  G->rb_logged = state_rb_logged (G->a);
  G->mirror_only = orphaned_mirror (G);
}

/* Start a new attempt: empty plan and piece lists (arena memory is reused). */
static void
group_reset (struct group *G)
{
  G->nsegs = G->capsegs = 0;
  G->rd.n = G->rd.cap = G->wr.n = G->wr.cap = 0;
  snapshot (G);
}

static int
nparity (const struct layout *L)
{
  return L->g.level >= 4 ? L->g.parity_disks : 0;
}

static int
slot_of (const struct layout *L, const struct raid_row *rr, int di)
{
  return L->g.level == 6 ? rr->slot[di] : di;
}

/* Member offset of column c of row `row` on role r. */
static uint64_t
moff (const struct layout *L, int r, uint64_t row, uint32_t c)
{
  return L->data_offset[r] + row * L->g.chunk + c;
}

static uint64_t
row_width (const struct layout *L)
{
  return L->g.stripe_width;
}

/* Rows per group: about GROUP_BYTES of data, at least one row. */
static uint64_t
group_rows (const struct layout *L)
{
  return raid_max_u64 (1, GROUP_BYTES / row_width (L));
}

static struct seg *
seg_new (struct group *G)
{
  if (G->nsegs == G->capsegs) {
    size_t cap = G->capsegs ? G->capsegs * 2 : 8;
    struct seg *ns = arena_alloc (G->ar, cap * sizeof *ns);
    if (!ns)
      return NULL;
    if (G->nsegs)
      memcpy (ns, G->segs, G->nsegs * sizeof *ns);
    G->segs = ns;
    G->capsegs = cap;
  }
  memset (&G->segs[G->nsegs], 0, sizeof (struct seg));
  return &G->segs[G->nsegs++];
}

/* Row-relative range [s, e) of row `row` touched by the request: which data
 * blocks and columns.  Fills t[] (by data index order), returns count. */
static int
row_touches (const struct layout *L, uint64_t s, uint64_t e, uint8_t *src,
             struct touch *t)
{
  uint32_t chunk = L->g.chunk;
  int n = 0;

  for (uint64_t i = s / chunk; i * chunk < e; i++) {
    uint64_t bs = raid_max_u64 (s, i * chunk), be = raid_min_u64 (e, (i + 1) * chunk);
    t[n++] = (struct touch) {
      .di = (int) i, .s = (uint32_t) (bs - i * chunk),
      .e = (uint32_t) (be - i * chunk), .src = src ? src + (bs - s) : NULL,
    };
  }
  return n;
}

/* Widest column segment: (k + 2) blocks of it fit one journal record. */
static uint32_t
seg_width_cap (const struct layout *L)
{
  uint32_t cap = JOURNAL_MAX_RECORD / (L->g.data_disks + 2);
  while (cap & (cap - 1))
    cap &= cap - 1;
  return raid_max_u64 (COL_ALIGN, cap);
}

/* Split a row's touches into column segments: every maximal aligned column
 * interval over which the set of touched blocks does not change, at most
 * seg_width_cap wide. */
static int
row_segments (struct group *G, uint64_t row, const struct touch *t, int nt)
{
  uint32_t pts[2 * RAID_MAX_MEMBERS];
  int npts = 0;

  for (int i = 0; i < nt; i++) {
    pts[npts++] = (uint32_t) raid_round_down (t[i].s, COL_ALIGN);
    pts[npts++] = (uint32_t) raid_round_up (t[i].e, COL_ALIGN);
  }
  /* insertion sort, dedupe */
  for (int i = 1; i < npts; i++)
    for (int j = i; j > 0 && pts[j - 1] > pts[j]; j--) {
      uint32_t x = pts[j]; pts[j] = pts[j - 1]; pts[j - 1] = x;
    }
  for (int p = 0; p + 1 < npts; p++) {
    uint32_t c0 = pts[p], c1 = pts[p + 1];
    struct seg *sg;
    if (c0 == c1)
      continue;
    if (c1 - c0 > seg_width_cap (G->L)) {
      /* Split wide intervals so one segment's journal record always fits. */
      c1 = c0 + seg_width_cap (G->L);
      pts[p--] = c1;
    }
    sg = NULL;
    for (int i = 0; i < nt; i++) {
      uint32_t s = raid_max_u64 (t[i].s, c0), e = raid_min_u64 (t[i].e, c1);
      if (s >= e)
        continue;
      if (!sg) {
        sg = seg_new (G);
        if (!sg)
          return ENOMEM;
        sg->row = row; sg->c0 = c0; sg->c1 = c1;
      }
      sg->t[sg->ntouch++] = (struct touch) {
        .di = t[i].di, .s = s, .e = e,
        .src = t[i].src ? t[i].src + (s - t[i].s) : NULL,
      };
    }
  }
  return 0;
}

static bool
touch_full (const struct seg *sg, const struct touch *t)
{
  return t->s == sg->c0 && t->e == sg->c1;
}

static bool
row_has_bad (const struct group *G, uint64_t row)
{
  uint32_t all = G->L->g.raid_disks >= 32 ? ~0u : (1u << G->L->g.raid_disks) - 1;
  return (bad_at (G, row) & all) != 0;
}

/* Level 1: the mirror a row is read from, and copied from by a rebuild
 * and a resync: the first readable role from row mod raid_disks on
 * (reads spread over the mirrors by row).  One choice for all three, so
 * a resync after an unclean stop writes every mirror with what reads of
 * the row returned before it, and changes nothing a read returns.  -1
 * when no mirror is readable. */
static int
mirror_source (const struct group *G, uint64_t row)
{
  int n = G->L->g.raid_disks;
  uint32_t bad = bad_at (G, row);

  for (int j = 0; j < n; j++) {
    int role = (int) ((row + (uint64_t) j) % (uint64_t) n);
    if (!(bad & (1u << role)))
      return role;
  }
  return -1;
}

/* Whether a whole row written may be journaled as an intent (journal.c):
 * a replay can read every block of it, also after a crash, when a rebuild
 * goes on from the cursor its record holds (rb_logged), not the one in
 * memory.  Else a torn write leaves a block known only through parity that
 * nothing can recompute: the row is logged with its contents. */
static bool
intent_ok (const struct group *G, uint64_t row)
{
  uint32_t all = G->L->g.raid_disks >= 32 ? ~0u : (1u << G->L->g.raid_disks) - 1;
  return ((G->unusable | G->exclude | (row >= G->rb_logged ? G->rb_mask : 0)) & all) == 0;
}

/* Whether a read-modify-write of the segment can read everything it needs
 * (the touched blocks and every parity block) in a row with bad roles. */
static bool
rmw_readable (const struct group *G, const struct seg *sg, const struct raid_row *rr)
{
  uint32_t bad = bad_at (G, sg->row);

  if ((bad & (1u << rr->pd)) || (rr->qd >= 0 && (bad & (1u << rr->qd))))
    return false;
  for (int i = 0; i < sg->ntouch; i++)
    if (bad & (1u << rr->data[sg->t[i].di]))
      return false;
  return true;
}

/* Roles of the row with a block that cannot be read. */
static int
row_unreadable (const struct group *G, uint64_t row)
{
  uint32_t all = G->L->g.raid_disks >= 32 ? ~0u : (1u << G->L->g.raid_disks) - 1;
  return __builtin_popcount (bad_at (G, row) & all);
}

static enum seg_plan
choose_plan (const struct group *G, const struct seg *sg, const struct raid_row *rr)
{
  int k = G->L->g.data_disks, nfull = 0;

  for (int i = 0; i < sg->ntouch; i++)
    nfull += touch_full (sg, &sg->t[i]);
  if (nfull == k)
    return SEG_FULL;                 /* also when degraded: nothing to read */
  if (row_has_bad (G, sg->row))
    /* Rebuild the missing blocks (and repair the unreadable ones) when
     * parity can; past that, the parity delta needs neither. */
    return row_unreadable (G, sg->row) > nparity (G->L) && rmw_readable (G, sg, rr)
      ? SEG_RMW : SEG_RECON;
  return (k - nfull) <= sg->ntouch + nparity (G->L) ? SEG_RCW : SEG_RMW;
}

/* ---------------------------------------------------------------------
 * Reading phase helpers.
 */
/* A block of the segment's columns, at the offset its client's bytes have
 * (the client's buffer and the engine's blocks meet in one parity call). */
static uint8_t *
seg_block (struct group *G, const struct seg *sg)
{
  const uint8_t *like = NULL;

  for (int i = 0; i < sg->ntouch && !like; i++)
    if (sg->t[i].src)
      like = sg->t[i].src - (sg->t[i].s - sg->c0);
  return arena_alloc_like (G->ar, sg->c1 - sg->c0, like);
}

static uint8_t *
read_block (struct group *G, const struct seg *sg, int role)
{
  uint32_t len = sg->c1 - sg->c0;
  uint8_t *b = seg_block (G, sg);

  if (b && piece_add (G->ar, &G->rd, role, moff (G->L, role, sg->row, sg->c0), b, len))
    return NULL;
  return b;
}

/* Index (slot, k or k+1) of a role in row rr, or -1. */
static int
role_index (const struct layout *L, const struct raid_row *rr, int role)
{
  int k = L->g.data_disks;
  if (role == rr->pd)
    return k;
  if (role == rr->qd)
    return k + 1;
  return rr->role_data[role] >= 0 ? slot_of (L, rr, rr->role_data[role]) : -1;
}

/* The client's bytes a segment's read of data index di can land in: a
 * touch of a readable block that covers exactly the segment's columns
 * (a degraded read of whole rows reads each surviving block once, into
 * the client's buffer), else NULL. */
static uint8_t *
read_target (const struct seg *sg, int di)
{
  for (int i = 0; sg->read_in_place && di >= 0 && i < sg->ntouch; i++)
    if (sg->t[i].di == di && sg->t[i].src && sg->t[i].s == sg->c0 && sg->t[i].e == sg->c1)
      return sg->t[i].src;
  return NULL;
}

/* Queue reads of every readable role of the row over the segment's columns
 * (buffers for the others).  0 or ENOMEM. */
static int
plan_recon_reads (struct group *G, struct seg *sg, const struct raid_row *rr)
{
  const struct layout *L = G->L;

  for (int r = 0; r < L->g.raid_disks; r++) {
    int idx = role_index (L, rr, r);
    uint8_t *into;
    if (idx < 0)
      continue;
    into = read_target (sg, rr->role_data[r]);
    if (bad_at (G, sg->row) & (1u << r))
      sg->blk[idx] = into ? into : seg_block (G, sg);   /* rebuilt there */
    else if (into)
      sg->blk[idx] = piece_add (G->ar, &G->rd, r, moff (L, r, sg->row, sg->c0), into,
                                sg->c1 - sg->c0) ? NULL : into;
    else
      sg->blk[idx] = read_block (G, sg, r);
    if (!sg->blk[idx])
      return ENOMEM;
  }
  return 0;
}

/* Whether data index di is wholly overwritten by the segment. */
static bool
seg_covers (const struct seg *sg, int di)
{
  for (int i = 0; i < sg->ntouch; i++)
    if (sg->t[i].di == di && touch_full (sg, &sg->t[i]))
      return true;
  return false;
}

/* Rebuild the blocks of the row's unreadable roles that are needed: every
 * one when `all`, else the data blocks whose old content a write still
 * needs (not wholly overwritten); parity is recomputed by the caller.
 * EIO when more blocks are missing than parity can rebuild. */
static int
recover_seg (struct group *G, struct seg *sg, bool all)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  int k = L->g.data_disks, missing[RAID_MAX_MEMBERS + 2], n = 0;
  bool needed = false;

  for (int r = 0; r < L->g.raid_disks; r++) {
    int idx = role_index (L, rr, r);
    if (idx < 0 || !(bad_at (G, sg->row) & (1u << r)))
      continue;
    missing[n++] = idx;
    needed |= all || (idx < k && !seg_covers (sg, rr->role_data[r]));
  }
  if (!needed)
    return 0;
  if (n > nparity (L) ||
      parity_recover (k, nparity (L), sg->c1 - sg->c0, (void *const *) sg->blk,
                      missing, n) < 0)
    return EIO;
  return 0;
}

/* ---------------------------------------------------------------------
 * Write path.
 */
static int
plan_write_seg (struct group *G, struct seg *sg)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  int k = L->g.data_disks, np = nparity (L);

  raid_geom_row (&L->g, sg->row, rr);
  sg->plan = choose_plan (G, sg, rr);
  switch (sg->plan) {
  case SEG_FULL:
    for (int i = 0; i < sg->ntouch; i++)
      sg->blk[slot_of (L, rr, sg->t[i].di)] = sg->t[i].src;
    for (int p = 0; p < np; p++)
      if (!(sg->blk[k + p] = seg_block (G, sg)))
        return ENOMEM;
    return 0;
  case SEG_RMW:
    for (int i = 0; i < sg->ntouch; i++)
      if (!(sg->old[i] = read_block (G, sg, rr->data[sg->t[i].di])))
        return ENOMEM;
    if (!(sg->blk[k] = read_block (G, sg, rr->pd)))
      return ENOMEM;
    if (np == 2 && !(sg->blk[k + 1] = read_block (G, sg, rr->qd)))
      return ENOMEM;
    return 0;
  case SEG_RCW: {
    bool full[RAID_MAX_MEMBERS] = { false };
    for (int i = 0; i < sg->ntouch; i++)
      if (touch_full (sg, &sg->t[i])) {
        full[sg->t[i].di] = true;
        sg->blk[slot_of (L, rr, sg->t[i].di)] = sg->t[i].src;
      }
    for (int di = 0; di < k; di++)
      if (!full[di] &&
          !(sg->blk[slot_of (L, rr, di)] = read_block (G, sg, rr->data[di])))
        return ENOMEM;
    for (int p = 0; p < np; p++)
      if (!(sg->blk[k + p] = seg_block (G, sg)))
        return ENOMEM;
    return 0;
  }
  case SEG_RECON:
    return plan_recon_reads (G, sg, rr);
  }
  abort ();
}

static void
patch (struct seg *sg, uint8_t *blk, const struct touch *t)
{
  memcpy (blk + (t->s - sg->c0), t->src, t->e - t->s);
}

/* New data and parity of an RMW segment: delta of each touched block. */
static int
compute_rmw (struct group *G, struct seg *sg)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  int k = L->g.data_disks;
  uint32_t len = sg->c1 - sg->c0;
  void *delta[RAID_MAX_MEMBERS];
  int slots[RAID_MAX_MEMBERS];

  for (int i = 0; i < sg->ntouch; i++) {
    const struct touch *t = &sg->t[i];
    uint8_t *nb = t->src;
    if (!touch_full (sg, t)) {
      if (!(nb = arena_alloc (G->ar, len)))
        return ENOMEM;
      memcpy (nb, sg->old[i], len);
      patch (sg, nb, t);
    }
    parity_xor_into (sg->old[i], nb, len);       /* old becomes the delta */
    delta[i] = sg->old[i];
    slots[i] = slot_of (L, rr, t->di);
    sg->blk[slots[i]] = nb;
  }
  return parity_update (k, len, sg->ntouch, slots, delta, sg->blk[k],
                        nparity (L) == 2 ? sg->blk[k + 1] : NULL) < 0 ? EIO : 0;
}

/* Whether role r of the row is written by the segment: touched data, parity,
 * or a role being repaired (its read failed). */
static bool
seg_writes_role (const struct group *G, const struct seg *sg, int r)
{
  const struct raid_row *rr = &G->rr;

  if (r == rr->pd || r == rr->qd || (G->exclude & (1u << r)))
    return true;
  for (int i = 0; i < sg->ntouch; i++)
    if (rr->data[sg->t[i].di] == r)
      return true;
  return false;
}

/* Compute new data and parity of a segment and queue its writes. */
static int
compute_write_seg (struct group *G, struct seg *sg)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  int k = L->g.data_disks, err;
  uint32_t len = sg->c1 - sg->c0;

  raid_geom_row (&L->g, sg->row, rr);
  if (sg->plan == SEG_RMW)
    err = compute_rmw (G, sg);
  else {
    err = sg->plan == SEG_RECON ? recover_seg (G, sg, false) : 0;
    for (int i = 0; !err && i < sg->ntouch; i++)
      if (sg->plan == SEG_RECON || !touch_full (sg, &sg->t[i]))
        patch (sg, sg->blk[slot_of (L, rr, sg->t[i].di)], &sg->t[i]);
    if (!err && parity_gen (k, len, (void *const *) sg->blk, sg->blk[k],
                            nparity (L) == 2 ? sg->blk[k + 1] : NULL) < 0)
      err = EIO;
  }
  if (err)
    return err;

  sg->wr_first = G->wr.n;
  for (int r = 0; r < L->g.raid_disks; r++) {
    int idx = role_index (L, rr, r);
    if (idx < 0 || !sg->blk[idx] || (dead_at (G, sg->row) & (1u << r)) ||
        !seg_writes_role (G, sg, r))
      continue;
    if ((err = piece_add (G->ar, &G->wr, r, moff (L, r, sg->row, sg->c0),
                          sg->blk[idx], len)))
      return err;
  }
  sg->wr_end = G->wr.n;
  return 0;
}

/* Level 0 and 1: no parity.  Data goes to its role (0) or every mirror (1). */
static int
plan_write_plain (struct group *G, uint64_t row, const struct touch *t, int nt)
{
  const struct layout *L = G->L;
  int err;

  for (int i = 0; i < nt; i++) {
    int nroles = L->g.level == 1 ? L->g.raid_disks : 1;
    bool wrote = false;
    for (int j = 0; j < nroles; j++) {
      int role = L->g.level == 1 ? j : t[i].di;
      if (dead_at (G, row) & (1u << role))
        continue;
      if ((err = piece_add (G->ar, &G->wr, role, moff (L, role, row, t[i].s),
                            t[i].src, t[i].e - t[i].s)))
        return err;
      wrote = true;
    }
    if (!wrote)
      return EIO;
  }
  return 0;
}

/* A write request's rows [r0, r0+n): [off, off+count) in layout array
 * space, buf at off. */
struct req {
  uint8_t *buf;                      /* client bytes for `off` */
  uint64_t off, count;
  unsigned flags;
};

/* cons_write's issue callback: write pieces [first, end) of the group. */
struct issue_ctx {
  struct group *G;
  enum mio_op op;
  unsigned mflags;
};

static int
issue_writes (void *p, size_t first, size_t end, uint32_t *failed)
{
  struct issue_ctx *c = p;
  struct piece_run run = { c->G->wr.p + first, end - first, c->op, c->mflags,
                           c->G->mirror_only, 0 };
  int err = run_runs (c->G->a, c->G->L, c->G->ar, &run, 1);

  *failed = run.failed;
  return err;
}

/* Describe the group's writes for the write-hole policy: one unit per
 * segment (level 0/1: one unit for everything, never logged). */
static int
write_units (struct group *G, uint64_t r0, uint64_t n, struct write_batch *cg)
{
  struct write_unit *u;

  *cg = (struct write_batch) { .pieces = G->wr.p, .r0 = r0, .nrows = n };
  if (G->nsegs == 0) {
    if (!(u = arena_alloc (G->ar, sizeof *u)))
      return ENOMEM;
    *u = (struct write_unit) { r0, n, true, 0, G->wr.n };
    cg->units = u;
    cg->nunits = 1;
    return 0;
  }
  if (!(u = arena_alloc (G->ar, G->nsegs * sizeof *u)))
    return ENOMEM;
  for (size_t i = 0; i < G->nsegs; i++) {
    const struct seg *sg = &G->segs[i];
    /* A full segment is logged as an intent only (journal.c: a replay
     * recomputes its row's parity from the data) when a replay can read
     * every block of its row (intent_ok); its blocks are logged instead. */
    bool full = sg->plan == SEG_FULL && intent_ok (G, sg->row);
    u[i] = (struct write_unit) { sg->row, 1, full, sg->wr_first, sg->wr_end };
  }
  cg->units = u;
  cg->nunits = G->nsegs;
  return 0;
}

/* A FUA group with a segment that does not overwrite its whole row
 * computes parity from blocks other writes put there: those must be
 * durable too (consistency.c, cons_fua_sources).  Its row locks are held,
 * so nothing changes them in between. */
static int
flush_fua_sources (struct group *G, unsigned flags)
{
  if (!(flags & RAID_IO_FUA))
    return 0;
  for (size_t i = 0; i < G->nsegs; i++)
    if (G->segs[i].plan != SEG_FULL)
      return cons_fua_sources (G->a, G->L, flags);
  return 0;
}

static int
write_group_once (struct group *G, const struct req *q, uint64_t r0, uint64_t n,
                  uint32_t *failed)
{
  const struct layout *L = G->L;
  uint64_t W = row_width (L);
  struct issue_ctx ic = { G, MIO_WRITE, (q->flags & RAID_IO_FUA) ? MIO_FUA : 0 };
  struct write_batch cg;
  int err;

  group_reset (G);
  *failed = 0;
  if (raid_array_health (G->a) == RAID_HEALTH_FAILED)
    return EIO;
  for (uint64_t row = r0; row < r0 + n; row++) {
    uint64_t rs = row * W;
    uint64_t s = raid_max_u64 (q->off, rs) - rs;
    uint64_t e = raid_min_u64 (q->off + q->count, rs + W) - rs;
    struct touch t[RAID_MAX_MEMBERS];
    int nt = row_touches (L, s, e, q->buf + (rs + s - q->off), t);

    err = L->g.level <= 1 ? plan_write_plain (G, row, t, nt)
                          : row_segments (G, row, t, nt);
    if (err)
      return err;
  }
  for (size_t i = 0; i < G->nsegs; i++)
    if ((err = plan_write_seg (G, &G->segs[i])))
      return err;
  if ((err = run_pieces (G->a, L, G->ar, G->rd.p, G->rd.n, MIO_READ, 0, failed)) ||
      *failed) {
    G->exclude |= *failed;             /* rebuild and rewrite them */
    return err;
  }
  for (size_t i = 0; i < G->nsegs; i++)
    if ((err = compute_write_seg (G, &G->segs[i])))
      return err;
  if ((err = write_units (G, r0, n, &cg)))
    return err;
  if ((err = flush_fua_sources (G, q->flags)))
    return err;
  return cons_write (G->a, L, q->flags, &cg, issue_writes, &ic, failed);
}

static struct stripe_lock_node *
lock_rows (struct group *G, uint64_t r0, uint64_t n)
{
  struct stripe_lock_node *nodes = arena_alloc (G->ar, n * sizeof *nodes);
  if (nodes)
    stripe_lock_range (&G->a->locks, stripe_lock_key (G->L->id, r0), n, nodes);
  return nodes;
}

/* Redo bound: each redo follows one more excluded or faulty role. */
static int
max_attempts (const struct layout *L)
{
  return 2 * L->g.raid_disks + 1;
}

static int
write_group (struct raid_array *a, const struct layout *L, const struct req *q,
             uint64_t r0, uint64_t n)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  uint32_t failed;
  int err = 0;

  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;
  for (int attempt = 0; attempt < max_attempts (L); attempt++) {
    err = write_group_once (&G, q, r0, n, &failed);
    if (err || !failed)
      break;
    err = EIO;
  }
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

int
stripe_write (struct raid_array *a, const struct layout *L,
              const void *buf, uint64_t count, uint64_t off, unsigned flags)
{
  uint64_t W = row_width (L), gr = group_rows (L);
  uint64_t end = off + count;

  while (off < end) {
    uint64_t r0 = off / W;
    uint64_t r1 = raid_min_u64 ((end - 1) / W + 1, r0 + gr);
    uint64_t gend = raid_min_u64 (end, r1 * W);
    struct req q = { (uint8_t *) buf, off, gend - off, flags };
    int err = write_group (a, L, &q, r0, r1 - r0);
    if (err)
      return err;
    buf = (const uint8_t *) buf + (gend - off);
    off = gend;
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Read path.
 */

/* Read columns [from, to) of touch t's block straight into the client's
 * buffer (nothing when empty). */
static int
read_direct (struct group *G, int role, uint64_t row, const struct touch *t,
             uint32_t from, uint32_t to)
{
  return from < to ? piece_add (G->ar, &G->rd, role, moff (G->L, role, row, from),
                                t->src + (from - t->s), to - from) : 0;
}

/* Whether touches t[0..nt) cover the whole row. */
static bool
whole_row (const struct layout *L, const struct touch *t, int nt)
{
  return nt == (int) L->g.data_disks && t[0].s == 0 && t[nt - 1].e == L->g.chunk;
}

/* Whether a data block of the row is in `bad` (its read is a rebuild). */
static bool
rebuilds_data (const struct layout *L, const struct raid_row *rr, uint32_t bad)
{
  for (int di = 0; di < (int) L->g.data_disks; di++)
    if (bad & (1u << rr->data[di]))
      return true;
  return false;
}

/* The request's bytes of `row` (touches t[0..nt), contiguous in the
 * client's buffer) from the row cache: true when it held the row. */
static bool
take_cached (struct group *G, uint64_t row, const struct touch *t, int nt)
{
  uint64_t chunk = G->L->g.chunk;

  return t[0].src &&
    rowcache_take (&G->a->rowcache, G->L, row, t[0].di * chunk + t[0].s,
                   t[nt - 1].di * chunk + t[nt - 1].e, t[0].src);
}

/* Plan the reads of one row: direct reads for good blocks, a reconstruction
 * segment over the union of columns of bad ones.  Every block of the row is
 * read once: the columns of a good block that the reconstruction reads
 * anyway are taken from that read (into the client's buffer when the block
 * covers them wholly, else copied out), only the rest is read directly. */
static int
plan_read_row (struct group *G, uint64_t row, const struct touch *t, int nt,
               bool *need_lock)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  struct seg *sg = NULL;
  uint32_t bad = bad_at (G, row);
  int err;

  if (L->g.level == 1) {
    int role = mirror_source (G, row);
    return role < 0 ? EIO : piece_add (G->ar, &G->rd, role, moff (L, role, row, t[0].s),
                                       t[0].src, t[0].e - t[0].s);
  }

  raid_geom_row (&L->g, row, rr);
  if (G->stream && rowcache_fits (L) && !whole_row (L, t, nt) && rebuilds_data (L, rr, bad)) {
    /* Part of a row that needs a rebuild, in a stream (rowcache.h): its
     * bytes from the cache, or the whole row read and rebuilt, and kept. */
    if (take_cached (G, row, t, nt))
      return 0;
    if (!(sg = seg_new (G)))
      return ENOMEM;
    *sg = (struct seg) { .row = row, .c0 = 0, .c1 = L->g.chunk, .fill = true };
  }
  for (int i = 0; i < nt; i++) {           /* the blocks to rebuild */
    if (!(bad & (1u << rr->data[t[i].di])))
      continue;
    if (L->g.level == 0)
      return EIO;
    if (!sg) {
      if (!(sg = seg_new (G)))
        return ENOMEM;
      sg->row = row;
      sg->c0 = UINT32_MAX;
    }
    sg->t[sg->ntouch++] = t[i];
    sg->c0 = raid_min_u64 (sg->c0, raid_round_down (t[i].s, COL_ALIGN));
    sg->c1 = raid_max_u64 (sg->c1, raid_round_up (t[i].e, COL_ALIGN));
  }
  for (int i = 0; i < nt; i++) {           /* the blocks read as they are */
    int role = rr->data[t[i].di];
    uint32_t s = t[i].s, e = t[i].e, o0 = e, o1 = e;   /* [o0, o1): taken from */
    if (bad & (1u << role))                           /* the rebuild's read */
      continue;
    if (sg && raid_max_u64 (s, sg->c0) < raid_min_u64 (e, sg->c1)) {
      o0 = raid_max_u64 (s, sg->c0);
      o1 = raid_min_u64 (e, sg->c1);
      sg->t[sg->ntouch++] = (struct touch) { t[i].di, o0, o1, t[i].src + (o0 - s) };
    }
    if ((err = read_direct (G, role, row, &t[i], s, o0)) ||
        (err = read_direct (G, role, row, &t[i], o1, e)))
      return err;
  }
  if (sg) {
    *need_lock = true;
    sg->plan = SEG_RECON;
    sg->read_in_place = true;
    return plan_recon_reads (G, sg, rr);
  }
  return 0;
}

/* Rebuild the unreadable blocks of a reconstruction segment, copy the
 * requested bytes out, and queue rewrites of the roles being repaired. */
static int
finish_read_seg (struct group *G, struct seg *sg)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  uint32_t len = sg->c1 - sg->c0;
  int err;

  raid_geom_row (&L->g, sg->row, rr);
  if ((err = recover_seg (G, sg, true)))
    return err;
  if (sg->fill) {                          /* the whole row: keep it */
    uint8_t *blk[RAID_MAX_MEMBERS];
    assert (sg->c0 == 0 && sg->c1 == L->g.chunk);
    for (int di = 0; di < (int) L->g.data_disks; di++)
      blk[di] = sg->blk[slot_of (L, rr, di)];
    rowcache_put (&G->a->rowcache, L, sg->row, G->fill_epoch, blk);
  }
  for (int i = 0; i < sg->ntouch; i++) {
    const struct touch *t = &sg->t[i];
    const uint8_t *from = sg->blk[slot_of (L, rr, t->di)] + (t->s - sg->c0);
    if (t->src && t->src != from)          /* not read in place */
      memcpy (t->src, from, t->e - t->s);
  }
  for (int r = 0; r < L->g.raid_disks; r++) {
    int idx = role_index (L, rr, r);
    if ((G->repair & (1u << r)) && idx >= 0 && !(G->unusable & (1u << r)) &&
        (err = piece_add (G->ar, &G->wr, r, moff (L, r, sg->row, sg->c0),
                          sg->blk[idx], len)))
      return err;
  }
  return 0;
}

/* Finish every segment of a group whose reads are in. */
static int
finish_segs (struct group *G)
{
  int err = 0;

  for (size_t i = 0; i < G->nsegs && !err; i++)
    err = finish_read_seg (G, &G->segs[i]);
  return err;
}

/* The planned reads; then the reconstruction segments (rebuild what
 * cannot be read, copy it out) and the repair writes.  A read that failed
 * excludes its role for the redo. */
static int
read_rebuild_write (struct group *G, uint32_t *failed)
{
  struct piece_run run = { .pp = G->rd.p, .n = G->rd.n, .op = MIO_READ,
                           .quiet_roles = G->counted };
  int err;

  /* A fill reads blocks the request does not need: a read error there
   * must neither fail it (beyond redundancy, excluding that role could)
   * nor count against its member (nothing would read, or repair, that
   * block without the fill).  So a fill's reads are quiet, and any error
   * has the group done again without fills, which reads (and reports,
   * excludes and repairs) only what the request needs. */
  for (size_t i = 0; i < G->nsegs; i++)
    run.quiet |= G->segs[i].fill;
  err = run_runs (G->a, G->L, G->ar, &run, 1);
  *failed = run.failed;
  if (err || *failed) {
    if (run.quiet && !err)
      G->no_fill = true;
    else
      G->exclude |= *failed;
    return err;
  }
  if ((err = finish_segs (G)))
    return err;
  return run_pieces (G->a, G->L, G->ar, G->wr.p, G->wr.n, MIO_WRITE, 0, failed);
}

static int
read_group_once (struct group *G, uint8_t *buf, uint64_t off, uint64_t count,
                 uint64_t r0, uint64_t n, bool locked, bool stream, uint32_t *failed)
{
  const struct layout *L = G->L;
  uint64_t W = row_width (L);
  bool need_lock = false;
  int err;

  group_reset (G);
  G->repair = G->a->readonly ? 0 : G->exclude & ~G->unusable & ~G->rb_mask;
  G->stream = stream && !G->no_fill;
  G->fill_epoch = rowcache_epoch (&G->a->rowcache);
  *failed = 0;
  if (raid_array_health (G->a) == RAID_HEALTH_FAILED)
    return EIO;
  for (uint64_t row = r0; row < r0 + n; row++) {
    uint64_t rs = row * W;
    uint64_t s = raid_max_u64 (off, rs) - rs;
    uint64_t e = raid_min_u64 (off + count, rs + W) - rs;
    struct touch t[RAID_MAX_MEMBERS];
    int nt = row_touches (L, s, e, buf + (rs + s - off), t);
    if (L->g.level == 1)
      nt = 1, t[0] = (struct touch) { 0, (uint32_t) s, (uint32_t) e, buf + (rs + s - off) };
    if ((err = plan_read_row (G, row, t, nt, &need_lock)))
      return err;
  }
  if (need_lock && !locked)
    return EAGAIN;                   /* caller retries holding the rows */
  return read_rebuild_write (G, failed);
}

static int
read_group (struct raid_array *a, const struct layout *L, uint8_t *buf,
            uint64_t off, uint64_t count, uint64_t r0, uint64_t n, bool stream)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes = NULL;
  uint32_t failed = 0;
  int err = EIO;

  if (!(G.ar = arena_reset ()))
    return ENOMEM;
  /* + 1: the lock; + 1: a fill's read error (no_fill) */
  for (int attempt = 0; attempt < max_attempts (L) + 2; attempt++) {
    err = read_group_once (&G, buf, off, count, r0, n, nodes != NULL, stream, &failed);
    if (err == EAGAIN && !nodes) {
      if (!(nodes = lock_rows (&G, r0, n)))
        return ENOMEM;
      continue;
    }
    if (err || !failed)
      break;
    /* Read errors: rebuild from the others and rewrite, under the lock.  A
     * failed rewrite made the member faulty. */
    err = EIO;
    if (!nodes && !(nodes = lock_rows (&G, r0, n)))
      return ENOMEM;
  }
  if (nodes)
    stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

int
stripe_read (struct raid_array *a, const struct layout *L,
             void *buf, uint64_t count, uint64_t off)
{
  uint64_t W = row_width (L), gr = group_rows (L);
  uint64_t end = off + count;
  /* At least a row, and where a recent one ended: a stream (rowcache.h) */
  bool stream = count >= W && rowcache_stream (&a->rowcache, off, end);

  while (off < end) {
    uint64_t r0 = off / W;
    uint64_t r1 = raid_min_u64 ((end - 1) / W + 1, r0 + gr);
    uint64_t gend = raid_min_u64 (end, r1 * W);
    int err = read_group (a, L, buf, off, gend - off, r0, r1 - r0, stream);
    if (err)
      return err;
    buf = (uint8_t *) buf + (gend - off);
    off = gend;
  }
  return 0;
}

/* A read-only, page-aligned region of zeroes as large as the largest chunk:
 * untouched anonymous memory maps the zero page, so it costs no RAM. */
static const uint8_t *zero_region;
static pthread_once_t zero_once = PTHREAD_ONCE_INIT;
#define ZERO_REGION_LEN ((size_t) RAID_CHUNK_MAX)

static void
zero_region_init (void)
{
  void *p = mmap (NULL, ZERO_REGION_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  zero_region = p == MAP_FAILED ? NULL : p;
}

static int
write_zeroes (struct raid_array *a, const struct layout *L, uint64_t count,
              uint64_t off, unsigned flags)
{
  pthread_once (&zero_once, zero_region_init);
  if (!zero_region)
    return ENOMEM;
  while (count) {
    uint64_t n = raid_min_u64 (count, ZERO_REGION_LEN);
    int err = stripe_write (a, L, zero_region, n, off, flags);
    if (err)
      return err;
    off += n;
    count -= n;
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Zero: whole rows are zeroed on every writable member (the parity of
 * zeroes is zero, for P and Q), through run_pieces (so the replace mirror
 * gets them) and the write-hole policy (one intent unit); partial rows are
 * written with zeroes.
 */
static int
zero_rows_once (struct group *G, uint64_t r0, uint64_t n, unsigned flags,
                uint32_t *failed)
{
  const struct layout *L = G->L;
  struct issue_ctx ic = { G, MIO_ZERO, (flags & RAID_IO_FUA) ? MIO_FUA : 0 };
  struct write_unit u;
  struct write_batch cg;
  int err;

  group_reset (G);
  *failed = 0;
  if (raid_array_health (G->a) == RAID_HEALTH_FAILED)
    return EIO;
  for (uint64_t row = r0; row < r0 + n && L->g.level >= 4; row++)
    if (!intent_ok (G, row))
      return ECANCELED;                    /* zero_rows writes zeroes instead */
  /* Rebuilding roles are zeroed too: zero is valid in every row. */
  for (int r = 0; r < L->g.raid_disks; r++)
    if (!(dead_at (G, r0) & (1u << r)) &&
        (err = piece_add (G->ar, &G->wr, r, moff (L, r, r0, 0), NULL, n * L->g.chunk)))
      return err;
  u = (struct write_unit) { r0, n, true, 0, G->wr.n };
  cg = (struct write_batch) { G->wr.p, &u, 1, r0, n };
  return cons_write (G->a, L, flags, &cg, issue_writes, &ic, failed);
}

static int
zero_rows (struct raid_array *a, const struct layout *L, uint64_t r0, uint64_t n,
           unsigned flags)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  uint32_t failed;
  int err = 0;

  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;
  for (int attempt = 0; attempt < max_attempts (L); attempt++) {
    err = zero_rows_once (&G, r0, n, flags, &failed);
    if (err || !failed)
      break;
    err = EIO;
  }
  stripe_unlock_range (&a->locks, n, nodes);
  if (err == ECANCELED)
    /* A row without a block on some member: one intent cannot make a torn
     * row whole (write_units), so its zeroes are written, and logged. */
    err = write_zeroes (a, L, n * row_width (L), r0 * row_width (L), flags);
  return err;
}

int
stripe_zero (struct raid_array *a, const struct layout *L,
             uint64_t count, uint64_t off, unsigned flags)
{
  uint64_t W = row_width (L), end = off + count;
  uint64_t r0 = raid_round_up (off, W) / W, r1 = end / W;
  int err;

  if (r1 <= r0)
    return write_zeroes (a, L, count, off, flags);
  if (off < r0 * W && (err = write_zeroes (a, L, r0 * W - off, off, flags)))
    return err;
  for (uint64_t r = r0; r < r1; r += group_rows (L) * 8) {
    uint64_t n = raid_min_u64 (r1 - r, group_rows (L) * 8);
    if ((err = zero_rows (a, L, r, n, flags)))
      return err;
  }
  if (end > r1 * W)
    return write_zeroes (a, L, end - r1 * W, r1 * W, flags);
  return 0;
}

int
stripe_zero_to_row_end (struct raid_array *a, const struct layout *L,
                        uint64_t from, uint64_t to)
{
  uint64_t end = raid_round_up (to, row_width (L));

  return end > from ? stripe_zero (a, L, end - from, from, 0) : 0;
}

/* ---------------------------------------------------------------------
 * Background row operations (driven by the sync worker).
 */

/* Level 1: copy the rows from their source mirror to the targets. */
static int
plan_mirror_rebuild (struct group *G, uint64_t r0, uint64_t n, uint32_t targets)
{
  const struct layout *L = G->L;
  uint32_t len = L->g.chunk;
  int err = 0;

  for (uint64_t row = r0; row < r0 + n && !err; row++) {
    struct seg sg = { .row = row, .c0 = 0, .c1 = len };
    int src = mirror_source (G, row);
    uint8_t *b;
    if (src < 0)
      return EIO;
    if (!(b = read_block (G, &sg, src)))
      return ENOMEM;
    for (int r = 0; r < L->g.raid_disks && !err; r++)
      if ((targets & (1u << r)) && !(G->unusable & (1u << r)))
        err = piece_add (G->ar, &G->wr, r, moff (L, r, row, 0), b, len);
  }
  return err;
}

/* Plan rebuilding `targets` (and repairing roles whose reads failed) in
 * rows [r0, r0+n), rows locked: the reads, and for level 1 the writes (the
 * other levels' writes are queued by finish_read_seg once the reads are
 * in).  0, EIO (nothing to rebuild from, or onto) or ENOMEM. */
static int
rebuild_plan (struct group *G, uint64_t r0, uint64_t n, uint32_t targets)
{
  const struct layout *L = G->L;
  int err = 0;

  group_reset (G);
  G->repair = targets | (G->exclude & ~G->unusable);
  if (raid_array_health (G->a) == RAID_HEALTH_FAILED || (targets & G->unusable))
    return EIO;
  if (L->g.level == 1)
    return plan_mirror_rebuild (G, r0, n, targets);
  for (uint64_t row = r0; row < r0 + n && !err; row++) {
    struct seg *sg = seg_new (G);
    if (!sg)
      return ENOMEM;
    sg->row = row; sg->c0 = 0; sg->c1 = L->g.chunk; sg->plan = SEG_RECON;
    raid_geom_row (&L->g, row, &G->rr);
    err = plan_recon_reads (G, sg, &G->rr);
  }
  return err;
}

/* One attempt at rebuilding rows [r0, r0+n), rows locked. */
static int
rebuild_once (struct group *G, uint64_t r0, uint64_t n, uint32_t targets,
              uint32_t *failed)
{
  int err = rebuild_plan (G, r0, n, targets);

  *failed = 0;
  return err ? err : read_rebuild_write (G, failed);
}

static int
rebuild_locked (struct group *G, uint64_t r0, uint64_t n, uint32_t targets)
{
  uint32_t failed;
  int err = EIO;

  if (G->L->g.level == 0)
    return EINVAL;
  for (int attempt = 0; attempt < max_attempts (G->L); attempt++) {
    err = rebuild_once (G, r0, n, targets, &failed);
    if (err || !failed)
      break;
    err = EIO;
  }
  return err;
}

/* Rows [r0, r0+n) (locked) that the pipeline left at a failure.  A failed
 * read excluded its role in all of them, and a raid5 (a raid6 with a
 * second one) cannot rebuild its target without that role: one bad or
 * transient read would fail the whole batch.  So after a failed read the
 * rows are redone one by one, each reading every role again: only a row
 * whose own read fails again is rebuilt without it (or cannot be); its
 * failures then are not counted again (G->counted). */
static int
rebuild_rest (struct group *G, uint64_t r0, uint64_t n, uint32_t targets)
{
  int err = 0;

  if (!G->exclude)
    return rebuild_locked (G, r0, n, targets);
  G->counted |= G->exclude;                /* counted once per batch */
  for (uint64_t r = r0; r < r0 + n && !err; r++) {
    G->exclude = 0;
    err = rebuild_locked (G, r, 1, targets);
  }
  return err;
}

/* Rebuild rows [r0, r0+n) (locked) as a pipeline of REBUILD_STAGES
 * sub-batches: one parallel run carries the reads of sub-batch i and the
 * writes of sub-batch i-1, so a rebuild moves at the slower of the
 * survivors' read rate and the target's write rate rather than at the two
 * one after the other.  Two groups alternate; they share the batch's
 * arena, so no buffer is reused while a run may still use it.
 *
 * Returns the row below which every write landed.  It stops at the first
 * failure of any kind (a read or write error, ENOMEM, a state change that
 * leaves nothing to rebuild from) and leaves the rows from there to
 * rebuild_locked, which redoes them with a single group's failure
 * handling: the rows stay locked, and a row rebuilt twice gets the same
 * bytes.  Roles whose read failed are added to *exclude, so the redo does
 * not read (and count) them again. */
#define REBUILD_STAGES 8

static uint64_t
rebuild_pipelined (struct group G[2], uint64_t r0, uint64_t n, uint32_t targets,
                   uint32_t *exclude)
{
  uint64_t step = (n + REBUILD_STAGES - 1) / REBUILD_STAGES;
  uint64_t row = r0, done = r0, prev_end = r0;
  struct group *prev = NULL;

  for (int i = 0; ; i++) {
    struct group *cur = row < r0 + n ? &G[i % 2] : NULL;
    uint64_t m = cur ? raid_min_u64 (step, r0 + n - row) : 0;
    struct piece_run runs[2];
    int nr = 0, ri = -1, wi = -1;

    if (cur && rebuild_plan (cur, row, m, targets))
      break;
    if (cur)
      runs[ri = nr++] = (struct piece_run) { cur->rd.p, cur->rd.n, MIO_READ, 0, 0 };
    if (prev)
      runs[wi = nr++] = (struct piece_run) { prev->wr.p, prev->wr.n, MIO_WRITE, 0, 0 };
    if (nr == 0 || run_runs (G[0].a, G[0].L, G[0].ar, runs, nr))
      break;
    if (ri >= 0)
      *exclude |= runs[ri].failed;
    if (wi >= 0 && runs[wi].failed)
      break;                               /* the target failed a write */
    if (wi >= 0)
      done = prev_end;
    if (!cur || *exclude || finish_segs (cur))
      break;                               /* the end, a read failed, or ENOMEM */
    prev = cur;
    prev_end = row += m;
  }
  return done;
}

int
stripe_rebuild_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                     uint64_t n, int role, _Atomic uint64_t *cursor)
{
  struct group G[2] = { { .a = a, .L = L }, { .a = a, .L = L } };
  struct stripe_lock_node *nodes;
  uint64_t done = r0;
  int err = 0;

  if (!(G[0].ar = G[1].ar = arena_reset ()) || !(nodes = lock_rows (&G[0], r0, n)))
    return ENOMEM;
  if (L->g.level != 0)
    done = rebuild_pipelined (G, r0, n, 1u << role, &G[0].exclude);
  if (done < r0 + n)
    err = rebuild_rest (&G[0], done, r0 + n - done, 1u << role);
  if (!err)
    atomic_store (cursor, r0 + n);
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

int
stripe_parity_to (struct raid_array *a, const struct layout *L, uint64_t row, int role,
                  struct member *dst)
{
  int k = L->g.data_disks, err = 0;
  size_t len = L->g.chunk;
  void *blk[RAID_MAX_MEMBERS + 2] = { NULL };
  struct stripe_lock_node node;
  struct raid_row rr;

  raid_geom_row (&L->g, row, &rr);
  if (role != rr.pd && role != rr.qd)
    return EINVAL;
  for (int i = 0; i < k + 2 && !err; i++)
    err = (blk[i] = raid_alloc_aligned (len)) ? 0 : ENOMEM;
  stripe_lock_range (&a->locks, stripe_lock_key (L->id, row), 1, &node);
  for (int i = 0; i < k && !err; i++) {   /* in Q order (slot_of) */
    int s = L->slot[rr.data[i]];
    if (s < 0 || !a->mem[s].m || atomic_load (&a->mem[s].state) != RAID_MEMBER_IN_SYNC)
      err = EAGAIN;                        /* its data is not all on members */
    else
      err = member_pread (a->mem[s].m, blk[slot_of (L, &rr, i)], len,
                          moff (L, rr.data[i], row, 0));
  }
  if (!err && parity_gen (k, len, blk, blk[k], L->g.parity_disks == 2 ? blk[k + 1] : NULL) < 0)
    err = EIO;
  if (!err)
    err = member_pwrite (dst, role == rr.pd ? blk[k] : blk[k + 1], len, moff (L, role, row, 0),
                         false);
  stripe_unlock_range (&a->locks, 1, &node);
  for (int i = 0; i < k + 2; i++)
    free (blk[i]);
  return err;
}

/* Check the columns of a fully read row; with repair, queue parity fixes.
 * *found counts the wrong columns. */
static int
check_seg (struct group *G, struct seg *sg, bool repair, uint64_t *found)
{
  const struct layout *L = G->L;
  int k = L->g.data_disks, np = nparity (L), err = 0;

  raid_geom_row (&L->g, sg->row, &G->rr);
  for (uint32_t c = 0; c < L->g.chunk && !err; c += COL_ALIGN) {
    void *col[RAID_MAX_MEMBERS + 2];
    int ok;
    for (int j = 0; j < k + np; j++)
      col[j] = sg->blk[j] + c;
    if ((ok = parity_check (k, np, COL_ALIGN, col)) < 0)
      return EIO;
    if (ok != 0)
      continue;
    (*found)++;
    if (!repair)
      continue;
    if (parity_gen (k, COL_ALIGN, col, col[k], np == 2 ? col[k + 1] : NULL) < 0)
      return EIO;
    for (int p = 0; p < np && !err; p++) {
      int role = p == 0 ? G->rr.pd : G->rr.qd;
      err = piece_add (G->ar, &G->wr, role, moff (L, role, sg->row, c),
                       (uint8_t *) col[k + p], COL_ALIGN);
    }
  }
  return err;
}

/* Parity levels: read rows [r0, r0+n) whole for a check; rows with an
 * unusable role are skipped, rows with a role whose read failed are
 * planned as a rebuild (their parity cannot be judged). */
static int
plan_check_reads (struct group *G, uint64_t r0, uint64_t n)
{
  const struct layout *L = G->L;
  int err = 0;

  for (uint64_t row = r0; row < r0 + n && !err; row++) {
    struct seg *sg;
    if (dead_at (G, row) & ((1ull << L->g.raid_disks) - 1))
      continue;
    if (!(sg = seg_new (G)))
      return ENOMEM;
    sg->row = row; sg->c0 = 0; sg->c1 = L->g.chunk;
    sg->plan = row_has_bad (G, row) ? SEG_RECON : SEG_FULL;
    raid_geom_row (&L->g, row, &G->rr);
    err = plan_recon_reads (G, sg, &G->rr);
  }
  return err;
}

/* Level 1: read every readable mirror of rows [r0, r0+n), whole chunks;
 * a segment's blocks are indexed by role. */
static int
plan_mirror_reads (struct group *G, uint64_t r0, uint64_t n)
{
  const struct layout *L = G->L;

  for (uint64_t row = r0; row < r0 + n; row++) {
    struct seg *sg = seg_new (G);
    if (!sg)
      return ENOMEM;
    sg->row = row; sg->c0 = 0; sg->c1 = L->g.chunk;
    for (int r = 0; r < L->g.raid_disks; r++)
      if (!(bad_at (G, row) & (1u << r)) && !(sg->blk[r] = read_block (G, sg, r)))
        return ENOMEM;
  }
  return 0;
}

/* Level 1: compare each mirror of a read row with its source mirror
 * (mirror_source), column by column; *found counts the columns where one
 * differs.  With repair, queue the source's bytes over each differing
 * column; a role whose read failed (G->repair) gets the source's whole
 * chunk either way, as every path repairs a read error. */
static int
check_mirror_seg (struct group *G, struct seg *sg, bool repair, uint64_t *found)
{
  const struct layout *L = G->L;
  int src = mirror_source (G, sg->row), err = 0;

  if (src < 0)
    return EIO;
  for (int r = 0; r < L->g.raid_disks && !err; r++)
    if ((G->repair & (1u << r)) && !(G->unusable & (1u << r)))
      err = piece_add (G->ar, &G->wr, r, moff (L, r, sg->row, 0), sg->blk[src], L->g.chunk);
  for (uint32_t c = 0; c < L->g.chunk && !err; c += COL_ALIGN) {
    bool differs = false;
    for (int r = 0; r < L->g.raid_disks && !err; r++) {
      if (r == src || !sg->blk[r] ||
          memcmp (sg->blk[r] + c, sg->blk[src] + c, COL_ALIGN) == 0)
        continue;
      differs = true;
      if (repair)
        err = piece_add (G->ar, &G->wr, r, moff (L, r, sg->row, c), sg->blk[src] + c,
                         COL_ALIGN);
    }
    *found += differs;
  }
  return err;
}

/* One attempt at checking rows [r0, r0+n): parity (check_seg) or mirrors
 * (check_mirror_seg); blocks whose read failed are rebuilt and rewritten. */
static int
check_once (struct group *G, uint64_t r0, uint64_t n, bool repair, uint64_t *found,
            uint32_t *failed)
{
  const struct layout *L = G->L;
  struct piece_run run;
  int err = 0;

  group_reset (G);
  G->repair = G->exclude & ~G->unusable;
  *found = 0;
  *failed = 0;
  err = L->g.level == 1 ? plan_mirror_reads (G, r0, n) : plan_check_reads (G, r0, n);
  if (err)
    return err;
  run = (struct piece_run) { .pp = G->rd.p, .n = G->rd.n, .op = MIO_READ,
                             .quiet_roles = G->counted };
  err = run_runs (G->a, L, G->ar, &run, 1);
  if ((*failed = run.failed) != 0 || err) {
    G->exclude |= *failed;
    return err;
  }
  for (size_t i = 0; i < G->nsegs && !err; i++)
    err = L->g.level == 1 ? check_mirror_seg (G, &G->segs[i], repair, found)
      : G->segs[i].plan == SEG_RECON ? finish_read_seg (G, &G->segs[i])
      : check_seg (G, &G->segs[i], repair, found);
  if (err)
    return err;
  return run_pieces (G->a, L, G->ar, G->wr.p, G->wr.n, MIO_WRITE, 0, failed);
}

/* Check rows [r0, r0+n), locked, redoing attempts until no member fails.
 * A failed read excludes its role in every row of the attempt: each such
 * row would then be rebuilt from parity (raid1: take another mirror's
 * bytes) and written back, though only some of the role's reads failed —
 * and a row whose parity is torn (what a resync repairs) would lose the
 * role's readable bytes to it.  So after a failed read the rows are
 * redone one by one, each reading every role again: only the rows whose
 * own read fails are rebuilt, as a client read of them would be.  The
 * role's error was counted once; its failures in those rows are not
 * counted again (G->counted): one bad region counts once per batch. */
static int
check_locked (struct group *G, uint64_t r0, uint64_t n, bool repair, uint64_t *found)
{
  uint32_t failed, excl = G->exclude;
  int err = EIO;

  for (int attempt = 0; attempt < max_attempts (G->L); attempt++) {
    err = check_once (G, r0, n, repair, found, &failed);
    if (err || !failed)
      return err;
    if (n > 1 && G->exclude != excl) {     /* a read failed: row by row */
      uint64_t one;
      *found = 0;
      G->counted |= G->exclude & ~excl;    /* counted once per batch */
      for (uint64_t r = r0; r < r0 + n && !err; r++) {
        G->exclude = excl;
        err = check_locked (G, r, 1, repair, &one);
        *found += one;
      }
      return err;
    }
    err = EIO;
  }
  return err;
}

int
stripe_check_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                   uint64_t n, bool repair, uint64_t *mismatches)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  uint64_t found = 0;
  int err;

  if (L->g.level == 0)
    return 0;
  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;
  err = check_locked (&G, r0, n, repair, &found);
  if (!err)
    *mismatches += found;
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

/* The rows from r0 of a replace copy (p: the source role's bytes of
 * them, locked) whose read failed: each row is read again on its own and
 * copied, and only a row whose read fails again is rebuilt from the
 * others and written back to the source, which the mirror copies to dst.
 * Excluding the source in the whole batch would rebuild every row of it,
 * so an array that cannot rebuild that role (another member lost
 * meanwhile) would fail the copy for one bad block or one transient
 * error.  The error counts once per batch (G->counted). */
static int
copy_rest (struct group *G, const struct piece *p, uint64_t r0, struct member *dst)
{
  uint64_t chunk = G->L->g.chunk;
  int err = 0;

  G->counted |= 1u << p->role;
  for (uint64_t i = 0; i < p->len / chunk && !err; i++) {
    struct piece q = { p->role, p->off + i * chunk, (uint8_t *) p->ptr + i * chunk, chunk };
    struct piece_run run = { .pp = &q, .n = 1, .op = MIO_READ, .quiet_roles = G->counted };

    if ((err = run_runs (G->a, G->L, G->ar, &run, 1)) != 0)
      break;
    if (run.failed) {
      G->exclude = 1u << p->role;
      err = rebuild_locked (G, r0 + i, 1, 1u << p->role);
    }
    else if ((err = member_pwrite (dst, q.ptr, chunk, q.off, false)) != 0)
      state_member_error (G->a, dst, err, true, q.off);
  }
  return err;
}

int
stripe_copy_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                  uint64_t n, int role, struct member *dst, _Atomic uint64_t *cursor)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  struct piece p = { role, moff (L, role, r0, 0), NULL, n * L->g.chunk };
  uint32_t failed;
  int err;

  if (!(G.ar = arena_reset ()) || !(p.ptr = arena_alloc (G.ar, p.len)) ||
      !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;                         /* nothing is locked */
  snapshot (&G);
  if (G.unusable & (1u << role))
    err = EIO;                             /* the source failed meanwhile */
  else if ((err = run_pieces (a, L, G.ar, &p, 1, MIO_READ, 0, &failed)) == 0 && failed)
    err = copy_rest (&G, &p, r0, dst);
  else if (err == 0 && (err = member_pwrite (dst, p.ptr, p.len, p.off, false)) != 0)
    state_member_error (a, dst, err, true, p.off);
  if (!err)
    atomic_store (cursor, r0 + n);
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

/* ---------------------------------------------------------------------
 * Block status.
 */
uint64_t
stripe_extent_rows (struct raid_array *a, const struct layout *L, uint64_t row,
                    uint64_t max, bool *zero)
{
  uint64_t chunk = L->g.chunk, hole_rows = max, data_rows = 0;
  uint32_t bad = state_bad_roles (a, L, NULL, NULL);

  *zero = true;
  for (int r = 0; r < L->g.raid_disks; r++) {
    struct member *m = state_role_member (a, L, r);
    uint64_t run;
    bool hole;
    if (!m || (bad & (1u << r)))
      continue;
    if (member_extent (m, L->data_offset[r] + row * chunk, max * chunk, &hole, &run) != 0)
      hole = false, run = chunk;
    if (hole && run >= chunk)
      hole_rows = raid_min_u64 (hole_rows, run / chunk);
    else {                            /* data, or a hole ending inside the row */
      *zero = false;
      data_rows = raid_max_u64 (data_rows, raid_round_up (run, chunk) / chunk);
    }
  }
  return raid_max_u64 (1, *zero ? hole_rows : data_rows);
}
