/* nbdkit-raid: creating an array (writing the first superblock records).
 *
 * Theory of operation
 * -------------------
 * raid_create runs in two phases separated by one point of no return.
 *
 *   1. Validate.  Nothing is written and nothing is created.  The options
 *      (level, layout, chunk, consistency, data offset, member count) are
 *      checked, then every member and spare in turn: that no member is named
 *      twice (the same path spelled differently, a symlink, a hard link or a
 *      second node of the same block device all count), that it can be
 *      opened read-write (or, for a missing path, that --size was given so
 *      it can be created), that it is large enough, and that it does not
 *      already hold a superblock record unless force is set, nor (when the
 *      caller gave a probe) a foreign signature: a filesystem, partition
 *      table, RAID or LVM label, again unless force is set.  Finally the
 *      data areas of existing members are inspected to decide whether the
 *      new array needs an initial resync.  Last, when an NBD export is among
 *      the existing members, distinct storage is proven: names cannot tell
 *      that an export serves a file named beside it, or that two URIs reach
 *      one export.  Each existing member's first block is read and kept, a
 *      marker of its own is written there, every member reads its block
 *      back (a member that reads another's marker shares its storage), and
 *      the kept blocks are written back: the one write of phase 1, undone
 *      before it returns (a crash in between leaves a marker in the
 *      metadata area that phase 2 would have zeroed).
 *
 *   2. Write.  Missing member files are created sparse, the metadata area
 *      [0, RAID_META_END) of every pre-existing member is zeroed so that no
 *      record or log entry of an earlier array can resurface, the magic
 *      bytes of foreign signatures that force overrode are zeroed wherever
 *      they are (so that blkid, mdadm or LVM no longer claim the member),
 *      and the first record (events 1) is appended to every member with
 *      sb_append_all, which returns only when every record is durable.
 *
 * Invariant: a failure in phase 1 leaves every member byte-for-byte as it
 * was (the distinctness probe's block is written back; a file's mtime may
 * move), and no file is created.  A failure in phase 2 removes the files this
 * call created; pre-existing members may then have lost their old records
 * (the message says so).
 *
 * Sizes.  A member's usable size is its actual size, or exactly --size when
 * that was given (an existing member larger than --size only contributes its
 * first --size bytes; a smaller one is refused).  A member must hold at least
 * data_offset + RAID_CREATE_MIN_CHUNKS chunks.  All roles use the same
 * component size: the smallest usable size of the role members minus the
 * data offset, rounded down to the chunk.  Spares do not shrink the array:
 * a spare must hold data_offset + component size.  When the members and
 * spares differ in size, the smallest role member sets the component size
 * and a successful create says so (which member, and how much of each
 * larger one is unused): a user who mixed a 1T and a 2T disk learns that 1T
 * of the second is idle.
 *
 * Initial sync.  The record says the array is in sync (resync_offset
 * UINT64_MAX) when --assume-clean was given, for raid0 (nothing to sync), or
 * when every role member's data area reads as zeroes (all-zero data has
 * all-zero P and Q, and raid1 mirrors agree).  New sparse files are zero by
 * construction; existing regular files are checked with SEEK_DATA/SEEK_HOLE,
 * reading only allocated extents; block devices and NBD exports are read.
 * At most RAID_CREATE_ZERO_SCAN_MAX bytes are read per member; beyond that
 * the member is assumed to hold data and the server resyncs (offset 0).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <isa-l/mem_routines.h>

#include "create.h"
#include "geometry.h"
#include "member.h"
#include "sb.h"
#include "util.h"

/* Smallest data area a member may have, in chunks. */
#define RAID_CREATE_MIN_CHUNKS 2
/* Most bytes read per member to prove its data area is zero. */
#define RAID_CREATE_ZERO_SCAN_MAX (UINT64_C(256) << 20)
#define SCAN_BUF (UINT64_C(1) << 20)
/* Keeps data_offset + any size sums far from overflow. */
#define RAID_CREATE_DATA_OFFSET_MAX (UINT64_C(1) << 60)

/* One member or spare during create. */
struct cmember {
  const char *spec;          /* as given */
  int role;                  /* 0..n-1, or -1 for a spare */
  bool is_uri;               /* NBD URI: opened by member_open, never created */
  bool exists;               /* path existed at validation time (URIs: true) */
  bool regular;              /* regular file: zero check with SEEK_DATA */
  bool have_id;              /* dev/ino/rdev valid */
  dev_t dev, rdev;
  ino_t ino;
  char *canon;               /* canonical name for duplicate detection */
  uint64_t size;             /* usable size */
  struct member *m;          /* open member (phase 1 for existing ones) */
  bool created;              /* we created the file in phase 2 */
  struct raid_create_sigs sigs; /* foreign signatures found (with force) */
};

