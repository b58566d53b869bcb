/* nbdkit-raid tests: simulated member devices that can lose power.
 *
 * THEORY
 *
 * The device model.  Every simulated member (struct cs_disk) has a DURABLE
 * image and a list of PENDING writes: the writes it accepted since its last
 * flush, in the order they completed.  A write returns success and joins
 * the pending list; reads return the volatile view, which is the durable
 * image with every pending write applied in order (as a write cache
 * serves them).  A flush applies the pending writes to the durable image
 * and empties the list.  A FUA write is applied to the durable image when
 * it completes; the parts of older pending writes it overlaps are dropped
 * from the list, because a device never writes stale data over newer data
 * of the same sector.  A zero is a write of zeroes.
 *
 * The power loss.  All disks of a test share one world (struct cs_world)
 * that counts completed member writes, every one of them: data, parity,
 * superblock records, journal and bitmap writes alike.  Armed with N, the
 * world stops when the N-th write completes: that write succeeds, and every
 * later operation of every disk (reads and flushes too) fails with EIO, so
 * nothing the array does after the crash can reach any image.
 *
 * What survives.  After the power loss each disk's image is its durable
 * image plus a subset of its pending writes, chosen per disk independently:
 *   (a) none of them;  (b) all of them;  (c) each one with probability 1/2;
 *   (d) as (c), and one more of them, drawn uniformly, torn: only a prefix
 *       of its 512-byte sectors, or a random subset of them, lands.
 * A 512-byte sector is written atomically, and only whole: a write that
 * covers part of a sector joins the list as that whole sector with the
 * content the volatile view gives it (a device takes whole sectors, and
 * whatever splits one, the kernel's page cache or a member's server,
 * merges it with the bytes cached before; so a later sub-sector write
 * never lands without the earlier ones in its sector).  The surviving
 * writes are applied in their completion order.  That is the only order
 * that needs simulating: writes to disjoint sectors commute, so applying
 * them in any random order gives the same image; and of two writes to the
 * same sector a device never lets the older land after the newer, so a
 * crash image in which the older data wins is exactly the image in which
 * the newer write was lost, which (c) and (d) already produce.
 *
 * Why "crash after write N, for every N" covers every power loss.  A write
 * in flight at the moment power fails either landed (wholly or torn) or
 * not; a write that completed but was not flushed likewise.  So a power
 * loss at any instant between the completions of writes N and N+1, with
 * writes N+1..N+k in flight, leaves an image that "crash after write N+k"
 * produces with some choice of surviving pending writes (the ones still in
 * flight are simply not applied).  Enumerating every N with (a) and (b)
 * covers the extreme choices exhaustively; (c) and (d) sample the rest.
 * raidcore runs the operations of custom members synchronously and in
 * array order, so write N is the same write in every run of a
 * deterministic workload: the trace hash (disk, offset, length, FUA of
 * every write) lets the test check that.
 *
 * Images.  A struct cs_image is a stack of copy-on-write layers of CS_PAGE
 * pages over a flat base image.  A layer is written only by the one disk
 * that owns it, and only while no other object refers to it: before a crash
 * image is taken, the disk freezes its durable layer (it moves on to a
 * fresh layer on top), so images never change once handed out.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crashsim.h"
#include "member.h"

static void *
xmalloc (size_t n)
{
  void *p = malloc (n ? n : 1);

  if (p == NULL) {
    perror ("crashsim: malloc");
    abort ();
  }
  return p;
}

static void *
xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size ? size : 1);

  if (p == NULL) {
    perror ("crashsim: calloc");
    abort ();
  }
  return p;
}

uint64_t
cs_rand (uint64_t *s)
{
  uint64_t x = *s;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t
mix64 (uint64_t x)
{
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t
cs_seed (uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
  uint64_t s = mix64 (a + 0x9e3779b97f4a7c15ull);

  s = mix64 (mix64 (mix64 (s ^ b) ^ c) ^ d);
  return s ? s : 0x2545f4914f6cdd1dull;
}

const char *
cs_mode_name (enum cs_mode mode)
{
  switch (mode) {
  case CS_LOSE_ALL: return "lose-all";
  case CS_KEEP_ALL: return "keep-all";
  case CS_SUBSET: return "subset";
  case CS_SUBSET_TORN: return "subset-torn";
  }
  return "unknown";
}

/* ------------------------------------------------------------------ */
/* Images: copy-on-write layers over a flat base. */

