/* nbdkit-raid: the write-hole journal (consistency policy "journal").
 *
 * THE PROBLEM.  A stripe write updates several members.  If the machine
 * stops part-way (or a member's volatile cache loses unflushed writes), the
 * row's parity no longer matches its data.  Nothing is wrong yet, but when a
 * member is lost afterwards, its blocks are rebuilt from that mismatched
 * parity — including blocks the interrupted write never touched: a crash
 * would have corrupted data outside the write.  That is the RAID write hole.
 *
 * THE JOURNAL.  Before the in-place writes of a group of rows, the engine
 * appends one record describing them:
 *   - for partial rows: the complete new contents of every block it is about
 *     to write (data and parity of the affected columns), with each block's
 *     role and member offset;
 *   - for full rows (every data block of the row rewritten) only the row
 *     range ("intent"): such a row lies entirely inside the write, so any
 *     torn state is allowed, but its parity must be made consistent again.
 * The record is written, with FUA, to nparity+1 different members (so one
 * copy survives the loss the level tolerates), and only when every copy is
 * durable do the in-place writes start.
 *
 * REPLAY (at assembly of an array whose superblock says dirty).  Every valid
 * record of the current epoch with seq >= journal_seq, found on any member,
 * is applied in sequence order: payload blocks are written back in place,
 * except blocks of rows that a LATER intent record covers (that full-row
 * write's data was not logged; older bytes must not replace it, which
 * would lose it even if it had been flushed); then every row named by an
 * intent gets its parity recomputed from the data on the members — the
 * full-row write may be torn or partly lost from a volatile cache, and a
 * later partial write may have computed its parity from it.  A full row
 * lies entirely inside its write, so whatever its data now holds is
 * allowed; what matters is that parity matches it.  Afterwards every
 * row touched since the last checkpoint holds, for each logged write, either
 * its complete new state or (if its record never became durable and so none
 * of its in-place writes started) its complete old state; and rows are
 * consistent, so losing a member afterwards rebuilds correct data.  Applying
 * records in order also repairs writes whose in-place copies were lost from
 * a volatile cache, because a later record's payload was computed from the
 * in-memory state that included them, and their own records come first.
 *
 * WHICH WRITES.  consistency.c decides, per layout: every write of a layout
 * with parity, in either layout of a reshape (a raid0 -> raid5 takeover's
 * target is journaled from its first write).  A record names the layout it
 * was written for (0 current, 1 reshape target), and replay applies it to
 * that layout.  Every reshape step empties the log in the same commit that
 * records the new position, so no record of a moved window survives it.
 *
 * CHECKPOINT.  Each member's log area is a linear append region reset at
 * every checkpoint: the gate (a writer-preferring rwlock) is taken
 * exclusively — new writes wait, in-flight writes finish — all members are
 * flushed (every in-place write is now durable), and a superblock record
 * with a new epoch and journal_seq = next seq makes all earlier records
 * obsolete.  A checkpoint runs when a member's log is full, and at a clean
 * shutdown.  The wait is bounded by the in-flight writes' own I/O.
 *
 * RECORD FORMAT (little-endian; records start on 512-byte boundaries of the
 * member's consistency area; scanning tries every boundary, so a torn record
 * cannot hide later ones):
 *   0   8  magic "NRJREC01"
 *   8   4  CRC32C of the header (header_len bytes, this field as 0)
 *   12  4  CRC32C of the payload
 *   16 16  array uuid
 *   32  8  epoch
 *   40  8  seq
 *   48  4  nblocks       52  4  nranges
 *   56  4  header_len    60  4  payload_len
 *   64  4  layout id     68 12  reserved
 *   80     nblocks x {u32 role, u32 len, u64 member offset}   (16 bytes)
 *          nranges x {u64 first row, u64 rows}                 (16 bytes)
 *   header_len (multiple of 512), then the payload: the blocks in order.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array-int.h"
#include "missed.h"
#include "journal.h"
#include "util.h"

#define JMAGIC "NRJREC01"
#define JSECTOR 512u
#define JHDR_FIXED 80u
#define JHDR_MAX (JHDR_FIXED + 16u * (JOURNAL_MAX_BLOCKS + JOURNAL_MAX_RANGES))
#define JCOPIES_MAX 3               /* nparity + 1 */

