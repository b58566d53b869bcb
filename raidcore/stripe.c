/* nbdkit-raid: the stripe engine — array reads and writes on one layout.
 *
 * THEORY
 *
 * A request is cut into groups of whole stripe rows (at most GROUP_BYTES of
 * data each).  Every group runs one fixed, explicit sequence; nothing is
 * steered by flags set elsewhere:
 *
 *   1. plan    From a snapshot of the bad roles (faulty, missing, stale),
 *              describe every row segment: which blocks the request touches,
 *              and how parity is produced (enum seg_plan).
 *   2. lock    Writes, and reads that must reconstruct, lock the group's rows
 *              in ascending order (stripe-lock.h).  Plain reads of healthy
 *              blocks take no lock: a read racing a write to the same bytes
 *              may see either, as NBD allows.
 *   3. read    One batch of member reads, issued in parallel (mio_run).
 *   4. compute Patch new data into old blocks, make parity (read-modify-write
 *              delta, reconstruct-write, or full reconstruction).
 *   5. write   One batch of member writes, in parallel.
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
 *   SEG_RECON a role of the row is bad: read every good block, rebuild the
 *             missing ones from parity, patch, recompute all parity, write
 *             the good touched blocks and good parity.
 * Level 0 writes and reads data directly; level 1 writes every mirror and
 * reads one.
 *
 * Columns: parity is computed over column ranges aligned to COL_ALIGN
 * (4 KiB, which divides every chunk size), so isa-l's length rules hold for
 * any request; unaligned request edges become reads of the enclosing
 * aligned range of that block (which RMW/RCW need anyway).
 *
 * Failures: if any member I/O of a group fails, the member is reported to the
 * array (array_member_io_error) and the group is done again from step 1 with
 * a fresh snapshot.  In the write path every failure makes the member faulty,
 * so each redo has one more bad role and there are at most raid_disks redos.
 * A redo after a partial write is safe because every write plan writes a
 * complete new state of the columns it covers (data and parity consistent
 * with each other): whichever of the previous attempt's writes landed, the
 * good members and parity decode to the new data for the written blocks
 * and the old data elsewhere, and the redo, still under the same row locks,
 * reads that and writes it again.
 * In the read path a read error is counted; while the member stays below the
 * error limit the redo reconstructs the block from the other members, and
 * rewrites it onto the failing member under the row lock (a failed rewrite
 * makes it faulty).
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
#include "bitmap.h"
#include "journal.h"
#include "parity.h"
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

/* ---------------------------------------------------------------------
 * Member I/O pieces, coalesced per member into one vectored op.
 */
struct piece {
  int role;
  uint64_t off;                      /* absolute member offset */
  void *ptr;
  size_t len;
};

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

/* Issue every piece (all of one op) in parallel, one mio per run of
 * contiguous pieces of a role.  Returns 0 or ENOMEM; *failed gets the bit
 * mask of roles whose I/O failed, each failure already reported to the
 * array (fatal: the member is made faulty, whatever the op). */