struct cs_image {
  int refs;
  struct cs_image *parent;       /* NULL for a base image */
  uint64_t size, npages;
  uint8_t *flat;                 /* base only: npages * CS_PAGE bytes */
  bool *zero;                    /* base only: page is all zeroes (reads of
                                    the large unused areas then cost a memset) */
  uint8_t **page;                /* layers only: private pages or NULL */
  uint64_t nprivate;             /* non-NULL entries of page[] */
};

struct cs_image *
cs_image_new (const void *buf, uint64_t size)
{
  struct cs_image *img = xcalloc (1, sizeof *img);

  img->refs = 1;
  img->size = size;
  img->npages = (size + CS_PAGE - 1) / CS_PAGE;
  img->flat = xcalloc (img->npages, CS_PAGE);
  img->zero = xcalloc (img->npages, sizeof *img->zero);
  if (buf)
    memcpy (img->flat, buf, size);
  for (uint64_t p = 0; p < img->npages; p++) {
    const uint8_t *pg = img->flat + p * CS_PAGE;
    img->zero[p] = pg[0] == 0 && memcmp (pg, pg + 1, CS_PAGE - 1) == 0;
  }
  return img;
}

static struct cs_image *
layer_new (struct cs_image *parent)
{
  struct cs_image *L = xcalloc (1, sizeof *L);

  L->refs = 1;
  L->parent = cs_image_ref (parent);
  L->size = parent->size;
  L->npages = parent->npages;
  L->page = xcalloc (L->npages, sizeof *L->page);
  return L;
}

struct cs_image *
cs_image_ref (struct cs_image *img)
{
  img->refs++;
  return img;
}

static void
layer_drop_pages (struct cs_image *L)
{
  for (uint64_t p = 0; p < L->npages && L->nprivate > 0; p++)
    if (L->page[p]) {
      free (L->page[p]);
      L->page[p] = NULL;
      L->nprivate--;
    }
}

void
cs_image_unref (struct cs_image *img)
{
  while (img && --img->refs == 0) {
    struct cs_image *parent = img->parent;

    if (img->page)
      layer_drop_pages (img);
    free (img->page);
    free (img->flat);
    free (img->zero);
    free (img);
    img = parent;
  }
}

uint64_t
cs_image_size (const struct cs_image *img)
{
  return img->size;
}

/* The content of page p as img sees it; NULL when it is a page of zeroes
 * of the base image. */
static const uint8_t *
image_page_or_null (const struct cs_image *img, uint64_t p)
{
  for (;; img = img->parent) {
    if (img->flat)
      return img->zero[p] ? NULL : img->flat + p * CS_PAGE;
    if (img->page[p])
      return img->page[p];
  }
}

static const uint8_t *
image_page (const struct cs_image *img, uint64_t p)
{
  for (;; img = img->parent) {
    if (img->flat)
      return img->flat + p * CS_PAGE;
    if (img->page[p])
      return img->page[p];
  }
}

void
cs_image_read (const struct cs_image *img, void *buf, size_t len, uint64_t off)
{
  uint8_t *out = buf;

  assert (off <= img->size && len <= img->size - off);
  while (len > 0) {
    uint64_t p = off / CS_PAGE, in = off % CS_PAGE;
    size_t n = len < CS_PAGE - in ? len : CS_PAGE - in;
    const uint8_t *pg = image_page_or_null (img, p);

    if (pg)
      memcpy (out, pg + in, n);
    else
      memset (out, 0, n);
    out += n;
    off += n;
    len -= n;
  }
}

bool
cs_image_page_written (const struct cs_image *img, uint64_t page)
{
  if (page >= img->npages)
    return false;
  for (; img && !img->flat; img = img->parent)
    if (img->page[page])
      return true;
  return false;
}