struct jblock {
  int role;
  uint32_t len;
  uint64_t off;                     /* absolute member offset */
  const void *data;
};

struct jrange {
  uint64_t row, rows;
};

struct jrecord {
  int layout_id;
  uint64_t first_row;               /* spreads the copies over members */
  int nblocks, nranges;
  struct jblock blocks[JOURNAL_MAX_BLOCKS];
  struct jrange ranges[JOURNAL_MAX_RANGES];
};

/* Per-thread scratch of a journaled write: one record being built, its
 * header and the vectors of its copies (too large for a stack). */
struct jscratch {
  struct jrecord rec;
  struct iovec iov[JCOPIES_MAX][JOURNAL_MAX_BLOCKS + 2];
  uint8_t *hdr;                     /* JHDR_MAX rounded up to a sector */
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void
scratch_free (void *p)
{
  struct jscratch *js = p;
  free (js->hdr);
  free (js);
}

static void
scratch_key_init (void)
{
  pthread_key_create (&scratch_key, scratch_free);
}

static struct jscratch *
scratch (void)
{
  struct jscratch *js;

  pthread_once (&scratch_once, scratch_key_init);
  if ((js = pthread_getspecific (scratch_key)) != NULL)
    return js;
  if (!(js = calloc (1, sizeof *js)) ||
      !(js->hdr = raid_alloc_aligned (raid_round_up (JHDR_MAX, JSECTOR)))) {
    free (js);
    return NULL;
  }
  pthread_setspecific (scratch_key, js);
  return js;
}

static uint32_t get32 (const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24; }
static uint64_t get64 (const uint8_t *p) { return get32 (p) | (uint64_t) get32 (p + 4) << 32; }
static void put32 (uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put64 (uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }

bool
journal_usable (const struct raid_array *a)
{
  return a->sb.consistency == SB_CONS_JOURNAL &&
    a->sb.cons_size >= 2 * JOURNAL_MAX_RECORD;
}

void
journal_init (struct raid_array *a)
{
  pthread_rwlockattr_t attr;

  pthread_rwlockattr_init (&attr);
  pthread_rwlockattr_setkind_np (&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&a->jn.gate, &attr);
  pthread_rwlockattr_destroy (&attr);
  pthread_mutex_init (&a->jn.lock, NULL);
  atomic_store (&a->jn.seq_next, a->sb.journal_seq);
  memset (a->jn.head, 0, sizeof a->jn.head);
}

void
journal_fini (struct raid_array *a)
{
  pthread_rwlock_destroy (&a->jn.gate);
  pthread_mutex_destroy (&a->jn.lock);
}

static uint32_t
header_len (int nblocks, int nranges)
{
  return raid_round_up (JHDR_FIXED + 16u * (nblocks + nranges), JSECTOR);
}

static uint64_t
record_size (int nblocks, int nranges, uint64_t payload)
{
  return header_len (nblocks, nranges) + raid_round_up (payload, JSECTOR);
}

/* Encode the header for `r` into hdr (header_len bytes, zeroed by caller). */
static void
encode_header (const struct raid_array *a, const struct jrecord *r, uint64_t seq,
               uint8_t *hdr, uint32_t hlen, uint32_t plen, uint32_t pcrc)
{
  uint8_t *e = hdr + JHDR_FIXED;

  memcpy (hdr, JMAGIC, 8);
  put32 (hdr + 12, pcrc);
  memcpy (hdr + 16, a->sb.array_uuid, RAID_UUID_LEN);
  put64 (hdr + 32, a->sb.journal_epoch);
  put64 (hdr + 40, seq);
  put32 (hdr + 48, r->nblocks);
  put32 (hdr + 52, r->nranges);
  put32 (hdr + 56, hlen);
  put32 (hdr + 60, plen);
  put32 (hdr + 64, r->layout_id);
  for (int i = 0; i < r->nblocks; i++, e += 16) {
    put32 (e, r->blocks[i].role);
    put32 (e + 4, r->blocks[i].len);
    put64 (e + 8, r->blocks[i].off);
  }
  for (int i = 0; i < r->nranges; i++, e += 16) {
    put64 (e, r->ranges[i].row);
    put64 (e + 8, r->ranges[i].rows);
  }
  put32 (hdr + 8, raid_crc32c (hdr, hlen));
}

/* Choose the members that hold the record's copies: nparity+1 usable
 * members, starting at a row-dependent role so the load spreads. */
static int
pick_copies (struct raid_array *a, const struct layout *L, uint64_t row,
             int *slots)
{
  int want = (L->g.level == 1 ? 1 : L->g.parity_disks) + 1, n = 0;
  uint32_t bad = state_bad_roles (a, L, NULL, NULL);

  for (int i = 0; i < L->g.raid_disks && n < want; i++) {
    int r = (int) ((row + i) % L->g.raid_disks);
    int s = L->slot[r];
    if (!(bad & (1u << r)) && s >= 0)
      slots[n++] = s;
  }
  return n;
}

/* Reserve len bytes in the log of every slot; false when one is full. */
static bool
reserve (struct raid_array *a, const int *slots, int n, uint64_t len, uint64_t *pos)
{
  bool ok = true;

  pthread_mutex_lock (&a->jn.lock);
  for (int i = 0; i < n; i++)
    if (a->jn.head[slots[i]] + len > a->sb.cons_size)
      ok = false;
  for (int i = 0; ok && i < n; i++) {
    pos[i] = a->jn.head[slots[i]];
    a->jn.head[slots[i]] += len;
  }
  pthread_mutex_unlock (&a->jn.lock);
  return ok;
}

/* Append r durably.  On success returns 0 with the journal gate held
 * shared: the caller does the in-place writes, then unlocks the gate.
 * EAGAIN: a copy failed (the member was reported); nothing is held.  May
 * run a checkpoint when a log is full. */
static int
append (struct raid_array *a, const struct layout *L, struct jscratch *js)
{
  const struct jrecord *r = &js->rec;
  int slots[RAID_MAX_MEMBERS], n;
  uint32_t hlen = header_len (r->nblocks, r->nranges), plen = 0, pcrc;
  uint64_t pos[RAID_MAX_MEMBERS], seq, len;
  struct mio mios[JCOPIES_MAX];
  static const uint8_t pad[JSECTOR];
  int err;

  for (int i = 0; i < r->nblocks; i++)
    plen += r->blocks[i].len;
  len = record_size (r->nblocks, r->nranges, plen);
  for (;;) {
    pthread_rwlock_rdlock (&a->jn.gate);          /* released by the caller */
    n = pick_copies (a, L, r->first_row, slots);
    if (n == 0) {
      pthread_rwlock_unlock (&a->jn.gate);
      return EIO;
    }
    if (reserve (a, slots, n, len, pos))
      break;
    pthread_rwlock_unlock (&a->jn.gate);
    if ((err = journal_checkpoint (a, NULL, NULL)) != 0)
      return err;
  }
  seq = atomic_fetch_add (&a->jn.seq_next, 1);

  pcrc = ~0u;
  for (int i = 0; i < r->nblocks; i++)
    pcrc = raid_crc32c_update (pcrc, r->blocks[i].data, r->blocks[i].len);
  memset (js->hdr, 0, hlen);
  encode_header (a, r, seq, js->hdr, hlen, plen, ~pcrc);

  for (int c = 0; c < n; c++) {
    struct iovec *iov = js->iov[c];
    int k = 0;
    iov[k++] = (struct iovec) { js->hdr, hlen };
    for (int i = 0; i < r->nblocks; i++)
      iov[k++] = (struct iovec) { (void *) r->blocks[i].data, r->blocks[i].len };
    if (raid_round_up (plen, JSECTOR) != plen)
      iov[k++] = (struct iovec) { (void *) pad, raid_round_up (plen, JSECTOR) - plen };
    mios[c] = (struct mio) {
      .m = a->mem[slots[c]].m, .op = MIO_WRITE, .flags = MIO_FUA,
      .off = a->sb.cons_offset + pos[c], .iov = iov, .iovcnt = k, .len = len,
    };
  }
  if (mio_run (mios, n) != 0) {
    for (int c = 0; c < n; c++)
      if (mios[c].err)
        state_member_error (a, mios[c].m, mios[c].err, true, mios[c].off);
    pthread_rwlock_unlock (&a->jn.gate);
    return EAGAIN;
  }
  return 0;
}

/* Add unit u to the record: a full unit as an intent range (merged with the
 * previous one), a partial one as its payload blocks.  False when it does
 * not fit (the record is flushed first). */
static bool
add_unit (struct jrecord *rec, uint64_t *payload, const struct write_batch *g,
          const struct write_unit *u)
{
  size_t np = u->end - u->first, plen = 0;

  if (u->full) {
    struct jrange *last = rec->nranges ? &rec->ranges[rec->nranges - 1] : NULL;
    if (last && last->row + last->rows > u->row)
      return true;                       /* same rows, another column slice */
    if (last && last->row + last->rows == u->row) {
      last->rows += u->rows;
      return true;
    }
    if (rec->nranges == JOURNAL_MAX_RANGES)
      return false;
    rec->ranges[rec->nranges++] = (struct jrange) { u->row, u->rows };
    return true;
  }
  for (size_t j = u->first; j < u->end; j++)
    plen += g->pieces[j].len;
  if ((rec->nblocks || rec->nranges) &&
      (*payload + plen > JOURNAL_MAX_RECORD || rec->nblocks + np > JOURNAL_MAX_BLOCKS))
    return false;
  for (size_t j = u->first; j < u->end; j++) {
    const struct piece *p = &g->pieces[j];
    rec->blocks[rec->nblocks++] = (struct jblock) { p->role, (uint32_t) p->len, p->off, p->ptr };
  }
  *payload += plen;
  return true;
}

int
journal_write (struct raid_array *a, const struct layout *L,
               const struct write_batch *g, write_issue_fn issue, void *ctx,
               uint32_t *failed)
{
  struct jscratch *js = scratch ();
  size_t u0 = 0;

  *failed = 0;
  if (!js)
    return ENOMEM;
  while (u0 < g->nunits) {
    struct jrecord *rec = &js->rec;
    uint64_t payload = 0;
    size_t u1 = u0;
    int err;

    rec->layout_id = L->id;
    rec->first_row = g->units[u0].row;
    rec->nblocks = rec->nranges = 0;
    while (u1 < g->nunits && add_unit (rec, &payload, g, &g->units[u1]))
      u1++;
    if ((err = append (a, L, js)) == EAGAIN) {
      *failed = 1;                         /* a log copy failed: redo */
      return 0;
    }
    if (err)
      return err;
    err = issue (ctx, g->units[u0].first, g->units[u1 - 1].end, failed);
    pthread_rwlock_unlock (&a->jn.gate);
    if (err || *failed)
      return err;
    u0 = u1;
  }
  return 0;
}

int
journal_checkpoint (struct raid_array *a,
                    void (*update) (struct raid_array *a, void *arg), void *arg)
{
  int err;

  pthread_rwlock_wrlock (&a->jn.gate);       /* waits for in-flight writes */
  state_flush_all (a);
  pthread_mutex_lock (&a->state_lock);
  a->sb.journal_epoch++;
  a->sb.journal_seq = atomic_load (&a->jn.seq_next);
  if (update)
    update (a, arg);
  err = state_commit (a);
  pthread_mutex_unlock (&a->state_lock);
  if (err == 0) {
    pthread_mutex_lock (&a->jn.lock);
    memset (a->jn.head, 0, sizeof a->jn.head);
    pthread_mutex_unlock (&a->jn.lock);
  }
  pthread_rwlock_unlock (&a->jn.gate);
  return err;
}

/* ------------------------------------------------------------------ */
/* Replay. */

struct found {
  uint64_t seq;
  uint8_t *rec;                            /* header + payload (in the area buffer) */
};

static int
cmp_found (const void *x, const void *y)
{
  const struct found *a = x, *b = y;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Validate a record at p (at most avail bytes); its total length or 0. */
static uint64_t
valid_record (const struct raid_array *a, uint8_t *p, uint64_t avail)
{
  uint32_t hlen, plen, crc, nb, nr;
  uint64_t need;

  if (avail < JSECTOR || memcmp (p, JMAGIC, 8) != 0 ||
      memcmp (p + 16, a->sb.array_uuid, RAID_UUID_LEN) != 0 ||
      get64 (p + 32) != a->sb.journal_epoch || get64 (p + 40) < a->sb.journal_seq)
    return 0;
  nb = get32 (p + 48); nr = get32 (p + 52); hlen = get32 (p + 56); plen = get32 (p + 60);
  if (nb > JOURNAL_MAX_BLOCKS || nr > JOURNAL_MAX_RANGES ||
      hlen != header_len (nb, nr) || hlen > avail)
    return 0;
  crc = get32 (p + 8);
  put32 (p + 8, 0);
  if (raid_crc32c (p, hlen) != crc) {
    put32 (p + 8, crc);
    return 0;
  }
  put32 (p + 8, crc);
  need = hlen + raid_round_up (plen, JSECTOR);
  if (need > avail || raid_crc32c (p + hlen, plen) != get32 (p + 12))
    return 0;
  return need;
}

/* Intent row ranges of all records, to decide which payload blocks are
 * superseded and which rows need their parity recomputed. */
struct intent {
  uint64_t seq, row, rows;
  int layout_id;
};

/* The layout a record was written for (replay runs at assembly, when the
 * router already knows the reshape, if any). */
static const struct layout *
record_layout (struct raid_array *a, int id)
{
  return router_layout (&a->router, id == LAYOUT_NEXT && router_two (&a->router)
                        ? LAYOUT_NEXT : LAYOUT_CUR);
}

/* Does an intent newer than seq cover row `row` of layout id? */
static bool
superseded (const struct intent *in, size_t nin, int id, uint64_t seq, uint64_t row)
{
  for (size_t i = 0; i < nin; i++)
    if (in[i].seq > seq && in[i].layout_id == id &&
        row >= in[i].row && row - in[i].row < in[i].rows)
      return true;
  return false;
}

/* Write a record's payload blocks back in place, except blocks of rows
 * that a later full-row write (intent) rewrote: its data was not logged,
 * and the older bytes must not replace it. */
static void
apply_payload (struct raid_array *a, uint8_t *p, const struct intent *in, size_t nin)
{
  int id = (int) get32 (p + 64);
  const struct layout *L = record_layout (a, id);
  uint32_t nb = get32 (p + 48), hlen = get32 (p + 56);
  uint8_t *e = p + JHDR_FIXED, *data = p + hlen;
  uint64_t seq = get64 (p + 40);

  for (uint32_t i = 0; i < nb; i++, e += 16) {
    int role = (int) get32 (e);
    uint32_t len = get32 (e + 4);
    uint64_t off = get64 (e + 8);
    struct member *m = role < L->g.raid_disks ? state_role_member (a, L, role) : NULL;
    uint64_t row = m && off >= L->data_offset[role]
      ? (off - L->data_offset[role]) / L->g.chunk : 0;
    if (m && !(state_bad_roles (a, L, NULL, NULL) & (1u << role)) &&
        !superseded (in, nin, id, seq, row) &&
        (L->id != LAYOUT_CUR || missed_mark_rows (a, row, 1) == 0) &&
        member_pwrite (m, data, len, off, false) != 0)
      state_member_error (a, m, EIO, true, off);
    data += len;
  }
}

static int
collect_intents (uint8_t *p, struct intent **in, size_t *nin, size_t *cap)
{
  uint32_t nb = get32 (p + 48), nr = get32 (p + 52);
  uint8_t *e = p + JHDR_FIXED + 16 * nb;

  for (uint32_t i = 0; i < nr; i++, e += 16) {
    if (*nin == *cap) {
      struct intent *n2;
      *cap = *cap ? *cap * 2 : 64;
      if (!(n2 = realloc (*in, *cap * sizeof **in)))
        return ENOMEM;
      *in = n2;
    }
    (*in)[(*nin)++] = (struct intent) { get64 (p + 40), get64 (e), get64 (e + 8),
                                        (int) get32 (p + 64) };
  }
  return 0;
}

/* Rows a full-row write touched: their data may be torn or partly lost from
 * a volatile cache, and later partial writes computed parity from it; the
 * only consistent state is parity recomputed from what is on the members.
 * Done after every payload is back in place. */
static int
resync_intents (struct raid_array *a, journal_resync_fn resync, const struct intent *in,
                size_t nin)
{
  int err = 0;

  for (size_t i = 0; i < nin && !err; i++) {
    const struct layout *L = record_layout (a, in[i].layout_id);
    if (L->id == LAYOUT_NEXT)
      err = resync (a, L, in[i].row, in[i].rows);
    else if (in[i].row < L->rows && in[i].rows <= L->rows - in[i].row &&
             (err = missed_mark_rows (a, in[i].row, in[i].rows)) == 0)
      err = resync (a, L, in[i].row, in[i].rows);   /* an absent member misses it */
  }
  return err;
}

int
journal_replay (struct raid_array *a, journal_resync_fn resync, int *napplied,
                char *err, size_t errlen)
{
  uint64_t size = a->sb.cons_size;
  uint8_t *bufs[SB_MAX_MEMBERS] = { NULL };
  struct found *f = NULL;
  struct intent *in = NULL;
  size_t nf = 0, capf = 0, nin = 0, capin = 0;
  int r = 0;

  *napplied = 0;
  for (int t = 0; t < (int) a->sb.nmembers; t++) {
    if (!state_member_in_use (a, t))
      continue;
    if (!(bufs[t] = raid_alloc_aligned (size)) ||
        member_pread (a->mem[t].m, bufs[t], size, a->sb.cons_offset) != 0) {
      raid_log (RAID_LOG_WARN, "%s: cannot read its journal", member_spec (a->mem[t].m));
      free (bufs[t]);
      bufs[t] = NULL;
      continue;
    }
    for (uint64_t pos = 0; pos + JSECTOR <= size;) {
      uint64_t len = valid_record (a, bufs[t] + pos, size - pos);
      if (!len) {
        pos += JSECTOR;
        continue;
      }
      if (nf == capf) {
        capf = capf ? capf * 2 : 64;
        f = realloc (f, capf * sizeof *f);
        if (!f) {
          snprintf (err, errlen, "out of memory");
          r = ENOMEM;
          goto out;
        }
      }
      f[nf++] = (struct found) { get64 (bufs[t] + pos + 40), bufs[t] + pos };
      pos += len;
    }
  }
  if (nf)
    qsort (f, nf, sizeof *f, cmp_found);
  for (size_t i = 0; i < nf; i++)          /* pass 1: every intent */
    if ((i == 0 || f[i].seq != f[i - 1].seq) &&
        (r = collect_intents (f[i].rec, &in, &nin, &capin)) != 0) {
      snprintf (err, errlen, "out of memory");
      goto out;
    }
  for (size_t i = 0; i < nf; i++) {        /* pass 2: payloads, in order */
    if (i > 0 && f[i].seq == f[i - 1].seq)
      continue;                            /* another copy */
    apply_payload (a, f[i].rec, in, nin);
    (*napplied)++;
    atomic_store (&a->jn.seq_next, raid_max_u64 (atomic_load (&a->jn.seq_next), f[i].seq + 1));
  }
  if ((r = resync_intents (a, resync, in, nin)) != 0) {   /* pass 3: full-row writes */
    snprintf (err, errlen, "journal replay could not resync rows: %s", raid_strerror (r));
    goto out;
  }
  r = journal_checkpoint (a, NULL, NULL);   /* flush, new epoch: log cleared */
  if (r)
    snprintf (err, errlen, "journal checkpoint after replay failed: %s", raid_strerror (r));
 out:
  for (int t = 0; t < SB_MAX_MEMBERS; t++)
    free (bufs[t]);
  free (f);
  free (in);
  return r;
}