struct create_ctx {
  const struct raid_create_opts *o;
  struct raid_geom g;
  uint32_t chunk;
  int layout, consistency;
  uint64_t data_offset;
  uint64_t min_member;       /* smallest acceptable usable size */
  uint64_t component_size, array_size;
  bool in_sync;
  int n;                     /* members + spares */
  int smallest;              /* the role member that sets component_size */
  bool sizes_differ;         /* usable sizes of members and spares differ */
  struct cmember *cm;
  char *err;
  size_t errlen;
  int code;                  /* errno value of the refusal in err */
};

/* Refuse: the message goes to c->err, code (an errno value) to c->code.
 * Returns -1.  A %m in fmt reads errno, which nothing here changes first. */
static int __attribute__ ((format (printf, 3, 4)))
create_fail (struct create_ctx *c, int code, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (c->err, c->errlen, fmt, ap);
  va_end (ap);
  c->code = code;
  return -1;
}

static bool
spec_is_uri (const char *spec)
{
  static const char *const schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
  };

  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    if (strncmp (spec, schemes[i], strlen (schemes[i])) == 0)
      return true;
  return false;
}

/* ---- phase 1: options ---- */

static int
create_check_geometry (struct create_ctx *c)
{
  const struct raid_create_opts *o = c->o;
  int level = o->level;

  if (level != 0 && level != 1 && level != 4 && level != 5 && level != 6)
    return create_fail (c, EINVAL, "raid level %d is not supported "
                        "(0, 1, 4, 5 or 6)", level);
  c->chunk = o->chunk ? o->chunk : RAID_CHUNK_DEFAULT;
  if (!raid_is_pow2 (c->chunk) ||
      c->chunk < RAID_CHUNK_MIN || c->chunk > RAID_CHUNK_MAX) {
    return create_fail (c, EINVAL, "chunk %" PRIu32 " is not a power of two "
                        "between 4K and 64M", c->chunk);
  }
  c->layout = o->layout < 0 ? raid_layout_default (level) : o->layout;
  if (!raid_layout_valid_for_level (level, c->layout)) {
    const char *name = raid_layout_name (c->layout);
    if (name)
      create_fail (c, EINVAL, "layout %s does not exist for raid%d",
                   name, level);
    else
      create_fail (c, EINVAL, "layout %d does not exist", c->layout);
    return -1;
  }
  if (o->nmembers < 1 || o->members == NULL)
    return create_fail (c, EINVAL, "raid%d needs members", level);
  return raid_geom_init (&c->g, level, c->layout, c->chunk, o->nmembers,
                         c->err, c->errlen);
}

static int
create_check_options (struct create_ctx *c)
{
  const struct raid_create_opts *o = c->o;

  if (create_check_geometry (c) == -1)
    return -1;
  if (o->nspares < 0 || (o->nspares > 0 && o->spares == NULL) ||
      o->nmembers + o->nspares > SB_MAX_MEMBERS) {
    return create_fail (c, EINVAL,
                        "too many members (%d with spares, at most %d)",
                        o->nmembers + o->nspares, SB_MAX_MEMBERS);
  }
  c->consistency = o->consistency ? o->consistency : SB_CONS_JOURNAL;
  if (c->consistency != SB_CONS_JOURNAL && c->consistency != SB_CONS_BITMAP &&
      c->consistency != SB_CONS_RESYNC) {
    return create_fail (c, EINVAL, "unknown consistency policy %d",
                        c->consistency);
  }
  c->data_offset = o->data_offset ? o->data_offset : RAID_DATA_OFFSET_DEFAULT;
  if (c->data_offset % 4096 != 0)
    return create_fail (c, EINVAL,
                        "data offset %" PRIu64 " is not a multiple of 4K",
                        c->data_offset);
  if (c->data_offset > RAID_CREATE_DATA_OFFSET_MAX)
    return create_fail (c, EINVAL, "data offset %" PRIu64 " is too large",
                        c->data_offset);
  if (c->data_offset < RAID_META_END)
    return create_fail (c, EINVAL, "data offset %" PRIu64 " is below the "
                        "end of the metadata area (%u bytes: superblock "
                        "journal and consistency area)",
                        c->data_offset, RAID_META_END);
  c->min_member = c->data_offset + (uint64_t) RAID_CREATE_MIN_CHUNKS * c->chunk;
  if (o->size > INT64_MAX)
    return create_fail (c, EINVAL, "size %" PRIu64 " is too large", o->size);
  if (o->size && o->size < c->min_member)
    return create_fail (c, EINVAL,
                        "size %" PRIu64 " is too small for a member "
                        "(needs at least %" PRIu64 ")", o->size, c->min_member);
  return 0;
}