/* Write into layer L (data NULL: zeroes), copying pages up on first touch. */
static void
layer_write (struct cs_image *L, const void *data, uint64_t len, uint64_t off)
{
  const uint8_t *in_data = data;

  assert (L->page != NULL);
  while (len > 0) {
    uint64_t p = off / CS_PAGE, in = off % CS_PAGE;
    uint64_t n = len < CS_PAGE - in ? len : CS_PAGE - in;

    if (L->page[p] == NULL) {
      L->page[p] = xmalloc (CS_PAGE);
      memcpy (L->page[p], image_page (L->parent, p), CS_PAGE);
      L->nprivate++;
    }
    if (in_data) {
      memcpy (L->page[p] + in, in_data, n);
      in_data += n;
    }
    else
      memset (L->page[p] + in, 0, n);
    off += n;
    len -= n;
  }
}

/* ------------------------------------------------------------------ */
/* Worlds. */

struct cs_world {
  pthread_mutex_t lock;          /* serializes every disk operation */
  uint64_t writes;               /* completed member writes */
  uint64_t arm;                  /* crash when writes reaches it; 0 never */
  bool crashed;
  uint64_t trace;
  uint64_t *trace_log;
  size_t trace_cap;
  struct cs_write_info last;
  int ndisks;                    /* live disks, for cs_world_free's check */
};

struct cs_world *
cs_world_new (void)
{
  struct cs_world *w = xcalloc (1, sizeof *w);

  pthread_mutex_init (&w->lock, NULL);
  w->trace = 0xcbf29ce484222325ull;
  w->last.disk_id = -1;
  return w;
}

void
cs_world_free (struct cs_world *w)
{
  if (!w)
    return;
  assert (w->ndisks == 0);
  pthread_mutex_destroy (&w->lock);
  free (w);
}

void
cs_world_arm (struct cs_world *w, uint64_t n)
{
  pthread_mutex_lock (&w->lock);
  w->arm = n;
  if (n && w->writes >= n)
    w->crashed = true;
  pthread_mutex_unlock (&w->lock);
}

void
cs_world_crash_now (struct cs_world *w)
{
  pthread_mutex_lock (&w->lock);
  w->crashed = true;
  pthread_mutex_unlock (&w->lock);
}

bool
cs_world_crashed (struct cs_world *w)
{
  bool c;

  pthread_mutex_lock (&w->lock);
  c = w->crashed;
  pthread_mutex_unlock (&w->lock);
  return c;
}

uint64_t
cs_world_writes (struct cs_world *w)
{
  uint64_t n;

  pthread_mutex_lock (&w->lock);
  n = w->writes;
  pthread_mutex_unlock (&w->lock);
  return n;
}

void
cs_world_set_trace_log (struct cs_world *w, uint64_t *log, size_t cap)
{
  pthread_mutex_lock (&w->lock);
  w->trace_log = log;
  w->trace_cap = log ? cap : 0;
  pthread_mutex_unlock (&w->lock);
}

uint64_t
cs_world_trace (struct cs_world *w)
{
  uint64_t t;

  pthread_mutex_lock (&w->lock);
  t = w->trace;
  pthread_mutex_unlock (&w->lock);
  return t;
}

void
cs_world_last_write (struct cs_world *w, struct cs_write_info *out)
{
  pthread_mutex_lock (&w->lock);
  *out = w->last;
  pthread_mutex_unlock (&w->lock);
}

/* Account one completed write; caller holds w->lock. */
static void
world_count_write (struct cs_world *w, int id, uint64_t off, uint64_t len,
                   bool fua, bool zero)
{
  w->writes++;
  w->trace = mix64 (w->trace ^ mix64 ((uint64_t) id + 1));
  w->trace = mix64 (w->trace ^ off);
  w->trace = mix64 (w->trace ^ (len << 1 | fua));
  if (w->writes <= w->trace_cap)
    w->trace_log[w->writes - 1] = w->trace;
  w->last = (struct cs_write_info) { id, off, len, fua, zero };
  if (w->arm && w->writes == w->arm)
    w->crashed = true;
}