static int
run_pieces (struct raid_array *a, const struct layout *L, struct arena *ar,
            const struct piece_list *pl, enum mio_op op, unsigned mflags,
            bool fatal, uint32_t *failed)
{
  int nroles = L->g.raid_disks;
  struct mio *mios;
  struct iovec *iov;
  size_t nmio = 0, niov = 0;

  int repl = L->id == 0 && op == MIO_WRITE ? atomic_load (&a->repl_role) : -1;

  *failed = 0;
  if (pl->n == 0)
    return 0;
  mios = arena_alloc (ar, 2 * pl->n * sizeof *mios);
  iov = arena_alloc (ar, pl->n * sizeof *iov);
  if (!mios || !iov)
    return ENOMEM;

  /* Pieces of one role were added in ascending offset order; gather by
   * role (stable), merging contiguous ones. */
  for (int r = 0; r < nroles; r++) {
    struct mio *cur = NULL;
    for (size_t i = 0; i < pl->n; i++) {
      const struct piece *p = &pl->p[i];
      if (p->role != r)
        continue;
      if (cur && cur->off + cur->len == p->off && cur->iovcnt < MAX_IOV) {
        struct iovec *last = &cur->iov[cur->iovcnt - 1];
        if ((uint8_t *) last->iov_base + last->iov_len == (uint8_t *) p->ptr)
          last->iov_len += p->len;
        else {
          iov[niov++] = (struct iovec) { p->ptr, p->len };
          cur->iovcnt++;
        }
        cur->len += p->len;
        continue;
      }
      cur = &mios[nmio++];
      *cur = (struct mio) {
        .m = layout_member (a, L, r), .op = op, .flags = mflags,
        .off = p->off, .len = p->len, .iov = &iov[niov], .iovcnt = 1,
      };
      iov[niov++] = (struct iovec) { p->ptr, p->len };
      assert (cur->m != NULL);
    }
  }

  if (repl >= 0) {
    /* A replace is running: its target gets every write of the role
     * (also above the copy cursor: the copy will rewrite the same bytes). */
    struct member *dst = a->mem[a->repl_slot].m;
    size_t n0 = nmio;
    for (size_t i = 0; i < n0; i++)
      if (mios[i].m == layout_member (a, L, repl)) {
        mios[nmio] = mios[i];
        mios[nmio++].m = dst;
      }
  }
  if (mio_run (mios, nmio) == 0)
    return 0;
  for (size_t i = 0; i < nmio; i++) {
    if (mios[i].err == 0)
      continue;
    if (repl >= 0 && mios[i].m == a->mem[a->repl_slot].m) {
      array_member_io_error (a, mios[i].m, mios[i].err, true, mios[i].off);
      replace_cancel (a, false);           /* the target failed: stop */
      continue;
    }
    for (int r = 0; r < nroles; r++)
      if (layout_member (a, L, r) == mios[i].m)
        *failed |= 1u << r;
    array_member_io_error (a, mios[i].m, mios[i].err,
                           fatal || op != MIO_READ, mios[i].off);
  }
  return 0;
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
  uint32_t bad;                      /* roles not to use, in every row */
  uint32_t rb_mask;                  /* roles being rebuilt: good below rb_row */
  uint64_t rb_row;
  uint32_t repair;                   /* read path: roles to rewrite */
  struct raid_row rr;                /* scratch */
  struct seg *segs;
  size_t nsegs, capsegs;
  struct piece_list rd, wr;
};

/* Roles not to use in `row`.  Taken from a snapshot made while holding the
 * row locks (or, for unlocked reads, of rows the rebuild has already passed:
 * the rebuild cursor only moves forward, so they stay good). */
static uint32_t
bad_at (const struct group *G, uint64_t row)
{
  return G->bad | (row >= G->rb_row ? G->rb_mask : 0);
}