/* ---- phase 1: naming ---- */

/* Canonical name of a path that may not exist yet: realpath of the path,
 * or realpath of its directory plus its last component. */
static char *
canonical_path (const char *path, bool exists)
{
  char *dcopy, *bcopy, *dir, *res = NULL;

  if (exists)
    return realpath (path, NULL);
  dcopy = strdup (path);
  bcopy = strdup (path);
  if (dcopy && bcopy) {
    dir = realpath (dirname (dcopy), NULL);
    if (dir && asprintf (&res, "%s/%s", dir, basename (bcopy)) == -1)
      res = NULL;
    free (dir);
  }
  free (dcopy);
  free (bcopy);
  return res;
}

/* Stat and name one member spec. */
static int
create_resolve (struct create_ctx *c, struct cmember *cm)
{
  struct stat st;

  cm->is_uri = spec_is_uri (cm->spec);
  if (cm->is_uri) {
    cm->exists = true;
    cm->canon = strdup (cm->spec);
  }
  else if (stat (cm->spec, &st) == 0) {
    if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode))
      return create_fail (c, EINVAL,
                          "%s: not a regular file or block device", cm->spec);
    cm->exists = true;
    cm->regular = S_ISREG (st.st_mode);
    cm->have_id = true;
    cm->dev = st.st_dev;
    cm->ino = st.st_ino;
    cm->rdev = S_ISBLK (st.st_mode) ? st.st_rdev : 0;
    cm->canon = canonical_path (cm->spec, true);
  }
  else if (errno == ENOENT)
    cm->canon = canonical_path (cm->spec, false);
  if (cm->canon == NULL)
    return create_fail (c, errno, "%s: %m", cm->spec);
  return 0;
}

static bool
same_member (const struct cmember *a, const struct cmember *b)
{
  if (strcmp (a->canon, b->canon) == 0)
    return true;
  if (a->have_id && b->have_id) {
    if (a->dev == b->dev && a->ino == b->ino)
      return true;
    if (a->rdev && a->rdev == b->rdev)
      return true;
  }
  return false;
}

/* Resolve every spec and refuse one that is named twice. */
static int
create_check_names (struct create_ctx *c)
{
  for (int i = 0; i < c->n; i++) {
    struct cmember *cm = &c->cm[i];

    if (create_resolve (c, cm) == -1)
      return -1;
    for (int j = 0; j < i; j++) {
      if (!same_member (&c->cm[j], cm))
        continue;
      if (strcmp (c->cm[j].spec, cm->spec) == 0)
        create_fail (c, EINVAL, "%s is named twice", cm->spec);
      else
        create_fail (c, EINVAL, "%s is named twice (as %s and %s)",
                     cm->canon, c->cm[j].spec, cm->spec);
      return -1;
    }
  }
  return 0;
}

/* ---- phase 1: each member ---- */

static int
too_small (struct create_ctx *c, const struct cmember *cm,
           uint64_t have, uint64_t need)
{
  return create_fail (c, ENOSPC,
                      "%s: member is too small (%" PRIu64 " bytes, "
                      "needs at least %" PRIu64 ")", cm->spec, have, need);
}

/* A member that does not exist yet: it must be creatable. */
static int
create_check_new (struct create_ctx *c, struct cmember *cm)
{
  char *dcopy;
  int r;

  if (c->o->size == 0)
    return create_fail (c, ENOENT, "%s: No such file or directory "
                        "(give --size to create it)", cm->spec);
  dcopy = strdup (cm->spec);
  if (dcopy == NULL)
    return create_fail (c, errno, "strdup: %m");
  r = access (dirname (dcopy), W_OK | X_OK);
  free (dcopy);
  if (r == -1)
    return create_fail (c, errno, "%s: cannot create: %m", cm->spec);
  cm->size = c->o->size;
  return 0;
}

/* Refuse a member that already holds a superblock record, and with
 * --force one whose record names a server that holds it open now. */