/* ------------------------------------------------------------------ */
/* Disks. */

struct pending {
  uint64_t off, len;
  uint8_t *data;                 /* NULL: zeroes */
};

struct cs_disk {
  struct cs_world *w;
  int id;
  bool failed;
  struct cs_image *dur;          /* durable layer; frozen and replaced
                                    before anything else may refer to it */
  struct cs_image *vol;          /* volatile layer over dur: durable + pending */
  struct pending *pend;          /* in completion order */
  size_t npend, cappend;
};

struct cs_disk *
cs_disk_new (struct cs_world *w, struct cs_image *img, int id)
{
  struct cs_disk *d = xcalloc (1, sizeof *d);

  d->w = w;
  d->id = id;
  d->dur = layer_new (img);
  d->vol = layer_new (d->dur);
  pthread_mutex_lock (&w->lock);
  w->ndisks++;
  pthread_mutex_unlock (&w->lock);
  return d;
}

static void
pending_clear (struct cs_disk *d)
{
  for (size_t i = 0; i < d->npend; i++)
    free (d->pend[i].data);
  d->npend = 0;
}

void
cs_disk_free (struct cs_disk *d)
{
  if (!d)
    return;
  pthread_mutex_lock (&d->w->lock);
  d->w->ndisks--;
  pthread_mutex_unlock (&d->w->lock);
  pending_clear (d);
  free (d->pend);
  cs_image_unref (d->vol);
  cs_image_unref (d->dur);
  free (d);
}

int cs_disk_id (const struct cs_disk *d) { return d->id; }
uint64_t cs_disk_size (const struct cs_disk *d) { return d->dur->size; }

void
cs_disk_set_failed (struct cs_disk *d, bool failed)
{
  pthread_mutex_lock (&d->w->lock);
  d->failed = failed;
  pthread_mutex_unlock (&d->w->lock);
}

/* Whether an operation may proceed; caller holds the lock. */
static bool
disk_usable (const struct cs_disk *d, uint64_t len, uint64_t off)
{
  return !d->w->crashed && !d->failed &&
    off <= d->dur->size && len <= d->dur->size - off;
}

int
cs_disk_pread (struct cs_disk *d, void *buf, size_t len, uint64_t off)
{
  int r = EIO;

  pthread_mutex_lock (&d->w->lock);
  if (disk_usable (d, len, off)) {
    cs_image_read (d->vol, buf, len, off);
    r = 0;
  }
  pthread_mutex_unlock (&d->w->lock);
  return r;
}

static void
pending_push (struct cs_disk *d, uint64_t off, uint64_t len, const void *src)
{
  struct pending *p;

  if (d->npend == d->cappend) {
    d->cappend = d->cappend ? 2 * d->cappend : 16;
    d->pend = realloc (d->pend, d->cappend * sizeof *d->pend);
    if (!d->pend) {
      perror ("crashsim: realloc");
      abort ();
    }
  }
  p = &d->pend[d->npend++];
  p->off = off;
  p->len = len;
  p->data = NULL;
  if (src) {
    p->data = xmalloc (len);
    memcpy (p->data, src, len);
  }
}

/* A FUA write of [off, off+len) is durable: cut that range out of every
 * older pending write, keeping order (at most one split per write). */
static void
pending_trim (struct cs_disk *d, uint64_t off, uint64_t len)
{
  size_t n = d->npend;
  struct pending *old = d->pend;

  d->pend = NULL;
  d->npend = d->cappend = 0;
  for (size_t i = 0; i < n; i++) {
    struct pending *p = &old[i];
    uint64_t pe = p->off + p->len, e = off + len;

    if (pe <= off || p->off >= e)
      pending_push (d, p->off, p->len, p->data);
    else {
      if (p->off < off)
        pending_push (d, p->off, off - p->off, p->data);
      if (pe > e)
        pending_push (d, e, pe - e, p->data ? p->data + (e - p->off) : NULL);
    }
    free (p->data);
  }
  free (old);
}