static void
snapshot (struct group *G, uint32_t extra)
{
  G->bad = array_bad_roles (G->a, G->L, &G->rb_mask, &G->rb_row) | extra;
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

static enum seg_plan
choose_plan (const struct group *G, const struct seg *sg, const struct raid_row *rr)
{
  int k = G->L->g.data_disks, nfull = 0;

  for (int i = 0; i < sg->ntouch; i++)
    nfull += touch_full (sg, &sg->t[i]);
  if (nfull == k)
    return SEG_FULL;                 /* also when degraded: nothing to read */
  if (row_has_bad (G, sg->row))
    return SEG_RECON;
  return (k - nfull) <= sg->ntouch + nparity (G->L) ? SEG_RCW : SEG_RMW;
}

/* ---------------------------------------------------------------------
 * Reading phase helpers.
 */
static uint8_t *
read_block (struct group *G, const struct seg *sg, int role)
{
  uint32_t len = sg->c1 - sg->c0;
  uint8_t *b = arena_alloc (G->ar, len);

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

/* Queue reads of every good role of the row over the segment's columns and
 * list the missing indices.  Returns 0, ENOMEM or EIO (too many missing). */
static int
plan_recon_reads (struct group *G, struct seg *sg, const struct raid_row *rr,
                  int *missing, int *nmissing)
{
  const struct layout *L = G->L;
  int np = nparity (L);

  *nmissing = 0;
  for (int r = 0; r < L->g.raid_disks; r++) {
    int idx = role_index (L, rr, r);
    if (idx < 0)
      continue;
    if (bad_at (G, sg->row) & (1u << r)) {
      if (*nmissing == np)
        return EIO;
      missing[(*nmissing)++] = idx;
      sg->blk[idx] = arena_alloc (G->ar, sg->c1 - sg->c0);
    }
    else
      sg->blk[idx] = read_block (G, sg, r);
    if (!sg->blk[idx])
      return ENOMEM;
  }
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
  uint32_t len = sg->c1 - sg->c0;

  raid_geom_row (&L->g, sg->row, rr);
  sg->plan = choose_plan (G, sg, rr);
  switch (sg->plan) {
  case SEG_FULL:
    for (int i = 0; i < sg->ntouch; i++)
      sg->blk[slot_of (L, rr, sg->t[i].di)] = sg->t[i].src;
    for (int p = 0; p < np; p++)
      if (!(sg->blk[k + p] = arena_alloc (G->ar, len)))
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
      if (!(sg->blk[k + p] = arena_alloc (G->ar, len)))
        return ENOMEM;
    return 0;
  }
  case SEG_RECON: {
    int missing[2], nmissing;
    return plan_recon_reads (G, sg, rr, missing, &nmissing);
  }
  }
  abort ();
}

static void
patch (struct seg *sg, uint8_t *blk, const struct touch *t)
{
  memcpy (blk + (t->s - sg->c0), t->src, t->e - t->s);
}

/* Compute new data and parity of a segment and queue its writes. */
static int
compute_write_seg (struct group *G, struct seg *sg)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  int k = L->g.data_disks, np = nparity (L);
  uint32_t len = sg->c1 - sg->c0;
  uint8_t *q;
  int err;

  raid_geom_row (&L->g, sg->row, rr);
  q = np == 2 ? sg->blk[k + 1] : NULL;
  switch (sg->plan) {
  case SEG_FULL:
  case SEG_RCW:
    for (int i = 0; i < sg->ntouch; i++)
      if (!touch_full (sg, &sg->t[i]))
        patch (sg, sg->blk[slot_of (L, rr, sg->t[i].di)], &sg->t[i]);
    if (parity_gen (k, len, (void *const *) sg->blk, sg->blk[k], q) < 0)
      return EIO;
    break;
  case SEG_RMW: {
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
    if (parity_update (k, len, sg->ntouch, slots, delta, sg->blk[k], q) < 0)
      return EIO;
    break;
  }
  case SEG_RECON: {
    int missing[2], n = 0;
    for (int r = 0; r < L->g.raid_disks; r++)
      if ((bad_at (G, sg->row) & (1u << r)) && role_index (L, rr, r) >= 0)
        missing[n++] = role_index (L, rr, r);
    if (n && parity_recover (k, np, len, (void *const *) sg->blk, missing, n) < 0)
      return EIO;
    for (int i = 0; i < sg->ntouch; i++)
      patch (sg, sg->blk[slot_of (L, rr, sg->t[i].di)], &sg->t[i]);
    if (parity_gen (k, len, (void *const *) sg->blk, sg->blk[k], q) < 0)
      return EIO;
    break;
  }
  }

  /* Queue writes: touched data, then parity; never to a bad role. */
  sg->wr_first = G->wr.n;
  for (int i = 0; i < sg->ntouch; i++) {
    int role = rr->data[sg->t[i].di];
    if (!(bad_at (G, sg->row) & (1u << role)) &&
        (err = piece_add (G->ar, &G->wr, role, moff (L, role, sg->row, sg->c0),
                          sg->blk[slot_of (L, rr, sg->t[i].di)], len)))
      return err;
  }
  for (int p = 0; p < np; p++) {
    int role = p == 0 ? rr->pd : rr->qd;
    if (!(bad_at (G, sg->row) & (1u << role)) &&
        (err = piece_add (G->ar, &G->wr, role, moff (L, role, sg->row, sg->c0),
                          sg->blk[k + p], len)))
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
      if (bad_at (G, row) & (1u << role))
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

/* Rows [r0, r0+n) of a write; [off, off+count) in layout array space, buf
 * at off (NULL src rows not allowed here). */
struct req {
  uint8_t *buf;                      /* client bytes for `off` */
  uint64_t off, count;
  unsigned flags;
};

static uint64_t
row_width (const struct layout *L)
{
  return L->g.stripe_width;
}

/* Journaled writes: segments in batches whose record fits the limits; each
 * batch's record is durable (journal_append) before its in-place writes
 * start, and the journal gate is held until they are done. */
static int
write_journaled (struct group *G, unsigned mflags, uint32_t *failed)
{
  size_t s0 = 0;
  struct jblock *blocks = arena_alloc (G->ar, JOURNAL_MAX_BLOCKS * sizeof *blocks);
  struct jrange *ranges = arena_alloc (G->ar, JOURNAL_MAX_RANGES * sizeof *ranges);
  uint8_t *hdr = arena_alloc (G->ar, journal_header_max ());

  if (!blocks || !ranges || !hdr)
    return ENOMEM;
  while (s0 < G->nsegs) {
    struct jrecord rec = { .layout_id = G->L->id, .first_row = G->segs[s0].row,
                           .blocks = blocks, .ranges = ranges };
    uint64_t payload = 0;
    size_t s1 = s0;
    int err;

    for (; s1 < G->nsegs; s1++) {
      struct seg *sg = &G->segs[s1];
      size_t np = sg->wr_end - sg->wr_first, plen = 0;
      for (size_t j = sg->wr_first; j < sg->wr_end; j++)
        plen += G->wr.p[j].len;
      if (sg->plan == SEG_FULL) {
        if (rec.nranges && ranges[rec.nranges - 1].row + ranges[rec.nranges - 1].rows > sg->row)
          continue;                      /* same row, another column slice */
        if (rec.nranges && ranges[rec.nranges - 1].row + ranges[rec.nranges - 1].rows == sg->row)
          ranges[rec.nranges - 1].rows++;
        else if (rec.nranges == JOURNAL_MAX_RANGES)
          break;
        else
          ranges[rec.nranges++] = (struct jrange) { sg->row, 1 };
        continue;
      }
      if (s1 > s0 && (payload + plen > JOURNAL_MAX_RECORD ||
                      rec.nblocks + np > JOURNAL_MAX_BLOCKS))
        break;
      for (size_t j = sg->wr_first; j < sg->wr_end; j++)
        blocks[rec.nblocks++] = (struct jblock) {
          G->wr.p[j].role, (uint32_t) G->wr.p[j].len, G->wr.p[j].off, G->wr.p[j].ptr };
      payload += plen;
    }
    err = journal_append (G->a, G->L, &rec, hdr);
    if (err == EAGAIN) {
      *failed = 1;                       /* a log copy failed: redo the group */
      return 0;
    }
    if (err)
      return err;
    {
      struct piece_list view = {
        .p = G->wr.p + G->segs[s0].wr_first,
        .n = G->segs[s1 - 1].wr_end - G->segs[s0].wr_first,
      };
      err = run_pieces (G->a, G->L, G->ar, &view, MIO_WRITE, mflags, true, failed);
    }
    journal_end (G->a);
    if (err || *failed)
      return err;
    s0 = s1;
  }
  return 0;
}

static int
write_group_once (struct group *G, const struct req *q, uint64_t r0, uint64_t n,
                  uint32_t *failed)
{
  const struct layout *L = G->L;
  uint64_t W = row_width (L);
  unsigned mflags = (q->flags & RAID_IO_FUA) ? MIO_FUA : 0;
  int err;

  G->nsegs = 0;
  G->rd.n = G->wr.n = 0;
  snapshot (G, 0);
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

  if ((err = run_pieces (G->a, L, G->ar, &G->rd, MIO_READ, 0, true, failed)) ||
      *failed)
    return err;
  for (size_t i = 0; i < G->nsegs; i++)
    if ((err = compute_write_seg (G, &G->segs[i])))
      return err;
  if (G->a->journaled && L->g.level >= 4 && !(q->flags & RAID_IO_RAW))
    return write_journaled (G, mflags, failed);
  if (bitmap_enabled (G->a) && L->id == 0 && !(q->flags & RAID_IO_RAW)) {
    if ((err = bitmap_start_write (G->a, r0, n)) == EAGAIN) {
      *failed = 1;                     /* a bitmap copy failed: redo */
      return 0;
    }
    if (err)
      return err;
    err = run_pieces (G->a, L, G->ar, &G->wr, MIO_WRITE, mflags, true, failed);
    bitmap_end_write (G->a, r0, n);
    return err;
  }
  return run_pieces (G->a, L, G->ar, &G->wr, MIO_WRITE, mflags, true, failed);
}

static struct stripe_lock_node *
lock_rows (struct group *G, uint64_t r0, uint64_t n)
{
  struct stripe_lock_node *nodes = arena_alloc (G->ar, n * sizeof *nodes);
  if (nodes)
    stripe_lock_range (&G->a->locks, stripe_lock_key (G->L->id, r0), n, nodes);
  return nodes;
}

/* Rows per group: about GROUP_BYTES of data, at least one row. */
static uint64_t
group_rows (const struct layout *L)
{
  return raid_max_u64 (1, GROUP_BYTES / row_width (L));
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
  /* Redo until clean: each redo follows a member newly made faulty. */
  for (int attempt = 0; attempt <= L->g.raid_disks; attempt++) {
    G.capsegs = G.rd.cap = G.wr.cap = 0;   /* arena memory is reused below */
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

/* Plan the reads of one row: direct reads for good blocks, a reconstruction
 * segment over the union of columns of bad ones. */
static int
plan_read_row (struct group *G, uint64_t row, const struct touch *t, int nt,
               bool *need_lock)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  struct seg *sg = NULL;
  int err;

  if (L->g.level == 1) {
    /* Spread reads over mirrors by row; skip bad ones. */
    for (int j = 0; j < L->g.raid_disks; j++) {
      int role = (int) ((row + j) % L->g.raid_disks);
      if (bad_at (G, row) & (1u << role))
        continue;
      return piece_add (G->ar, &G->rd, role, moff (L, role, row, t[0].s),
                        t[0].src, t[0].e - t[0].s);
    }
    return EIO;
  }

  raid_geom_row (&L->g, row, rr);
  for (int i = 0; i < nt; i++) {
    int role = rr->data[t[i].di];
    if (!(bad_at (G, row) & (1u << role))) {
      if ((err = piece_add (G->ar, &G->rd, role, moff (L, role, row, t[i].s),
                            t[i].src, t[i].e - t[i].s)))
        return err;
      continue;
    }
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
  if (sg) {
    int missing[2], nmissing;
    *need_lock = true;
    sg->plan = SEG_RECON;
    return plan_recon_reads (G, sg, rr, missing, &nmissing);
  }
  return 0;
}

/* Rebuild the bad blocks of read segments, copy out, and queue rewrites of
 * the blocks of roles being repaired. */
static int
finish_read_seg (struct group *G, struct seg *sg)
{
  const struct layout *L = G->L;
  struct raid_row *rr = &G->rr;
  int k = L->g.data_disks, missing[2], n = 0, err;
  uint32_t len = sg->c1 - sg->c0;

  raid_geom_row (&L->g, sg->row, rr);
  for (int r = 0; r < L->g.raid_disks; r++)
    if ((bad_at (G, sg->row) & (1u << r)) && role_index (L, rr, r) >= 0)
      missing[n++] = role_index (L, rr, r);
  if (parity_recover (k, nparity (L), len, (void *const *) sg->blk, missing, n) < 0)
    return EIO;
  for (int i = 0; i < sg->ntouch; i++) {
    const struct touch *t = &sg->t[i];
    memcpy (t->src, sg->blk[slot_of (L, rr, t->di)] + (t->s - sg->c0), t->e - t->s);
  }
  for (int r = 0; r < L->g.raid_disks; r++) {
    int idx = role_index (L, rr, r);
    if ((G->repair & (1u << r)) && idx >= 0 &&
        (err = piece_add (G->ar, &G->wr, r, moff (L, r, sg->row, sg->c0),
                          sg->blk[idx], len)))
      return err;
  }
  return 0;
}

static int
read_group_once (struct group *G, uint8_t *buf, uint64_t off, uint64_t count,
                 uint64_t r0, uint64_t n, bool locked, uint32_t *failed)
{
  const struct layout *L = G->L;
  uint64_t W = row_width (L);
  bool need_lock = false;
  int err;

  G->nsegs = 0;
  G->rd.n = G->wr.n = 0;
  G->capsegs = G->rd.cap = G->wr.cap = 0;
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
  if ((err = run_pieces (G->a, L, G->ar, &G->rd, MIO_READ, 0, false, failed)) ||
      *failed)
    return err;
  for (size_t i = 0; i < G->nsegs; i++)
    if ((err = finish_read_seg (G, &G->segs[i])))
      return err;
  return run_pieces (G->a, L, G->ar, &G->wr, MIO_WRITE, 0, true, failed);
}

static int
read_group (struct raid_array *a, const struct layout *L, uint8_t *buf,
            uint64_t off, uint64_t count, uint64_t r0, uint64_t n)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes = NULL;
  uint32_t failed = 0, exclude = 0;
  int err = EIO;

  if (!(G.ar = arena_reset ()))
    return ENOMEM;
  for (int attempt = 0; attempt <= 2 * L->g.raid_disks; attempt++) {
    snapshot (&G, 0);
    G.repair = exclude & ~G.bad & ~G.rb_mask;
    G.bad |= exclude;
    err = read_group_once (&G, buf, off, count, r0, n, nodes != NULL, &failed);
    if (err == EAGAIN && !nodes) {
      if (!(nodes = lock_rows (&G, r0, n)))
        return ENOMEM;
      continue;
    }
    if (err || !failed)
      break;
    /* Read errors: rebuild from the others and rewrite, under the lock.  A
     * failed rewrite made the member faulty (it is now in bad roles). */
    exclude |= failed;
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

  while (off < end) {
    uint64_t r0 = off / W;
    uint64_t r1 = raid_min_u64 ((end - 1) / W + 1, r0 + gr);
    uint64_t gend = raid_min_u64 (end, r1 * W);
    int err = read_group (a, L, buf, off, gend - off, r0, r1 - r0);
    if (err)
      return err;
    buf = (uint8_t *) buf + (gend - off);
    off = gend;
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Zero: whole rows are zeroed on every good member (the parity of zeroes is
 * zero, for P and Q); partial rows are written with zeroes.
 */
static int
zero_rows (struct raid_array *a, const struct layout *L, uint64_t r0, uint64_t n,
           unsigned flags)
{
  struct mio mios[RAID_MAX_MEMBERS];
  struct stripe_lock_node *nodes;
  struct group G = { .a = a, .L = L };
  uint32_t bad;
  size_t nm = 0;
  int err = 0;

  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;
  for (int attempt = 0; attempt <= L->g.raid_disks; attempt++) {
    if (raid_array_health (a) == RAID_HEALTH_FAILED) {
      err = EIO;
      break;
    }
    bad = array_bad_roles (a, L, NULL, NULL);   /* rebuilding roles are zeroed too */
    nm = 0;
    for (int r = 0; r < L->g.raid_disks; r++)
      if (!(bad & (1u << r)))
        mios[nm++] = (struct mio) {
          .m = layout_member (a, L, r), .op = MIO_ZERO,
          .flags = (flags & RAID_IO_FUA) ? MIO_FUA : 0,
          .off = moff (L, r, r0, 0), .len = n * L->g.chunk,
        };
    if (a->journaled && L->g.level >= 4 && !(flags & RAID_IO_RAW)) {
      struct jrange rg = { r0, n };
      struct jrecord rec = { .layout_id = L->id, .first_row = r0, .nranges = 1,
                             .ranges = &rg };
      uint8_t *hdr = arena_alloc (G.ar, journal_header_max ());
      err = hdr ? journal_append (a, L, &rec, hdr) : ENOMEM;
      if (err == EAGAIN)
        continue;
      if (err)
        break;
      err = mio_run (mios, nm);
      journal_end (a);
    }
    else if (bitmap_enabled (a) && L->id == 0 && !(flags & RAID_IO_RAW)) {
      if ((err = bitmap_start_write (a, r0, n)) == EAGAIN)
        continue;
      if (err)
        break;
      err = mio_run (mios, nm);
      bitmap_end_write (a, r0, n);
    }
    else
      err = mio_run (mios, nm);
    if (err == 0)
      break;
    for (size_t i = 0; i < nm; i++)
      if (mios[i].err)
        array_member_io_error (a, mios[i].m, mios[i].err, true, mios[i].off);
    err = EIO;
  }
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
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

/* ---------------------------------------------------------------------
 * Background row operations (driven by sync.c).
 */

/* Rebuild `role` in rows [r0, r0+n): reconstruct its blocks from the other
 * roles and write them.  The cursor is advanced to r0+n while the rows are
 * still locked, so a writer that locks one of these rows afterwards always
 * sees them as rebuilt and writes the role too. */
int
stripe_rebuild_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                     uint64_t n, int role, _Atomic uint64_t *cursor)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  uint32_t failed;
  int err = 0;

  if (L->g.level == 0)
    return EINVAL;
  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;
  snapshot (&G, 0);
  G.repair = 1u << role;
  for (uint64_t row = r0; row < r0 + n && !err; row++) {
    struct seg *sg = seg_new (&G);
    int missing[2], nmissing;
    if (!sg) {
      err = ENOMEM;
      break;
    }
    sg->row = row; sg->c0 = 0; sg->c1 = L->g.chunk; sg->plan = SEG_RECON;
    if (L->g.level == 1) {
      /* Copy from the first good mirror. */
      int src = -1;
      for (int r = 0; r < L->g.raid_disks && src < 0; r++)
        if (!(bad_at (&G, row) & (1u << r)))
          src = r;
      if (src < 0 || !(sg->blk[0] = read_block (&G, sg, src)))
        err = src < 0 ? EIO : ENOMEM;
      else
        err = piece_add (G.ar, &G.wr, role, moff (L, role, row, 0), sg->blk[0], L->g.chunk);
      G.nsegs--;
      continue;
    }
    raid_geom_row (&L->g, row, &G.rr);
    err = plan_recon_reads (&G, sg, &G.rr, missing, &nmissing);
  }
  if (!err && !(err = run_pieces (a, L, G.ar, &G.rd, MIO_READ, 0, true, &failed)))
    err = failed ? EIO : 0;
  for (size_t i = 0; i < G.nsegs && !err; i++)
    err = finish_read_seg (&G, &G.segs[i]);
  if (!err && !(err = run_pieces (a, L, G.ar, &G.wr, MIO_WRITE, 0, true, &failed)))
    err = failed ? EIO : 0;
  if (!err)
    atomic_store (cursor, r0 + n);
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

/* Check (and with repair, fix) the parity of rows [r0, r0+n) in 4 KiB
 * columns; *mismatches is increased by the number of columns found wrong.
 * Rows with a bad role are skipped (nothing to compare against). */
int
stripe_check_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                   uint64_t n, bool repair, uint64_t *mismatches)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  int k = L->g.data_disks, np = nparity (L);
  uint32_t failed;
  int err = 0;

  if (np == 0)
    return 0;
  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)))
    return ENOMEM;
  snapshot (&G, 0);
  for (uint64_t row = r0; row < r0 + n && !err; row++) {
    struct seg *sg;
    if (row_has_bad (&G, row))
      continue;
    if (!(sg = seg_new (&G))) {
      err = ENOMEM;
      break;
    }
    sg->row = row; sg->c0 = 0; sg->c1 = L->g.chunk;
    raid_geom_row (&L->g, row, &G.rr);
    for (int r = 0; r < L->g.raid_disks && !err; r++)
      if (!(sg->blk[role_index (L, &G.rr, r)] = read_block (&G, sg, r)))
        err = ENOMEM;
  }
  if (!err && !(err = run_pieces (a, L, G.ar, &G.rd, MIO_READ, 0, true, &failed)))
    err = failed ? EIO : 0;
  for (size_t i = 0; i < G.nsegs && !err; i++) {
    struct seg *sg = &G.segs[i];
    raid_geom_row (&L->g, sg->row, &G.rr);
    for (uint32_t c = 0; c < L->g.chunk && !err; c += COL_ALIGN) {
      void *col[RAID_MAX_MEMBERS + 2];
      for (int j = 0; j < k + np; j++)
        col[j] = sg->blk[j] + c;
      int ok = parity_check (k, np, COL_ALIGN, col);
      if (ok < 0)
        err = EIO;
      if (ok != 0)
        continue;
      (*mismatches)++;
      if (!repair)
        continue;
      if (parity_gen (k, COL_ALIGN, col, col[k], np == 2 ? col[k + 1] : NULL) < 0)
        err = EIO;
      for (int p = 0; p < np && !err; p++) {
        int role = p == 0 ? G.rr.pd : G.rr.qd;
        err = piece_add (G.ar, &G.wr, role, moff (L, role, sg->row, c),
                         (uint8_t *) col[k + p], COL_ALIGN);
      }
    }
  }
  if (!err && !(err = run_pieces (a, L, G.ar, &G.wr, MIO_WRITE, 0, true, &failed)))
    err = failed ? EIO : 0;
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}

/* Copy `role`'s blocks of rows [r0, r0+n) to dst (a replace): read the
 * member directly; the cursor advances while the rows are locked, as for
 * a rebuild.  A read error is reported (the member may go faulty; the
 * caller turns the replace into a recovery then). */
int
stripe_copy_rows (struct raid_array *a, const struct layout *L, uint64_t r0,
                  uint64_t n, int role, struct member *dst, _Atomic uint64_t *cursor)
{
  struct group G = { .a = a, .L = L };
  struct stripe_lock_node *nodes;
  uint64_t len = n * L->g.chunk;
  uint8_t *buf;
  int err;

  if (array_bad_roles (a, L, NULL, NULL) & (1u << role))
    return EIO;                            /* the source failed meanwhile */
  if (!(G.ar = arena_reset ()) || !(nodes = lock_rows (&G, r0, n)) ||
      !(buf = arena_alloc (G.ar, len)))
    return ENOMEM;
  err = member_pread (layout_member (a, L, role), buf, len, moff (L, role, r0, 0));
  if (err)
    array_member_io_error (a, layout_member (a, L, role), err, true, moff (L, role, r0, 0));
  else if ((err = member_pwrite (dst, buf, len, moff (L, role, r0, 0), false)) != 0)
    array_member_io_error (a, dst, err, true, moff (L, role, r0, 0));
  if (!err)
    atomic_store (cursor, r0 + n);
  stripe_unlock_range (&a->locks, n, nodes);
  return err;
}
