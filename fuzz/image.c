/* nbdkit-raid fuzzing: member images and scenarios (see image.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array.h"
#include "create.h"
#include "fuzz.h"
#include "image.h"
#include "util.h"

/* ---- images ---- */

struct img *
img_new (uint64_t size, const char *name)
{
  struct img *im = calloc (1, sizeof *im);

  if (!im)
    abort ();
  im->size = size;
  im->npages = (size + IMG_PAGE - 1) / IMG_PAGE;
  im->page = calloc (im->npages, sizeof *im->page);
  im->name = name;
  if (!im->page)
    abort ();
  return im;
}

struct img *
img_clone (const struct img *src)
{
  struct img *im = img_new (src->size, src->name);

  for (uint64_t p = 0; p < src->npages; p++)
    if (src->page[p]) {
      if (!(im->page[p] = malloc (IMG_PAGE)))
        abort ();
      memcpy (im->page[p], src->page[p], IMG_PAGE);
    }
  return im;
}

void
img_free (struct img *im)
{
  if (!im)
    return;
  for (uint64_t p = 0; p < im->npages; p++)
    free (im->page[p]);
  free (im->page);
  free (im);
}

void
img_read (const struct img *im, void *buf, uint64_t len, uint64_t off)
{
  uint8_t *b = buf;

  while (len > 0) {
    uint64_t p = off / IMG_PAGE, in = off % IMG_PAGE;
    uint64_t n = raid_min_u64 (len, IMG_PAGE - in);
    if (im->page[p])
      memcpy (b, im->page[p] + in, n);
    else
      memset (b, 0, n);
    b += n; off += n; len -= n;
  }
}

void
img_write (struct img *im, const void *buf, uint64_t len, uint64_t off)
{
  const uint8_t *b = buf;

  while (len > 0) {
    uint64_t p = off / IMG_PAGE, in = off % IMG_PAGE;
    uint64_t n = raid_min_u64 (len, IMG_PAGE - in);
    if (!im->page[p] && !(im->page[p] = calloc (1, IMG_PAGE)))
      abort ();
    if (b)
      memcpy (im->page[p] + in, b, n);
    else
      memset (im->page[p] + in, 0, n);
    if (b)
      b += n;
    off += n; len -= n;
  }
}

/* ---- the write oracle ---- */

static bool oracle_armed;
static struct img_area oracle_areas[2 * RAID_MAX_MEMBERS + 1];
static int oracle_n;

void
img_oracle (bool armed, const struct img_area *areas, int n)
{
  oracle_armed = armed;
  oracle_n = n;
  if (n)
    memcpy (oracle_areas, areas, n * sizeof *areas);
}

static void
oracle_check (const struct img *im, const void *buf, uint64_t len, uint64_t off)
{
  if (!oracle_armed || len == 0)
    return;
  if (off < SB_RING_SIZE) {
    static struct raid_sb sb;
    static const uint8_t zero[SB_SLOT_SIZE];
    if (off % SB_SLOT_SIZE || len % SB_SLOT_SIZE || len > SB_RING_SIZE - off)
      fuzz_fail ("%s: write of %llu bytes at %llu: not whole superblock slots",
                 im->name, (unsigned long long) len, (unsigned long long) off);
    for (uint64_t k = 0; k < len; k += SB_SLOT_SIZE) {
      const uint8_t *slot = buf ? (const uint8_t *) buf + k : zero;
      if (memcmp (slot, zero, SB_SLOT_SIZE) != 0 && sb_decode (slot, &sb, NULL, 0) != 0)
        fuzz_fail ("%s: write at %llu puts a slot that is no valid record in the "
                   "superblock ring", im->name, (unsigned long long) (off + k));
    }
    return;
  }
  if (oracle_n == 0)
    return;
  for (int i = 0; i < oracle_n; i++)
    if (off >= oracle_areas[i].lo && off + len <= oracle_areas[i].hi)
      return;
  fuzz_fail ("%s: write of %llu bytes at %llu outside the metadata and data areas",
             im->name, (unsigned long long) len, (unsigned long long) off);
}