static int
disk_write (struct cs_disk *d, const void *buf, size_t len, uint64_t off,
            bool fua)
{
  int r = EIO;

  pthread_mutex_lock (&d->w->lock);
  if (disk_usable (d, len, off)) {
    /* The device takes whole sectors: a write covering part of one is
     * the whole sector as the volatile view holds it afterwards. */
    uint64_t lo = off / CS_SECTOR * CS_SECTOR;
    uint64_t hi = (off + len + CS_SECTOR - 1) / CS_SECTOR * CS_SECTOR;
    uint8_t *sec = NULL;
    layer_write (d->vol, buf, len, off);
    if (lo != off || hi != off + len) {
      sec = xmalloc (hi - lo);
      cs_image_read (d->vol, sec, hi - lo, lo);
    }
    if (fua) {
      layer_write (d->dur, sec ? sec : buf, hi - lo, lo);
      pending_trim (d, lo, hi - lo);
    }
    else
      pending_push (d, lo, hi - lo, sec ? sec : buf);
    free (sec);
    world_count_write (d->w, d->id, off, len, fua, buf == NULL);
    r = 0;
  }
  pthread_mutex_unlock (&d->w->lock);
  return r;
}

int
cs_disk_pwrite (struct cs_disk *d, const void *buf, size_t len, uint64_t off,
                bool fua)
{
  assert (buf != NULL);
  return disk_write (d, buf, len, off, fua);
}

int
cs_disk_zero (struct cs_disk *d, size_t len, uint64_t off, bool fua)
{
  return disk_write (d, NULL, len, off, fua);
}

int
cs_disk_flush (struct cs_disk *d)
{
  int r = EIO;

  pthread_mutex_lock (&d->w->lock);
  if (disk_usable (d, 0, 0)) {
    for (size_t i = 0; i < d->npend; i++)
      layer_write (d->dur, d->pend[i].data, d->pend[i].len, d->pend[i].off);
    pending_clear (d);
    layer_drop_pages (d->vol);   /* the volatile view is now the durable one */
    r = 0;
  }
  pthread_mutex_unlock (&d->w->lock);
  return r;
}

void
cs_disk_peek (struct cs_disk *d, void *buf, size_t len, uint64_t off)
{
  pthread_mutex_lock (&d->w->lock);
  cs_image_read (d->vol, buf, len, off);
  pthread_mutex_unlock (&d->w->lock);
}

void
cs_disk_peek_durable (struct cs_disk *d, void *buf, size_t len, uint64_t off)
{
  pthread_mutex_lock (&d->w->lock);
  cs_image_read (d->dur, buf, len, off);
  pthread_mutex_unlock (&d->w->lock);
}

size_t
cs_disk_npending (struct cs_disk *d)
{
  size_t n;

  pthread_mutex_lock (&d->w->lock);
  n = d->npend;
  pthread_mutex_unlock (&d->w->lock);
  return n;
}

bool
cs_disk_page_written (struct cs_disk *d, uint64_t page)
{
  bool r;

  pthread_mutex_lock (&d->w->lock);
  r = cs_image_page_written (d->vol, page);
  pthread_mutex_unlock (&d->w->lock);
  return r;
}

/* Freeze the durable layer: the disk continues on a fresh layer over it, so
 * the old one may be shared.  Caller holds the lock. */
static struct cs_image *
disk_freeze_durable (struct cs_disk *d)
{
  struct cs_image *frozen = d->dur;
  struct cs_image *fresh = layer_new (frozen);   /* holds a ref on frozen */

  /* vol's parent becomes the fresh layer, whose view equals frozen's. */
  cs_image_unref (d->vol->parent);
  d->vol->parent = cs_image_ref (fresh);
  d->dur = fresh;
  return frozen;                 /* still holds the disk's old reference */
}

/* Append to desc (NULL: nothing), truncating silently. */
static void
desc_add (char *desc, size_t desclen, const char *fmt, ...)
{
  va_list ap;
  size_t used;

  if (!desc || !desclen)
    return;
  used = strlen (desc);
  va_start (ap, fmt);
  vsnprintf (desc + used, desclen - used, fmt, ap);
  va_end (ap);
}