static int
create_check_sb (struct create_ctx *c, struct cmember *cm)
{
  struct raid_sb *sb;
  char why[160] = "", uuid[RAID_UUID_STRLEN];
  int r;

  sb = malloc (sizeof *sb);
  if (sb == NULL)
    return create_fail (c, errno, "malloc: %m");
  r = sb_read_newest (cm->m, sb, why, sizeof why);
  if (r == 0 && sb_check_owner (sb, cm->spec, c->o->force, c->err, c->errlen)) {
    c->code = EBUSY;                   /* served now: --force does not help */
    free (sb);
    return -1;
  }
  if (r == 0 && !c->o->force) {
    raid_uuid_format (sb->array_uuid, uuid);
    create_fail (c, EEXIST,
                 "%s already belongs to array %s; use --force to overwrite",
                 cm->spec, uuid);
  }
  else if (r == EPROTONOSUPPORT && !c->o->force)
    create_fail (c, EEXIST,
                 "%s holds a superblock this version cannot read (%s); "
                 "use --force to overwrite", cm->spec, why);
  else if (r != 0 && r != ENOENT && r != EPROTONOSUPPORT)
    create_fail (c, r, "%s: reading the superblock journal: %s",
                 cm->spec, raid_strerror (r));
  free (sb);
  if (r == ENOENT || ((r == 0 || r == EPROTONOSUPPORT) && c->o->force))
    return 0;
  return -1;
}

/* Refuse a member holding a foreign signature (the caller's probe) unless
 * force; with force keep what was found, to erase it in phase 2. */
static int
create_check_signatures (struct create_ctx *c, struct cmember *cm)
{
  int r;

  if (c->o->probe == NULL)
    return 0;
  memset (&cm->sigs, 0, sizeof cm->sigs);
  r = c->o->probe (cm->m, &cm->sigs, c->err, c->errlen);
  if (r != 0) {
    c->code = r;
    return -1;
  }
  if (cm->sigs.what[0] == '\0' || c->o->force)
    return 0;
  return create_fail (c, EEXIST, "%s holds %s (use --force to overwrite it)",
                      cm->spec, cm->sigs.what);
}

/* Open a member: member_open's message, errno as the code. */
static struct member *
create_open (struct create_ctx *c, const char *spec)
{
  struct member *m;

  errno = 0;
  m = member_open (spec, MEMBER_READ_WRITE, c->err, c->errlen);
  if (m == NULL && (c->code = errno ? errno : EIO) == EBUSY)
    sb_name_holder (spec, c->err, c->errlen);
  return m;
}

/* An existing member (file, block device or NBD export). */
static int
create_check_existing (struct create_ctx *c, struct cmember *cm)
{
  uint64_t actual;

  cm->m = create_open (c, cm->spec);
  if (cm->m == NULL)
    return -1;
  actual = member_size (cm->m);
  if (c->o->size && actual < c->o->size)
    return too_small (c, cm, actual, c->o->size);
  if (actual < c->min_member)
    return too_small (c, cm, actual, c->min_member);
  cm->size = c->o->size ? c->o->size : actual;
  if (create_check_sb (c, cm) == -1)
    return -1;
  return create_check_signatures (c, cm);
}

static int
create_check_members (struct create_ctx *c)
{
  uint64_t smallest = UINT64_MAX;
  int nroles = c->o->nmembers;

  for (int i = 0; i < c->n; i++) {
    struct cmember *cm = &c->cm[i];
    int r = cm->exists ? create_check_existing (c, cm)
                       : create_check_new (c, cm);
    if (r == -1)
      return -1;
    if (i < nroles && cm->size < smallest) {
      smallest = cm->size;
      c->smallest = i;
    }
    c->sizes_differ |= cm->size != c->cm[0].size;
  }

  c->component_size = raid_round_down (smallest - c->data_offset, c->chunk);
  if (c->component_size > INT64_MAX / (uint64_t) c->g.data_disks)
    return create_fail (c, EFBIG, "the array would be too large "
                        "(%d data members of %" PRIu64 " bytes)",
                        c->g.data_disks, c->component_size);
  c->array_size = c->component_size * (uint64_t) c->g.data_disks;

  for (int i = nroles; i < c->n; i++) {
    uint64_t need = c->data_offset + c->component_size;
    if (c->cm[i].size < need)
      return too_small (c, &c->cm[i], c->cm[i].size, need);
  }
  return 0;
}

/* ---- phase 1: is the data area zero? ---- */

/* Check [off, off+len) of cm with reads through fd (fd >= 0) or through
 * the member.  Returns 1 when zero, 0 when not (or *budget ran out), -1 on
 * a read error (message in c->err). */
static int
range_is_zero (struct create_ctx *c, struct cmember *cm, int fd,
               uint64_t off, uint64_t len, uint64_t *budget, void *buf)
{
  while (len > 0) {
    size_t n = raid_min_u64 (len, SCAN_BUF);
    int e = 0;

    if (*budget < n)
      return 0;
    *budget -= n;
    if (fd >= 0) {
      ssize_t r = pread (fd, buf, n, off);
      if (r != (ssize_t) n)
        e = r == -1 ? errno : EIO;
    }
    else
      e = member_pread (cm->m, buf, n, off);
    if (e)
      return create_fail (c, e, "%s: read at %" PRIu64 ": %s",
                          cm->spec, off, raid_strerror (e));
    if (isal_zero_detect (buf, n) != 0)
      return 0;
    off += n;
    len -= n;
  }
  return 1;
}