/* ---- images as members ---- */

static int
im_pread (void *priv, void *buf, size_t len, uint64_t off)
{
  struct img *im = priv;

  if (off > im->size || len > im->size - off)
    return EIO;
  img_read (im, buf, len, off);
  return 0;
}

static int
im_pwrite (void *priv, const void *buf, size_t len, uint64_t off, bool fua)
{
  struct img *im = priv;

  if (off > im->size || len > im->size - off)
    return EIO;
  oracle_check (im, buf, len, off);
  img_write (im, buf, len, off);
  return 0;
}

static int
im_zero (void *priv, size_t len, uint64_t off, bool fua)
{
  struct img *im = priv;

  if (off > im->size || len > im->size - off)
    return EIO;
  oracle_check (im, NULL, len, off);
  img_write (im, NULL, len, off);
  return 0;
}

static int im_flush (void *priv) { return 0; }

static const struct member_custom_ops img_ops = {
  .pread = im_pread, .pwrite = im_pwrite, .flush = im_flush, .zero = im_zero,
};

struct member *
img_member (struct img *im)
{
  struct member *m = member_new_custom (im->name, im->size, &img_ops, im);

  if (!m)
    abort ();
  return m;
}

/* ---- scenarios ---- */

#define CHUNK 4096u
#define DOFF ((uint64_t) RAID_META_END + (64u << 10))   /* 64 KiB head room */
#define MSIZE (DOFF + 64 * CHUNK)

static struct scenario scenarios[SC_COUNT];
static bool built[SC_COUNT];
static struct img *adding[RAID_MAX_MEMBERS];           /* open hook's members */

static void __attribute__ ((noreturn))
die (const char *what, const char *err)
{
  fprintf (stderr, "fuzz: cannot build the scenario: %s: %s\n", what, err);
  exit (1);
}

static struct member *
open_hook (const char *spec)
{
  int i;

  if (sscanf (spec, "fuzz-add:%d", &i) == 1 && i >= 0 && i < RAID_MAX_MEMBERS &&
      adding[i])
    return img_member (adding[i]);
  return NULL;
}

/* raid_create on tmpfs files of MSIZE, loaded into images. */
static void
create_images (struct scenario *s, int level, int n, int nspares, int consistency)
{
  const char *dir = access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  char path[RAID_MAX_MEMBERS][96], err[512];
  const char *specs[RAID_MAX_MEMBERS];
  uint8_t uuid[RAID_UUID_LEN], *buf = malloc (MSIZE);
  struct raid_create_opts o = {
    .level = level, .layout = -1, .chunk = CHUNK, .size = MSIZE,
    .consistency = consistency, .data_offset = DOFF, .assume_clean = true,
    .nmembers = n, .members = specs, .nspares = nspares, .spares = specs + n,
  };

  for (int i = 0; i < n + nspares; i++) {
    snprintf (path[i], sizeof path[i], "%s/fuzz-raid-%d-%d", dir, (int) getpid (), i);
    unlink (path[i]);
    specs[i] = path[i];
  }
  if (!buf || raid_create (&o, uuid, err, sizeof err) < 0)
    die ("create", err);
  for (int i = 0; i < n + nspares; i++) {
    static const char *const names[] = { "fuzz-m0", "fuzz-m1", "fuzz-m2", "fuzz-m3",
                                         "fuzz-m4", "fuzz-m5" };
    FILE *fp = fopen (path[i], "rb");
    if (!fp || fread (buf, 1, MSIZE, fp) != MSIZE)
      die (path[i], "read");
    fclose (fp);
    unlink (path[i]);
    s->im[i] = img_new (MSIZE, names[i]);
    for (uint64_t off = 0; off < MSIZE; off += IMG_PAGE) {
      static const uint8_t zero[IMG_PAGE];
      if (memcmp (buf + off, zero, IMG_PAGE) != 0)
        img_write (s->im[i], buf + off, IMG_PAGE, off);
    }
  }
  s->n = n + nspares;
  free (buf);
}