/* Apply pending write p to L, only the sectors selected by `how`: 0 all,
 * 1 a prefix, 2 a random subset. */
static void
apply_pending (struct cs_image *L, const struct pending *p, int how,
               uint64_t *rng, char *desc, size_t desclen)
{
  uint64_t first = p->off / CS_SECTOR;
  uint64_t last = (p->off + p->len - 1) / CS_SECTOR;
  uint64_t nsec = last - first + 1, keep = 0, applied = 0;

  if (how == 0) {
    layer_write (L, p->data, p->len, p->off);
    return;
  }
  if (how == 1)
    keep = nsec > 1 ? 1 + cs_rand (rng) % (nsec - 1) : cs_rand (rng) % 2;
  for (uint64_t s = 0; s < nsec; s++) {
    uint64_t lo = (first + s) * CS_SECTOR, hi = lo + CS_SECTOR;
    bool take = how == 1 ? s < keep : cs_rand (rng) % 2;

    if (!take)
      continue;
    lo = lo > p->off ? lo : p->off;
    hi = hi < p->off + p->len ? hi : p->off + p->len;
    layer_write (L, p->data ? p->data + (lo - p->off) : NULL, hi - lo, lo);
    applied++;
  }
  desc_add (desc, desclen, " (torn: %s %" PRIu64 "/%" PRIu64 " sectors)",
            how == 1 ? "prefix" : "random", applied, nsec);
}

struct cs_image *
cs_disk_crash_image (struct cs_disk *d, enum cs_mode mode, uint64_t *rng,
                     char *desc, size_t desclen)
{
  struct cs_image *frozen, *img;
  size_t torn = SIZE_MAX;

  if (desc && desclen)
    desc[0] = '\0';
  pthread_mutex_lock (&d->w->lock);
  frozen = disk_freeze_durable (d);
  img = layer_new (frozen);
  cs_image_unref (frozen);       /* img and the fresh durable layer hold it */
  if (mode == CS_SUBSET_TORN && d->npend > 0)
    torn = cs_rand (rng) % d->npend;
  desc_add (desc, desclen, "%zu pending", d->npend);
  if (d->npend > 0)
    desc_add (desc, desclen, ", applied:");
  for (size_t i = 0; i < d->npend; i++) {
    bool take = mode == CS_KEEP_ALL ||
      ((mode == CS_SUBSET || mode == CS_SUBSET_TORN) && cs_rand (rng) % 2);

    if (i == torn) {
      desc_add (desc, desclen, " %zu", i);
      apply_pending (img, &d->pend[i], 1 + (int) (cs_rand (rng) % 2), rng,
                     desc, desclen);
    }
    else if (take) {
      desc_add (desc, desclen, " %zu", i);
      apply_pending (img, &d->pend[i], 0, rng, NULL, 0);
    }
  }
  pthread_mutex_unlock (&d->w->lock);
  return img;
}

/* ------------------------------------------------------------------ */
/* The raidcore member. */

static int
m_pread (void *priv, void *buf, size_t len, uint64_t off)
{
  return cs_disk_pread (priv, buf, len, off);
}

static int
m_pwrite (void *priv, const void *buf, size_t len, uint64_t off, bool fua)
{
  return cs_disk_pwrite (priv, buf, len, off, fua);
}

static int
m_zero (void *priv, size_t len, uint64_t off, bool fua)
{
  return cs_disk_zero (priv, len, off, fua);
}

static int
m_flush (void *priv)
{
  return cs_disk_flush (priv);
}

static const struct member_custom_ops cs_member_ops = {
  .pread = m_pread, .pwrite = m_pwrite, .flush = m_flush, .zero = m_zero,
};

struct member *
cs_disk_member (struct cs_disk *d, const char *name)
{
  struct member *m = member_new_custom (name, cs_disk_size (d),
                                       &cs_member_ops, d);

  if (m == NULL) {
    perror ("crashsim: member_new_custom");
    abort ();
  }
  return m;
}