/* A regular file: read only its allocated extents in [off, end). */
static int
file_is_zero (struct create_ctx *c, struct cmember *cm, int fd,
              uint64_t off, uint64_t end, uint64_t *budget, void *buf)
{
  while (off < end) {
    off_t data = lseek (fd, off, SEEK_DATA), hole;
    int r;

    if (data == -1 && errno == ENXIO)
      return 1;                 /* only a hole up to end of file */
    if (data == -1)             /* no SEEK_DATA here: read it all */
      return range_is_zero (c, cm, fd, off, end - off, budget, buf);
    if ((uint64_t) data >= end)
      return 1;
    hole = lseek (fd, data, SEEK_HOLE);
    if (hole == -1 || (uint64_t) hole > end)
      hole = end;
    r = range_is_zero (c, cm, fd, data, hole - data, budget, buf);
    if (r != 1)
      return r;
    off = hole;
  }
  return 1;
}

static int
member_data_is_zero (struct create_ctx *c, struct cmember *cm, void *buf)
{
  uint64_t budget = RAID_CREATE_ZERO_SCAN_MAX;
  uint64_t off = c->data_offset, end = off + c->component_size;
  int fd, r;

  if (!cm->exists)
    return 1;
  if (!cm->regular)
    return range_is_zero (c, cm, -1, off, end - off, &budget, buf);
  fd = open (cm->spec, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return create_fail (c, errno, "%s: %m", cm->spec);
  r = file_is_zero (c, cm, fd, off, end, &budget, buf);
  close (fd);
  return r;
}

/* Decide c->in_sync. */
static int
create_check_sync (struct create_ctx *c)
{
  void *buf;

  c->in_sync = true;
  if (c->o->assume_clean || c->g.level == 0)
    return 0;
  buf = raid_alloc_aligned (SCAN_BUF);
  if (buf == NULL)
    return create_fail (c, errno, "malloc: %m");
  for (int i = 0; i < c->o->nmembers && c->in_sync; i++) {
    int r = member_data_is_zero (c, &c->cm[i], buf);
    if (r == -1) {
      free (buf);
      return -1;
    }
    c->in_sync = r == 1;
  }
  free (buf);
  return 0;
}

/* ---- phase 1: distinct storage ---- */

#define PROBE_BLOCK 4096u
#define PROBE_MAGIC "nbdkit-raid create: is this member distinct?"

struct probe_marker {
  char magic[sizeof PROBE_MAGIC];
  uint8_t nonce[RAID_UUID_LEN];
  int32_t index;                  /* into c->cm */
};

/* Write the markers to the members ix[0..n) (over their kept blocks) and
 * read them back: 0, or -1 naming two members that share storage (or one
 * that does not read back what was written to it).  *written counts the
 * members written, which the caller restores. */
static int
probe_markers (struct create_ctx *c, const int *ix, int n, const uint8_t *kept,
               uint8_t *buf, int *written)
{
  struct probe_marker mk = { PROBE_MAGIC };
  struct probe_marker got;
  int r;

  raid_uuid_generate (mk.nonce);
  for (int k = 0; k < n; k++) {
    struct cmember *cm = &c->cm[ix[k]];
    memcpy (buf, kept + (size_t) k * PROBE_BLOCK, PROBE_BLOCK);
    mk.index = ix[k];
    memcpy (buf, &mk, sizeof mk);
    if ((r = member_pwrite (cm->m, buf, PROBE_BLOCK, 0, false)) != 0)
      return create_fail (c, r, "%s: writing a probe block: %s", cm->spec,
                          raid_strerror (r));
    (*written)++;
  }
  for (int k = 0; k < n; k++) {
    struct cmember *cm = &c->cm[ix[k]];
    if ((r = member_pread (cm->m, buf, PROBE_BLOCK, 0)) != 0)
      return create_fail (c, r, "%s: reading a probe block: %s", cm->spec,
                          raid_strerror (r));
    memcpy (&got, buf, sizeof got);
    if (memcmp (got.magic, mk.magic, sizeof mk.magic) != 0 ||
        memcmp (got.nonce, mk.nonce, sizeof mk.nonce) != 0 ||
        got.index < 0 || got.index >= c->n)
      return create_fail (c, EIO, "%s does not read back what was just written "
                          "to it", cm->spec);
    if (got.index != ix[k])
      return create_fail (c, EINVAL, "%s and %s are the same storage (what is "
                          "written to one is read from the other): name each "
                          "member once", c->cm[got.index].spec, cm->spec);
  }
  return 0;
}

/* Prove that the existing members are distinct storage when an NBD export
 * is among them (theory above). */
static int
create_check_distinct (struct create_ctx *c)
{
  int ix[SB_MAX_MEMBERS], n = 0, nuri = 0, written = 0, r = 0;
  uint8_t *kept, *buf;

  for (int i = 0; i < c->n; i++)
    if (c->cm[i].m) {
      ix[n++] = i;
      nuri += c->cm[i].is_uri;
    }
  if (nuri == 0 || n < 2)
    return 0;
  kept = raid_alloc_aligned ((size_t) n * PROBE_BLOCK);
  buf = raid_alloc_aligned (PROBE_BLOCK);
  if (!kept || !buf) {
    free (kept);
    free (buf);
    return create_fail (c, ENOMEM, "probing the members: out of memory");
  }
  for (int k = 0; k < n && r == 0; k++)
    if ((r = member_pread (c->cm[ix[k]].m, kept + (size_t) k * PROBE_BLOCK,
                           PROBE_BLOCK, 0)) != 0)
      create_fail (c, r, "%s: reading: %s", c->cm[ix[k]].spec, raid_strerror (r));
  if (r == 0 && probe_markers (c, ix, n, kept, buf, &written) == -1)
    r = -1;
  /* Undo, last written first: storage named twice gets its kept block. */
  for (int k = written - 1; k >= 0; k--) {
    struct cmember *cm = &c->cm[ix[k]];
    int e = member_pwrite (cm->m, kept + (size_t) k * PROBE_BLOCK, PROBE_BLOCK, 0, false);
    if (e == 0)
      e = member_flush (cm->m);
    if (e != 0 && r == 0)
      r = create_fail (c, e, "%s: restoring its first block: %s", cm->spec,
                       raid_strerror (e));
  }
  free (kept);
  free (buf);
  return r ? -1 : 0;
}

/* ---- phase 2: writing ---- */

static int
create_files (struct create_ctx *c)
{
  for (int i = 0; i < c->n; i++) {
    struct cmember *cm = &c->cm[i];
    int fd;

    if (cm->exists)
      continue;
    fd = open (cm->spec, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd == -1)
      return create_fail (c, errno, "%s: create: %m", cm->spec);
    cm->created = true;
    if (ftruncate (fd, (off_t) cm->size) == -1) {
      create_fail (c, errno, "%s: truncate: %m", cm->spec);
      close (fd);
      return -1;
    }
    if (close (fd) == -1)
      return create_fail (c, errno, "%s: close: %m", cm->spec);
    cm->m = create_open (c, cm->spec);
    if (cm->m == NULL)
      return -1;
  }
  return 0;
}

/* Zero [0, RAID_META_END) of every pre-existing member, all in parallel:
 * no old record, bitmap bit or log entry may survive into the new array. */
static int
create_zero_meta (struct create_ctx *c)
{
  struct mio ios[SB_MAX_MEMBERS] = { { 0 } };
  size_t k = 0;

  for (int i = 0; i < c->n; i++) {
    if (c->cm[i].created)
      continue;
    ios[k].m = c->cm[i].m;
    ios[k].op = MIO_ZERO;
    ios[k].off = 0;
    ios[k].len = RAID_META_END;
    k++;
  }
  if (k > 0 && mio_run (ios, k) != 0) {
    for (size_t i = 0; i < k; i++)
      if (ios[i].err) {
        create_fail (c, ios[i].err, "%s: zeroing the metadata area: %s",
                     member_spec (ios[i].m), raid_strerror (ios[i].err));
        break;
      }
    return -1;
  }
  return 0;
}

/* Whether [off, off+len) of cm must stay as it is: with assume_clean the
 * data areas of the roles are declared in sync with their parity, so
 * nothing may change in them (raid0 has no parity to disagree with). */
static bool
create_keep_range (struct create_ctx *c, const struct cmember *cm,
                   uint64_t off, uint64_t len)
{
  uint64_t start = c->data_offset, end = start + c->component_size;

  return c->o->assume_clean && c->g.level != 0 && cm->role >= 0 &&
         off < end && off + len > start;
}

/* Zero the magic bytes of every signature force overrode, outside
 * [0, RAID_META_END) (create_zero_meta did that part), and say so. */
static int
create_erase_signatures (struct create_ctx *c)
{
  static const uint8_t zero[256];

  for (int i = 0; i < c->n; i++) {
    struct cmember *cm = &c->cm[i];

    if (cm->sigs.what[0])
      raid_log (RAID_LOG_WARN, "%s: overwriting %s (--force)",
                cm->spec, cm->sigs.what);
    for (int k = 0; k < cm->sigs.n; k++) {
      uint64_t off = cm->sigs.magic[k].off;
      uint32_t len = cm->sigs.magic[k].len;
      int e;

      if (len == 0 || len > sizeof zero || off + len <= RAID_META_END)
        continue;
      if (create_keep_range (c, cm, off, len)) {
        raid_log (RAID_LOG_WARN, "%s: the %s signature at offset %" PRIu64
                  " is inside the data area and is kept (--assume-clean)",
                  cm->spec, cm->sigs.magic[k].type, off);
        continue;
      }
      e = member_pwrite (cm->m, zero, len, off, false);
      if (e)
        return create_fail (c, e, "%s: erasing the %s signature at offset %"
                            PRIu64 ": %s", cm->spec, cm->sigs.magic[k].type,
                            off, raid_strerror (e));
    }
  }
  return 0;
}

/* The record common to every member (member_uuid/member_size aside). */
static void
create_template (struct create_ctx *c, struct raid_sb *sb,
                 const uint8_t array_uuid[RAID_UUID_LEN])
{
  uint64_t now = raid_now_realtime_ns ();

  memset (sb, 0, sizeof *sb);
  sb->version = SB_VERSION;
  memcpy (sb->array_uuid, array_uuid, RAID_UUID_LEN);
  sb->events = 1;
  sb->ctime_ns = sb->utime_ns = now;
  sb->level = c->g.level;
  sb->layout = c->layout;
  sb->chunk = c->chunk;
  sb->raid_disks = c->o->nmembers;
  sb->component_size = c->component_size;
  sb->array_size = c->array_size;
  sb->cons_offset = SB_RING_SIZE;
  sb->cons_size = RAID_CONS_AREA_SIZE - RAID_MISSED_AREA_SIZE;
  sb->missed_offset = sb->cons_offset + sb->cons_size;
  sb->missed_size = RAID_MISSED_AREA_SIZE;
  sb->consistency = c->consistency;
  /* The initial sync visits every row: the bitmap marks none. */
  sb->flags = c->in_sync ? 0 : SB_FLAG_RESYNC_ALL;
  sb->resync_offset = c->in_sync ? UINT64_MAX : 0;
  sb->reshape_state = SB_RESHAPE_NONE;
  sb->reshape_direction = SB_DIR_FORWARD;
  sb->new_level = sb->level;
  sb->new_layout = sb->layout;
  sb->new_chunk = sb->chunk;
  sb->new_raid_devices = sb->raid_disks;
  sb->new_array_size = sb->array_size;
  sb->nmembers = c->n;
}

/* Fill the member table with distinct random member uuids. */
static void
create_member_table (struct create_ctx *c, struct raid_sb *sb)
{
  for (int i = 0; i < c->n; i++) {
    struct sb_member_entry *e = &sb->members[i];
    bool dup;

    do {
      raid_uuid_generate (e->uuid);
      dup = false;
      for (int j = 0; j < i; j++)
        dup |= memcmp (sb->members[j].uuid, e->uuid, RAID_UUID_LEN) == 0;
    } while (dup);
    e->role = c->cm[i].role;
    e->state = e->role >= 0 ? SB_MEMBER_IN_SYNC : SB_MEMBER_SPARE;
    e->data_offset = c->data_offset;
    e->new_data_offset = c->data_offset;
    e->recovery_offset = 0;
    e->errors = 0;
    sb_set_spec_hint (e, c->cm[i].canon ? c->cm[i].canon : c->cm[i].spec);
  }
}

static int
create_write_records (struct create_ctx *c, uint8_t array_uuid[RAID_UUID_LEN])
{
  struct raid_sb *sbs = calloc (SB_MAX_MEMBERS, sizeof *sbs);
  struct member *ms[SB_MAX_MEMBERS];
  int res[SB_MAX_MEMBERS] = { 0 };
  int r = -1;

  if (sbs == NULL)
    return create_fail (c, errno, "calloc: %m");
  raid_uuid_generate (array_uuid);
  create_template (c, &sbs[0], array_uuid);
  create_member_table (c, &sbs[0]);
  for (int i = 0; i < c->n; i++) {
    if (i > 0)
      sbs[i] = sbs[0];
    memcpy (sbs[i].member_uuid, sbs[0].members[i].uuid, RAID_UUID_LEN);
    sbs[i].member_size = c->cm[i].size;
    ms[i] = c->cm[i].m;
  }
  if (sb_append_all (ms, sbs, c->n, res) != 0) {
    for (int i = 0; i < c->n; i++)
      if (res[i]) {
        create_fail (c, res[i], "%s: writing the superblock: %s",
                     c->cm[i].spec, raid_strerror (res[i]));
        break;
      }
    goto out;
  }
  r = 0;
 out:
  free (sbs);
  return r;
}

/* Phase 2.  On failure remove the files we created and say whether
 * pre-existing members were touched. */
static int
create_write (struct create_ctx *c, uint8_t array_uuid[RAID_UUID_LEN])
{
  bool touched = false;
  size_t len;

  if (create_files (c) == 0) {
    touched = true;
    if (create_zero_meta (c) == 0 && create_erase_signatures (c) == 0 &&
        create_write_records (c, array_uuid) == 0)
      return 0;
  }
  for (int i = 0; i < c->n; i++)
    if (c->cm[i].created) {
      if (c->cm[i].m)
        member_close (c->cm[i].m);
      c->cm[i].m = NULL;
      unlink (c->cm[i].spec);
    }
  len = strlen (c->err);
  for (int i = 0; touched && i < c->n; i++)
    if (!c->cm[i].created) {
      snprintf (c->err + len, c->errlen - len,
                " (create failed part-way: existing members may have "
                "lost their superblocks)");
      break;
    }
  return -1;
}

/* Members of different sizes: which one sets the size, what the others
 * leave unused ("m1 24 MiB, m2 1 GiB (spare)"). */
static void
create_log_sizes (struct create_ctx *c)
{
  const struct cmember *s = &c->cm[c->smallest];
  char list[1024] = "", h[32];
  size_t len = 0;

  if (!c->sizes_differ)
    return;
  for (int i = 0; i < c->n && len < sizeof list; i++) {
    const struct cmember *cm = &c->cm[i];

    if (cm->size <= s->size)
      continue;
    len += snprintf (list + len, sizeof list - len, "%s%s %s%s",
                     len ? ", " : "", cm->spec,
                     raid_fmt_size (cm->size - s->size, h, sizeof h),
                     cm->role < 0 ? " (spare)" : "");
  }
  raid_log (RAID_LOG_WARN, "members differ in size: the smallest, %s (%s), "
            "sets the size of every member; unused: %s", s->spec,
            raid_fmt_size (s->size, h, sizeof h), list);
}

static void
create_log_summary (struct create_ctx *c, const uint8_t uuid[RAID_UUID_LEN])
{
  char us[RAID_UUID_STRLEN], as[32], ch[32];

  raid_uuid_format (uuid, us);
  raid_log (RAID_LOG_INFO,
            "created raid%d array %s: %d members, %d spares, layout %s, "
            "chunk %s, size %s (%" PRIu64 " bytes), consistency %s, %s",
            c->g.level, us, c->o->nmembers, c->o->nspares,
            raid_layout_name (c->layout),
            raid_fmt_size (c->chunk, ch, sizeof ch),
            raid_fmt_size (c->array_size, as, sizeof as), c->array_size,
            sb_consistency_name (c->consistency),
            c->in_sync ? "in sync" : "the server will run an initial resync");
}

int
raid_create (const struct raid_create_opts *o,
             uint8_t array_uuid[RAID_UUID_LEN], char *err, size_t errlen)
{
  struct create_ctx c = { .o = o, .err = err, .errlen = errlen };
  int r = -1;

  err[0] = '\0';
  if (create_check_options (&c) == -1) {
    errno = c.code ? c.code : EINVAL;
    return -1;
  }
  c.n = o->nmembers + o->nspares;
  c.cm = calloc (SB_MAX_MEMBERS, sizeof *c.cm);
  if (c.cm == NULL) {
    snprintf (err, errlen, "calloc: %m");
    errno = ENOMEM;
    return -1;
  }
  for (int i = 0; i < c.n; i++) {
    c.cm[i].spec = i < o->nmembers ? o->members[i] : o->spares[i - o->nmembers];
    c.cm[i].role = i < o->nmembers ? i : -1;
  }
  if (create_check_names (&c) == 0 && create_check_members (&c) == 0 &&
      create_check_sync (&c) == 0 && create_check_distinct (&c) == 0 &&
      create_write (&c, array_uuid) == 0) {
    create_log_sizes (&c);
    create_log_summary (&c, array_uuid);
    r = 0;
  }
  for (int i = 0; i < c.n; i++) {
    if (c.cm[i].m)
      member_close (c.cm[i].m);
    free (c.cm[i].canon);
  }
  free (c.cm);
  if (r == -1)
    errno = c.code ? c.code : EINVAL;
  return r;
}
