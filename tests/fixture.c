/* nbdkit-raid: in-memory array fixture (see fixture.h). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "create.h"
#include "parity.h"
#include "sb.h"
#include "util.h"
#include "fixture.h"

int checks, failures;



static int
md_pread (void *p, void *buf, size_t len, uint64_t off)
{
  struct memdev *d = p;
  __atomic_add_fetch (&d->nreads, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->rbytes, len, __ATOMIC_RELAXED);
  if (d->fail_reads || off + len > d->size || (off < d->bad_hi && off + len > d->bad_lo))
    return EIO;
  memcpy (buf, d->data + off, len);
  return 0;
}

static int
md_pwrite (void *p, const void *buf, size_t len, uint64_t off, bool fua)
{
  struct memdev *d = p;
  __atomic_add_fetch (&d->nwrites, 1, __ATOMIC_RELAXED);
  if (d->fail_writes || off + len > d->size)
    return EIO;
  memcpy (d->data + off, buf, len);
  return 0;
}

static int
md_flush (void *p)
{
  struct memdev *d = p;
  __atomic_add_fetch (&d->nflushes, 1, __ATOMIC_RELAXED);
  return d->fail_writes ? EIO : 0;
}

const struct member_custom_ops md_ops = {
  .pread = md_pread, .pwrite = md_pwrite, .flush = md_flush,
};

/* ---- random ---- */
uint64_t rng_state;
uint64_t
rnd (void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}



struct raid_assemble_opts fixture_opts;
int fixture_consistency;

void
make_array_ex (struct fixture *f, int level, int layout, int n, uint32_t chunk,
               uint64_t member_size, uint64_t data_offset)
{
  char path[RAID_MAX_MEMBERS][64], err[512];
  const char *specs[RAID_MAX_MEMBERS];
  struct member *ms[RAID_MAX_MEMBERS];
  uint8_t uuid[RAID_UUID_LEN];
  struct raid_create_opts o = {
    .level = level, .layout = layout, .chunk = chunk, .size = member_size,
    .data_offset = data_offset, .assume_clean = true, .nmembers = n,
    .members = specs, .consistency = fixture_consistency,
  };
  const char *dir = access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

  memset (f, 0, sizeof *f);
  f->level = level; f->layout = layout; f->n = n; f->chunk = chunk;
  f->data_offset = data_offset;
  f->member_size = member_size;
  for (int i = 0; i < n; i++) {
    snprintf (path[i], sizeof path[i], "%s/test-stripe-%d-%d", dir, (int) getpid (), i);
    unlink (path[i]);
    specs[i] = path[i];
  }
  if (raid_create (&o, uuid, err, sizeof err) < 0) {
    fprintf (stderr, "raid_create: %s\n", err);
    exit (1);
  }
  for (int i = 0; i < n; i++) {
    FILE *fp = fopen (path[i], "rb");
    f->dev[i].size = f->member_size;
    f->dev[i].data = calloc (1, f->member_size);
    if (!fp || fread (f->dev[i].data, 1, f->member_size, fp) != f->member_size) {
      perror (path[i]);
      exit (1);
    }
    fclose (fp);
    unlink (path[i]);
  }
  /* Assemble in reverse order: roles come from the superblocks. */
  for (int i = 0; i < n; i++) {
    int j = n - 1 - i;
    ms[i] = member_new_custom (path[j], f->member_size, &md_ops, &f->dev[j]);
  }
  if (raid_array_assemble (ms, n, &fixture_opts, &f->a,
                           err, sizeof err) < 0) {
    fprintf (stderr, "assemble: %s\n", err);
    exit (1);
  }
  f->size = raid_array_size (f->a);
  f->model = calloc (1, f->size);
}

void
free_array (struct fixture *f)
{
  raid_array_close (f->a);
  for (int i = 0; i < f->n; i++)
    free (f->dev[i].data);
  free (f->model);
}

/* Every row's parity, checked directly on the member buffers (roles are
 * member indexes because raid_create gave member i role i). */