static struct raid_array *
assemble_images (struct scenario *s)
{
  struct member *ms[RAID_MAX_MEMBERS];
  struct raid_array *a;
  char err[512];

  for (int i = 0; i < s->n; i++)
    ms[i] = img_member (s->im[i]);
  if (raid_array_assemble (ms, s->n, &(struct raid_assemble_opts) { 0 }, &a,
                           err, sizeof err) < 0)
    die ("assemble", err);
  return a;
}

/* Writes of every shape (partial rows logged with their data, full rows as
 * intents), deterministic. */
static void
write_pattern (struct raid_array *a, uint64_t seed, int nops)
{
  uint64_t size = raid_array_size (a), x = seed;
  uint8_t *buf = malloc (5 * CHUNK * 4);

  for (int i = 0; i < nops && buf; i++) {
    uint64_t len, off;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    len = 1 + x % (5 * CHUNK * 4);
    if (len > size)
      len = size;
    off = (x >> 20) % (size - len + 1);
    memset (buf, (int) (x >> 8), len);
    if (raid_array_pwrite (a, buf, len, off, 0) != 0)
      die ("write", "failed");
  }
  free (buf);
}

/* The images as they are now, as a crash would leave them. */
static void
capture (struct scenario *s, struct img **live, int n)
{
  struct member *m;
  char err[256];

  for (int i = 0; i < n; i++)
    s->im[i] = img_clone (live[i]);
  s->n = n;
  m = img_member (s->im[0]);
  if (sb_read_newest (m, &s->sb, err, sizeof err) != 0)
    die ("capture", err);
  member_close (m);
}

static void
build (int id)
{
  struct scenario *s = &scenarios[id], live = { 0 };
  struct raid_array *a;
  char err[512];

  switch (id) {
  case SC_RAID5_JOURNAL:
  case SC_RAID5_BITMAP:
  case SC_RAID4_RESYNC:
    s->name = id == SC_RAID5_JOURNAL ? "raid5-journal" : id == SC_RAID5_BITMAP
      ? "raid5-bitmap" : "raid4-resync";
    create_images (&live, id == SC_RAID4_RESYNC ? 4 : 5,
                   id == SC_RAID4_RESYNC ? 3 : 4, id == SC_RAID4_RESYNC,
                   id == SC_RAID5_JOURNAL ? SB_CONS_JOURNAL
                   : id == SC_RAID5_BITMAP ? SB_CONS_BITMAP : SB_CONS_RESYNC);
    a = assemble_images (&live);
    write_pattern (a, 0x9e3779b97f4a7c15 + id, 40);
    capture (s, live.im, live.n);
    raid_array_close (a);
    break;

  case SC_RAID6_RESHAPE: {
    const char *add[] = { "fuzz-add:4" };
    struct raid_reshape_req req = { .level = -1, .layout = -1, .nadd = 1, .add = add };
    struct raid_test_hooks h = { .reshape_window = 6 * 2 * CHUNK, .reshape_pause = true };
    s->name = "raid6-reshape";
    create_images (&live, 6, 4, 0, SB_CONS_JOURNAL);
    live.im[4] = adding[4] = img_new (MSIZE, "fuzz-m4");
    live.n = 5;
    member_set_open_hook (open_hook);
    live.n = 4;
    a = assemble_images (&live);
    live.n = 5;
    write_pattern (a, 77, 20);
    raid_array_set_test_hooks (a, &h);
    if (raid_array_start (a) != 0 ||
        raid_array_reshape (a, &req, NULL, err, sizeof err) != 0 ||
        raid_array_start_action (a, err, sizeof err) != 0)
      die ("reshape", err);
    raid_array_wait (a, 60);
    write_pattern (a, 78, 30);             /* both layouts */
    capture (s, live.im, live.n);
    raid_array_close (a);
    member_set_open_hook (NULL);
    adding[4] = NULL;
    break;
  }
  }
  if (id == SC_RAID6_RESHAPE && s->sb.reshape_position == 0)
    die ("reshape", "no window moved");
  for (int i = 0; i < live.n; i++)
    img_free (live.im[i]);
  built[id] = true;
}