int
verify_parity (struct fixture *f, uint32_t skip_mask)
{
  struct raid_geom g;
  struct raid_row rr;
  char err[128];
  int bad = 0;

  raid_geom_init (&g, f->level, f->layout, f->chunk, f->n, err, sizeof err);
  if (g.level == 0)
    return 0;
  for (uint64_t row = 0; row < (f->member_size - f->data_offset) / f->chunk; row++) {
    void *blk[RAID_MAX_MEMBERS + 2];
    uint64_t off = f->data_offset + row * f->chunk;
    if (g.level == 1) {
      for (int r = 1; r < f->n; r++)
        if (!(skip_mask & (1u << r)) && !(skip_mask & 1) &&
            memcmp (f->dev[0].data + off, f->dev[r].data + off, f->chunk))
          bad++;
      continue;
    }
    raid_geom_row (&g, row, &rr);
    if (skip_mask)
      continue;                      /* degraded rows: checked via reads */
    for (int i = 0; i < g.data_disks; i++)
      blk[g.level == 6 ? rr.slot[i] : i] = f->dev[rr.data[i]].data + off;
    blk[g.data_disks] = f->dev[rr.pd].data + off;
    if (g.level == 6)
      blk[g.data_disks + 1] = f->dev[rr.qd].data + off;
    if (parity_check (g.data_disks, g.parity_disks, f->chunk, blk) != 1)
      bad++;
  }
  return bad;
}

void
verify_contents (struct fixture *f, const char *when)
{
  uint8_t *buf = malloc (f->size);
  int r = raid_array_pread (f->a, buf, f->size, 0);

  CHECK (r == 0, "%s: full read: %s", when, strerror (r));
  if (r == 0) {
    uint64_t i;
    for (i = 0; i < f->size && buf[i] == f->model[i]; i++)
      ;
    CHECK (i == f->size, "%s: raid%d %s n=%d chunk=%u: first difference at %" PRIu64,
           when, f->level, raid_layout_name (f->layout), f->n, f->chunk, i);
  }
  free (buf);
}

/* One random operation: write / zero / read, checked against the model. */
void
random_op (struct fixture *f, uint8_t *tmp, uint64_t maxlen)
{
  uint64_t kind = rnd () % 10;
  uint64_t len = 1 + rnd () % maxlen;
  uint64_t off;

  if (rnd () % 4 == 0)       /* aligned to chunk or row boundaries */
    len = raid_round_up (len, f->chunk);
  if (len > f->size)
    len = f->size;
  off = rnd () % (f->size - len + 1);
  if (rnd () % 3 == 0)
    off = raid_round_down (off, f->chunk) + (rnd () % 3 == 0 ? 1 : 0);
  if (off + len > f->size)
    off = f->size - len;

  if (kind < 6) {
    uint8_t v = rnd ();
    for (uint64_t i = 0; i < len; i++)
      tmp[i] = v + i * 7;
    int r = raid_array_pwrite (f->a, tmp, len, off, kind == 0 ? RAID_IO_FUA : 0);
    CHECK (r == 0, "pwrite %" PRIu64 "+%" PRIu64 ": %s", off, len, strerror (r));
    memcpy (f->model + off, tmp, len);
  }
  else if (kind < 7) {
    int r = raid_array_zero (f->a, len, off, 0, false);
    CHECK (r == 0, "zero %" PRIu64 "+%" PRIu64 ": %s", off, len, strerror (r));
    memset (f->model + off, 0, len);
  }
  else {
    int r = raid_array_pread (f->a, tmp, len, off);
    CHECK (r == 0 && memcmp (tmp, f->model + off, len) == 0,
           "pread %" PRIu64 "+%" PRIu64 " mismatch (r=%d)", off, len, r);
  }
}

void
workload (struct fixture *f, int nops)
{
  uint64_t maxlen = 3 * (uint64_t) f->chunk * f->n;
  uint8_t *tmp = malloc (maxlen + f->chunk);

  for (int i = 0; i < nops; i++)
    random_op (f, tmp, i % 5 == 0 ? maxlen : 9000);
  free (tmp);
}
void
make_array (struct fixture *f, int level, int layout, int n, uint32_t chunk)
{
  make_array_ex (f, level, layout, n, chunk, 8u << 20, 4u << 20);
}

int
test_summary (const char *name)
{
  mio_shutdown ();
  if (failures) {
    fprintf (stderr, "%s: %d of %d checks failed\n", name, failures, checks);
    return 1;
  }
  printf ("%s: %d checks passed\n", name, checks);
  return 0;
}