/* Quiet unless FUZZ_VERBOSE is set: a crafted member makes noise. */
static void
log_sink (enum raid_log_level lvl, const char *msg)
{
  if (getenv ("FUZZ_VERBOSE"))
    fprintf (stderr, "%s\n", msg);
}

const struct scenario *
scenario_get (int i)
{
  i = (unsigned) i % SC_COUNT;
  if (!built[i]) {
    raid_log_set_sink (log_sink);
    /* A record the product writes that its readers would skip is a
     * finding too (sb.c's check_written aborts). */
    setenv ("RAIDCORE_STRICT_RECORDS", "1", 1);
    build (i);
  }
  return &scenarios[i];
}

void
scenario_free_all (void)
{
  for (int i = 0; i < SC_COUNT; i++)
    if (built[i]) {
      for (int k = 0; k < scenarios[i].n; k++)
        img_free (scenarios[i].im[k]);
      built[i] = false;
    }
}

int
scenario_areas (const struct scenario *s, struct img_area *areas, int max)
{
  const struct raid_sb *sb = &s->sb;
  uint64_t area1 = sb_layout_rows (sb, true) * sb->new_chunk;
  int n = 0;

  areas[n++] = (struct img_area) { sb->cons_offset, sb->cons_offset + sb->cons_size };
  for (uint32_t t = 0; t < sb->nmembers && n + 2 <= max; t++) {
    const struct sb_member_entry *e = &sb->members[t];
    if (e->state == SB_MEMBER_EMPTY)
      continue;
    areas[n++] = (struct img_area) { e->data_offset, e->data_offset + sb->component_size };
    if (sb->reshape_state != SB_RESHAPE_NONE)
      areas[n++] = (struct img_area) { e->new_data_offset, e->new_data_offset + area1 };
  }
  return n;
}

static int
count_extent (void *opaque, uint64_t off, uint64_t len, bool zero)
{
  (*(uint64_t *) opaque) += len;
  return 0;
}

int
fuzz_assemble_and_use (struct img **ims, int n, bool force, char *err, size_t errlen)
{
  struct member *ms[RAID_MAX_MEMBERS];
  struct raid_assemble_opts o = { .force = force };
  struct raid_status *st;
  struct raid_array *a;
  uint64_t size, seen = 0;
  uint8_t *buf;

  for (int i = 0; i < n; i++)
    ms[i] = img_member (ims[i]);
  if (raid_array_assemble (ms, n, &o, &a, err, errlen) < 0)
    return -1;
  size = raid_array_size (a);
  buf = malloc (64 << 10);
  st = malloc (sizeof *st);
  if (!buf || !st)
    abort ();
  if (raid_array_start (a) == 0) {
    raid_array_pread (a, buf, raid_min_u64 (size, 64 << 10), 0);
    if (size >= 8192) {
      memset (buf, 0xa5, 8192);
      raid_array_pwrite (a, buf, 8192, size / 2 - size / 2 % 4096, 0);
      raid_array_pread (a, buf, 8192, size - 8192);
    }
    raid_array_flush (a);
    raid_array_extents (a, size, 0, count_extent, &seen);
    if (raid_array_health (a) != RAID_HEALTH_FAILED && seen != size)
      fuzz_fail ("extents cover %llu of %llu bytes", (unsigned long long) seen,
                 (unsigned long long) size);
    raid_array_status (a, st);
  }
  raid_array_close (a);
  free (st);
  free (buf);
  return 0;
}
