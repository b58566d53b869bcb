/* nbdkit-raid: unit test of the superblock journal (raidcore/sb.c).
 *
 * What is proven:
 *   - encode/decode round-trips every field of a fully populated record, and
 *     the bytes land at the offsets of the documented v1 layout (the format
 *     is pinned here independently of sb.c's own offset table);
 *   - every single-byte corruption is rejected (all offsets, several
 *     patterns; every pattern for the first 256 bytes);
 *   - records that are intact but wrong (version, length, member count,
 *     roles, states) are rejected; unknown incompat bits are refused naming
 *     the bit; unknown ro_compat bits decode with a note; unknown compat bits
 *     are ignored and dropped on re-encode;
 *   - the ring, on a temp file and on an in-memory custom backend: newest
 *     wins across 3 wrap-arounds; a torn append (either half) leaves the
 *     previous record newest; garbage slots are skipped and counted; all
 *     slots corrupt gives ENOENT; an unreadable member gives its errno; a
 *     newer-format record newer than every valid one gives EPROTONOSUPPORT;
 *     duplicate event counts keep the first slot;
 *   - sb_append_all is flush, slot write, flush on every member (so data
 *     written before an append is durable before the record can be), reports
 *     per-member errors, and stops a member at its first failure;
 *   - member table lookups and the name helpers.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "member.h"
#include "sb.h"
#include "util.h"

static unsigned checks, failures;

#define CHECK(cond) check_ ((cond), __FILE__, __LINE__, #cond)
#define CHECK_U64(a, b) check_u64_ ((a), (b), __FILE__, __LINE__, #a, #b)
#define CHECK_HAS(s, sub) check_has_ ((s), (sub), __FILE__, __LINE__)

static bool
check_ (bool ok, const char *file, int line, const char *what)
{
  checks++;
  if (!ok) {
    failures++;
    printf ("%s:%d: check failed: %s\n", file, line, what);
  }
  return ok;
}

static bool
check_u64_ (uint64_t a, uint64_t b, const char *file, int line,
            const char *as, const char *bs)
{
  checks++;
  if (a != b) {
    failures++;
    printf ("%s:%d: %s == %" PRIu64 " (0x%" PRIx64 "), expected %s == %"
            PRIu64 " (0x%" PRIx64 ")\n", file, line, as, a, a, bs, b, b);
  }
  return a == b;
}

static bool
check_has_ (const char *s, const char *sub, const char *file, int line)
{
  checks++;
  if (strstr (s, sub) == NULL) {
    failures++;
    printf ("%s:%d: \"%s\" does not contain \"%s\"\n", file, line, s, sub);
    return false;
  }
  return true;
}

/* Deterministic generator (xorshift64*), fixed seed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15;

static uint64_t
rnd (void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1d;
}

static uint32_t
get32 (const uint8_t *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24;
}

static uint64_t
get64 (const uint8_t *p)
{
  return get32 (p) | (uint64_t) get32 (p + 4) << 32;
}

static void
put32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static void
put64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = v >> (8 * i);
}

/* Recompute the CRC of a patched slot (v1 layout: CRC at 8, over the whole
 * slot with the field as zero). */
static void
reseal (uint8_t *slot)
{
  put32 (slot + 8, 0);
  put32 (slot + 8, raid_crc32c (slot, SB_SLOT_SIZE));
}

/* A record with every field set to a distinct non-zero value (features
 * aside: this build knows none) and a full member table, valid by every
 * rule of sb.c: a running backward reshape of a 31-member raid6 to 32
 * members of raid5, written to the member in table slot 1. */
static void
fill_full (struct raid_sb *sb, uint64_t events)
{
  memset (sb, 0, sizeof *sb);
  sb->version = SB_VERSION;
  for (int i = 0; i < RAID_UUID_LEN; i++)
    sb->array_uuid[i] = 0xa0 + i;
  sb->events = events;
  sb->ctime_ns = 0x1111222233334444;
  sb->utime_ns = 0x5555666677778888;
  sb->level = 6;
  sb->layout = 18;
  sb->chunk = 65536;
  sb->raid_disks = 31;
  sb->component_size = 0x0102030405060000;
  sb->array_size = 0x1112131415161718;
  sb->member_size = 0x2122232425262728;
  sb->cons_offset = 0x31320000;
  sb->cons_size = 0x414000;
  sb->consistency = SB_CONS_BITMAP;
  sb->flags = SB_FLAG_DIRTY | SB_FLAG_RESYNC_ALL;
  sb->resync_offset = 0x0152535455565758;
  sb->reshape_state = SB_RESHAPE_RUNNING;
  sb->reshape_direction = SB_DIR_BACKWARD;
  sb->reshape_position = 0x0162636465666768;
  sb->new_level = 5;
  sb->new_layout = 3;
  sb->new_chunk = 131072;
  sb->new_raid_devices = 32;
  sb->new_array_size = 0x0172737475767778;
  sb->sync_action = SB_SYNC_REPAIR;
  sb->sync_position = 0x8182838485868788;
  sb->mismatch_count = 0x9192939495969798;
  sb->journal_epoch = 0x21a2a3a4a5a6a7a8;
  sb->journal_seq = 0x31b2b3b4b5b6b7b8;
  snprintf (sb->owner_host, sizeof sb->owner_host, "host.example");
  sb->owner_pid = 4242;
  sb->owner_start_ns = 0xc1c2c3c4c5c6c7c8;
  sb->missed_offset = 0x3c0000;
  sb->missed_size = 0x40000;
  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    for (int j = 0; j < RAID_UUID_LEN; j++)
      sb->missed[i].uuid[j] = 0x70 + i * 16 + j;
    sb->missed[i].state = i % 2;
    sb->missed[i].rows_per_region = 0xd1d2d3d4 + i;
    sb->missed[i].since = 0xe1e2e3e4e5e6e7e8 + i;
  }
  sb->missed_unreplayed = 2;              /* slot 1 records: so the compat bit */
  sb->feature_ro_compat = SB_FEAT_RO_COMPAT_MISSED;   /* set by missed_size */
  sb->feature_compat = SB_FEAT_COMPAT_KNOWN;   /* what this build writes */
  sb->feature_incompat = SB_FEAT_INCOMPAT_MISSING;
  sb->nmembers = SB_MAX_MEMBERS;
  for (int i = 0; i < (int) SB_MAX_MEMBERS; i++) {
    struct sb_member_entry *e = &sb->members[i];
    for (int j = 0; j < RAID_UUID_LEN; j++)
      e->uuid[j] = i * 16 + j + 1;
    e->uuid[0] = i;                       /* distinct: i * 16 wraps */
    e->role = i == 0 ? -1 : i - 1;
    e->state = i % 6;                      /* 5: missing, so incompat bit 1 */
    snprintf (e->spec_hint, sizeof e->spec_hint, "/dev/member-%d", i);
    e->data_offset = 0x40000000 + (rnd () & 0xffffff) * 4096;
    e->new_data_offset = e->data_offset + (rnd () & 0xffff) * 4096;
    e->recovery_offset = rnd () % sb->component_size;
    e->errors = rnd ();
    e->replaces = i == 3 ? 31 : 0;         /* a spare: so the compat bit too */
  }
  memcpy (sb->member_uuid, sb->members[1].uuid, RAID_UUID_LEN);
}

/* Field-by-field comparison naming the first difference. */
#define SAME(f) if (a->f != b->f) { \
    printf ("%s:%d: field " #f ": %" PRIu64 " != %" PRIu64 "\n", \
            __FILE__, line, (uint64_t) a->f, (uint64_t) b->f); \
    return false; }
#define SAME_BYTES(f) if (memcmp (a->f, b->f, sizeof a->f) != 0) { \
    printf ("%s:%d: field " #f " differs\n", __FILE__, line); \
    return false; }

static bool
same_sb (const struct raid_sb *a, const struct raid_sb *b, int line)
{
  SAME (version); SAME (feature_compat); SAME (feature_ro_compat);
  SAME (feature_incompat); SAME_BYTES (array_uuid); SAME_BYTES (member_uuid);
  SAME (events); SAME (ctime_ns); SAME (utime_ns);
  SAME (level); SAME (layout); SAME (chunk); SAME (raid_disks);
  SAME (component_size); SAME (array_size); SAME (member_size);
  SAME (cons_offset); SAME (cons_size); SAME (consistency); SAME (flags);
  SAME (resync_offset);
  SAME (reshape_state); SAME (reshape_direction); SAME (reshape_position);
  SAME (new_level); SAME (new_layout); SAME (new_chunk);
  SAME (new_raid_devices); SAME (new_array_size);
  SAME (nmembers);
  SAME (sync_action); SAME (sync_position); SAME (mismatch_count);
  SAME (journal_epoch); SAME (journal_seq);
  SAME_BYTES (owner_host); SAME (owner_pid); SAME (owner_start_ns);
  SAME (missed_offset); SAME (missed_size); SAME (missed_unreplayed);
  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    SAME_BYTES (missed[i].uuid); SAME (missed[i].state);
    SAME (missed[i].rows_per_region); SAME (missed[i].since);
  }
  for (uint32_t i = 0; i < a->nmembers; i++) {
    SAME_BYTES (members[i].spec_hint);
    SAME_BYTES (members[i].uuid); SAME (members[i].role);
    SAME (members[i].state); SAME (members[i].data_offset);
    SAME (members[i].new_data_offset); SAME (members[i].recovery_offset);
    SAME (members[i].errors); SAME (members[i].replaces);
  }
  return true;
}

static void
check_same_ (const struct raid_sb *a, const struct raid_sb *b, int line)
{
  checks++;
  if (!same_sb (a, b, line))
    failures++;
}
#define CHECK_SAME(a, b) check_same_ ((a), (b), __LINE__)

/* ---- records ---- */

static void
test_round_trip (void)
{
  static struct raid_sb a, b, c;
  static uint8_t buf[SB_SLOT_SIZE], buf2[SB_SLOT_SIZE];
  char err[160] = "x";

  fill_full (&a, 0x0807060504030201);
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == 0);
  CHECK (err[0] == '\0');
  CHECK_SAME (&a, &b);
  sb_encode (&b, buf2);
  CHECK (memcmp (buf, buf2, SB_SLOT_SIZE) == 0);

  /* A short table: entries past nmembers are written as zero, decode as
   * zero. */
  a.nmembers = 3;
  a.feature_incompat = 0;            /* no entry below 3 is missing */
  a.feature_compat &= ~(uint64_t) SB_FEAT_COMPAT_REPLACE;   /* nor replacing */
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &c, err, sizeof err) == 0);
  CHECK_SAME (&a, &c);
  CHECK (c.members[3].data_offset == 0 && c.members[31].role == 0);
  for (size_t off = 512 + 3 * 64; off < 2560; off++)
    if (!CHECK (buf[off] == 0))
      break;

  /* sb->version is not trusted: the record is always format 1. */
  a.version = 7;
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &c, err, sizeof err) == 0);
  CHECK_U64 (c.version, SB_VERSION);

  /* NULL err is allowed. */
  CHECK (sb_decode (buf, &c, NULL, 0) == 0);
}

/* The persistent v1 layout, byte by byte. */
static void
test_layout (void)
{
  static struct raid_sb a;
  static uint8_t buf[SB_SLOT_SIZE], copy[SB_SLOT_SIZE];

  fill_full (&a, 0x0807060504030201);
  sb_encode (&a, buf);
  CHECK (memcmp (buf, "NBDRAID\x01", 8) == 0);
  memcpy (copy, buf, SB_SLOT_SIZE);
  put32 (copy + 8, 0);
  CHECK_U64 (get32 (buf + 8), raid_crc32c (copy, SB_SLOT_SIZE));
  CHECK_U64 (get32 (buf + 12), 1);
  CHECK_U64 (get32 (buf + 16), 4096);
  CHECK_U64 (get64 (buf + 24), a.events);
  CHECK (buf[24] == 0x01 && buf[31] == 0x08);          /* little-endian */
  CHECK_U64 (get64 (buf + 32), SB_FEAT_COMPAT_KNOWN);
  CHECK_U64 (get64 (buf + 40), SB_FEAT_RO_COMPAT_MISSED);
  CHECK_U64 (get64 (buf + 48), SB_FEAT_INCOMPAT_MISSING);
  CHECK (memcmp (buf + 64, a.array_uuid, 16) == 0);
  CHECK (memcmp (buf + 80, a.member_uuid, 16) == 0);
  CHECK_U64 (get64 (buf + 96), a.ctime_ns);
  CHECK_U64 (get64 (buf + 104), a.utime_ns);
  CHECK_U64 (get32 (buf + 112), a.level);
  CHECK_U64 (get32 (buf + 116), a.layout);
  CHECK_U64 (get32 (buf + 120), a.chunk);
  CHECK_U64 (get32 (buf + 124), a.raid_disks);
  CHECK_U64 (get64 (buf + 128), a.component_size);
  CHECK_U64 (get64 (buf + 136), a.array_size);
  CHECK_U64 (get64 (buf + 144), a.member_size);
  CHECK_U64 (get64 (buf + 152), a.cons_offset);
  CHECK_U64 (get64 (buf + 160), a.cons_size);
  CHECK_U64 (get32 (buf + 168), a.consistency);
  CHECK_U64 (get32 (buf + 172), a.flags);
  CHECK_U64 (get64 (buf + 176), a.resync_offset);
  CHECK_U64 (get32 (buf + 184), a.reshape_state);
  CHECK_U64 (get32 (buf + 188), a.reshape_direction);
  CHECK_U64 (get64 (buf + 192), a.reshape_position);
  CHECK_U64 (get32 (buf + 200), a.new_level);
  CHECK_U64 (get32 (buf + 204), a.new_layout);
  CHECK_U64 (get32 (buf + 208), a.new_chunk);
  CHECK_U64 (get32 (buf + 212), a.new_raid_devices);
  CHECK_U64 (get64 (buf + 216), a.new_array_size);
  CHECK_U64 (get32 (buf + 228), a.sync_action);
  CHECK_U64 (get64 (buf + 232), a.sync_position);
  CHECK_U64 (get64 (buf + 240), a.mismatch_count);
  CHECK_U64 (get64 (buf + 248), a.journal_epoch);
  CHECK_U64 (get64 (buf + 256), a.journal_seq);
  CHECK_U64 (get32 (buf + 224), a.nmembers);
  CHECK_U64 (get64 (buf + 344), a.missed_offset);
  CHECK_U64 (get64 (buf + 352), a.missed_size);
  for (int i = 0; i < SB_MISSED_SLOTS; i++) {
    const uint8_t *q = buf + 360 + 32 * i;
    CHECK (memcmp (q, a.missed[i].uuid, 16) == 0);
    CHECK_U64 (get32 (q + 16), a.missed[i].state);
    CHECK_U64 (get32 (q + 20), a.missed[i].rows_per_region);
    CHECK_U64 (get64 (q + 24), a.missed[i].since);
  }
  CHECK_U64 (get32 (buf + 488), a.missed_unreplayed);
  for (int j = 492; j < 512; j++)
    CHECK (buf[j] == 0);
  for (int i = 0; i < (int) SB_MAX_MEMBERS; i++) {
    const uint8_t *e = buf + 512 + 64 * i;
    const struct sb_member_entry *m = &a.members[i];
    CHECK (memcmp (e, m->uuid, 16) == 0);
    CHECK_U64 (get32 (e + 16), (uint32_t) m->role);
    CHECK_U64 (get32 (e + 20), m->state);
    CHECK_U64 (get64 (e + 24), m->data_offset);
    CHECK_U64 (get64 (e + 32), m->new_data_offset);
    CHECK_U64 (get64 (e + 40), m->recovery_offset);
    CHECK_U64 (get32 (e + 48), m->errors);
    CHECK_U64 (get32 (e + 52), m->replaces);
    for (int j = 56; j < 64; j++)
      CHECK (e[j] == 0);
  }
  CHECK_U64 (get32 (buf + 512 + 16), 0xffffffff);      /* role -1 */

  /* Reserved ranges are zero. */
  for (int off = 20; off < 24; off++) CHECK (buf[off] == 0);
  for (int off = 56; off < 64; off++) CHECK (buf[off] == 0);
  for (int off = 332; off < 336; off++) CHECK (buf[off] == 0);
  for (int off = 492; off < 512; off++) CHECK (buf[off] == 0);
  /* Owner and spec hints: NUL-ended strings, NUL-padded. */
  CHECK (strcmp ((const char *) buf + 264, a.owner_host) == 0);
  CHECK_U64 (get32 (buf + 328), a.owner_pid);
  CHECK_U64 (get64 (buf + 336), a.owner_start_ns);
  for (int i = 0; i < (int) SB_MAX_MEMBERS; i++)
    CHECK (strcmp ((const char *) buf + 2560 + 48 * i, a.members[i].spec_hint) == 0 &&
           buf[2560 + 48 * i + 47] == 0);
}

/* Every single-byte change of an encoded record is rejected. */
static void
test_corruption (void)
{
  static struct raid_sb a, b;
  static uint8_t good[SB_SLOT_SIZE], bad[SB_SLOT_SIZE];
  static const uint8_t pattern[] = { 0x01, 0x80, 0xff, 0x5a };
  char err[160];
  unsigned rejected = 0, tried = 0;

  fill_full (&a, 42);
  sb_encode (&a, good);
  memcpy (bad, good, SB_SLOT_SIZE);

  for (unsigned off = 0; off < SB_SLOT_SIZE; off++) {
    unsigned nx = off < 256 ? 255 : sizeof pattern;
    for (unsigned k = 0; k < nx; k++) {
      uint8_t x = off < 256 ? k + 1 : pattern[k];
      bool ok;
      bad[off] ^= x;
      ok = sb_decode (bad, &b, err, sizeof err) == -1 &&
           strstr (err, off < 8 ? "no superblock" : "checksum mismatch");
      tried++;
      rejected += ok;
      if (!ok)
        printf ("%s:%d: offset %u ^ 0x%02x: not rejected as expected (%s)\n",
                __FILE__, __LINE__, off, x, err);
      bad[off] ^= x;
    }
  }
  CHECK_U64 (rejected, tried);
  CHECK (memcmp (bad, good, SB_SLOT_SIZE) == 0);
  CHECK (sb_decode (bad, &b, err, sizeof err) == 0);
}

/* Intact (correct CRC) but invalid records. */
static void
test_semantic (void)
{
  static struct raid_sb a, b;
  static uint8_t good[SB_SLOT_SIZE], buf[SB_SLOT_SIZE];
  char err[160];
  static const struct { unsigned off; uint32_t val; const char *msg; } bad[] = {
    { 12, 0, "unsupported format version 0" },
    { 12, 2, "unsupported format version 2" },
    { 16, 2559, "bad record length 2559" },
    { 16, 0, "bad record length 0" },
    { 16, 4097, "bad record length 4097" },
    { 224, 33, "bad member count 33" },
    { 224, 0xffffffff, "bad member count" },
    { 124, 33, "bad raid_disks" },
    { 212, 33, "bad raid_disks" },
    { 512 + 64 * 7 + 16, (uint32_t) -2, "member 7: bad role -2" },
    { 512 + 64 * 31 + 16, 32, "member 31: bad role 32" },
    { 512 + 64 * 3 + 20, 6, "member 3: bad state 6" },
    { 512 + 64 * 3 + 52, 32, "member 3: replaces 32 (a role + 1) in a spare entry, "
      "with 31 roles" },
    { 512 + 64 * 5 + 52, 1, "member 5: replaces 1 (a role + 1) in a missing entry" },
    { 488, 3, "missed_unreplayed 0x3 names slot 0, which is not recording" },
    { 488, 0x12, "missed_unreplayed 0x12 names slot 4, which is not recording" },
  };
  static const struct { unsigned off; uint32_t val; } fine[] = {
    { 16, 4096 },                 /* a longer record of a compat extension */
    { 16, 2561 },
    { 20, 0xdeadbeef },           /* reserved bytes are ignored on read */
    { 56, 1 }, { 492, 7 }, { 508, 7 },
    { 512 + 64 * 5 + 56, 9 },
    { 512 + 64 * 9 + 52, 1 },     /* another spare replacing: checked at use */
    { 2560 + 48 * 2 + 40, 0x12345678 },   /* a spec hint's bytes */
    { 512 + 64 * 31 + 16, 31 },   /* highest role */
  };

  fill_full (&a, 9);
  sb_encode (&a, good);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memcpy (buf, good, SB_SLOT_SIZE);
    put32 (buf + bad[i].off, bad[i].val);
    reseal (buf);
    CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
    CHECK_HAS (err, bad[i].msg);
  }
  for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
    memcpy (buf, good, SB_SLOT_SIZE);
    put32 (buf + fine[i].off, fine[i].val);
    reseal (buf);
    if (!CHECK (sb_decode (buf, &b, err, sizeof err) == 0))
      printf ("  offset %u = %u: %s\n", fine[i].off, fine[i].val, err);
  }

  /* A missing member (state 5, entry 5 of fill_full) needs the incompat
   * bit that sb_encode sets: without it the record is refused. */
  memcpy (buf, good, SB_SLOT_SIZE);
  CHECK (get32 (buf + 512 + 64 * 5 + 20) == SB_MEMBER_MISSING);
  put32 (buf + 48, 0);
  reseal (buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
  CHECK_HAS (err, "member 5: state missing without its feature bit");

  /* Without its compat bit an entry's replaces field is reserved: not
   * read, so not checked. */
  memcpy (buf, good, SB_SLOT_SIZE);
  put64 (buf + 32, get64 (buf + 32) & ~(uint64_t) SB_FEAT_COMPAT_REPLACE);
  put32 (buf + 512 + 64 * 5 + 52, 1);
  reseal (buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == 0);
  CHECK_U64 (b.members[3].replaces, 0);
  CHECK_U64 (b.members[5].replaces, 0);
  /* The bit is set exactly when an entry has the field. */
  a.members[3].replaces = 0;
  sb_encode (&a, buf);
  CHECK_U64 (get64 (buf + 32) & SB_FEAT_COMPAT_REPLACE, 0);
  a.members[3].replaces = 31;

  /* Likewise missed_unreplayed, at 488. */
  memcpy (buf, good, SB_SLOT_SIZE);
  put64 (buf + 32, get64 (buf + 32) & ~(uint64_t) SB_FEAT_COMPAT_UNREPLAYED);
  put32 (buf + 488, 1);
  reseal (buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == 0);
  CHECK_U64 (b.missed_unreplayed, 0);
  a.missed_unreplayed = 0;
  sb_encode (&a, buf);
  CHECK_U64 (get64 (buf + 32) & SB_FEAT_COMPAT_UNREPLAYED, 0);
  a.missed_unreplayed = 2;

  /* A member table shorter than 32 does not validate unused entries. */
  a.nmembers = 2;
  sb_encode (&a, buf);
  put32 (buf + 512 + 64 * 2 + 16, 1000);
  reseal (buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == 0);
  CHECK_U64 (b.members[2].role, 0);
}

static void
test_features (void)
{
  static struct raid_sb a, b, c;
  static uint8_t buf[SB_SLOT_SIZE];
  char err[160];

  fill_full (&a, 5);
  a.feature_incompat = UINT64_C(1) << 37;
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
  CHECK_HAS (err, "incompatible feature 0x2000000000");
  CHECK_HAS (err, "needs a newer nbdkit-raid");

  a.feature_incompat = UINT64_C(2) | UINT64_C(1) << 63;
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
  CHECK_HAS (err, "0x2, 0x8000000000000000");

  /* Unknown ro_compat: decoded, with a note. */
  a.feature_incompat = SB_FEAT_INCOMPAT_MISSING;
  a.feature_ro_compat = 0x20 | SB_FEAT_RO_COMPAT_MISSED;   /* ours: kept by missed_size */
  sb_encode (&a, buf);
  snprintf (err, sizeof err, "junk");
  CHECK (sb_decode (buf, &b, err, sizeof err) == 0);
  CHECK_SAME (&a, &b);
  CHECK_U64 (sb_ro_compat_unknown (&b), 0x20);
  CHECK_HAS (err, "0x20");
  CHECK_HAS (err, "read-only");

  /* A missed-region area or slot that cannot be: refused. */
  a.feature_ro_compat = SB_FEAT_RO_COMPAT_MISSED;
  a.missed_size = 0x40000 + 4096;
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
  CHECK_HAS (err, "bad missed-region area");
  a.missed_size = 0x40000;
  a.missed[2].state = 7;
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
  CHECK_HAS (err, "bad missed-region slot 2");
  a.missed[2].state = SB_MISSED_RECORDING;
  a.missed[2].rows_per_region = 0;
  sb_encode (&a, buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == -1);
  CHECK_HAS (err, "bad missed-region slot 2");
  a.missed[2].rows_per_region = 1;

  /* Unknown compat: decoded silently, dropped when this build writes. */
  sb_encode (&a, buf);
  put64 (buf + 32, 0x4);
  reseal (buf);
  CHECK (sb_decode (buf, &b, err, sizeof err) == 0);
  CHECK (err[0] == '\0');
  CHECK_U64 (b.feature_compat, 0x4);
  CHECK_U64 (sb_ro_compat_unknown (&b), 0);
  sb_encode (&b, buf);
  CHECK (sb_decode (buf, &c, err, sizeof err) == 0);
  CHECK_U64 (c.feature_compat, SB_FEAT_COMPAT_KNOWN &
             ~(uint64_t) (SB_FEAT_COMPAT_REPLACE | SB_FEAT_COMPAT_UNREPLAYED));
}

/* ---- an in-memory member with fault injection ---- */

enum tear { TEAR_NONE, TEAR_HEAD, TEAR_TAIL };

struct memdev {
  uint8_t *data;
  size_t size;
  int fail_read, fail_write, fail_flush;  /* errno to return, 0 = work */
  unsigned flush_ok;       /* flushes that still succeed before fail_flush */
  enum tear tear;          /* next write: only one half lands, then EIO */
  /* operation log: 'W' (write), 'F' (write with FUA), 'S' (flush) */
  char log[64];
  unsigned nlog;
  uint64_t last_write_off;
};

static void
mem_log (struct memdev *d, char c)
{
  if (d->nlog < sizeof d->log - 1)
    d->log[d->nlog++] = c;
}

static int
mem_pread (void *priv, void *buf, size_t len, uint64_t off)
{
  struct memdev *d = priv;
  if (d->fail_read)
    return d->fail_read;
  if (off > d->size || len > d->size - off)
    return EIO;
  memcpy (buf, d->data + off, len);
  return 0;
}

static int
mem_pwrite (void *priv, const void *buf, size_t len, uint64_t off, bool fua)
{
  struct memdev *d = priv;
  size_t half = len / 2;

  mem_log (d, fua ? 'F' : 'W');
  d->last_write_off = off;
  if (d->fail_write)
    return d->fail_write;
  if (off > d->size || len > d->size - off)
    return EIO;
  switch (d->tear) {
  case TEAR_HEAD:
    memcpy (d->data + off, buf, half);
    d->tear = TEAR_NONE;
    return EIO;
  case TEAR_TAIL:
    memcpy (d->data + off + half, (const uint8_t *) buf + half, len - half);
    d->tear = TEAR_NONE;
    return EIO;
  case TEAR_NONE:
    break;
  }
  memcpy (d->data + off, buf, len);
  return 0;
}

static int
mem_flush (void *priv)
{
  struct memdev *d = priv;
  mem_log (d, 'S');
  if (d->flush_ok > 0) {
    d->flush_ok--;
    return 0;
  }
  return d->fail_flush;
}

static const struct member_custom_ops mem_ops = {
  .pread = mem_pread, .pwrite = mem_pwrite, .flush = mem_flush,
};

static struct member *
mem_new (struct memdev *d, size_t size)
{
  memset (d, 0, sizeof *d);
  d->size = size;
  d->data = calloc (1, size);
  if (d->data == NULL) {
    perror ("calloc");
    exit (1);
  }
  return member_new_custom ("mem", size, &mem_ops, d);
}

static void
mem_reset_log (struct memdev *d)
{
  d->nlog = 0;
  memset (d->log, 0, sizeof d->log);
}

/* Append one record with the given events to m; returns sb_append_all's
 * result. */
static int
append1 (struct member *m, uint64_t events, uint64_t incompat)
{
  static struct raid_sb sb;
  int res = -1, r;

  fill_full (&sb, events);
  sb.utime_ns = events * 1000;
  sb.feature_incompat = incompat;
  r = sb_append_all (&m, &sb, 1, &res);
  CHECK_U64 (res, r);
  return r;
}

static struct sb_ring ring;

/* Newest events of m per sb_read_newest, or UINT64_MAX with *r set. */
static uint64_t
newest (struct member *m, int *r)
{
  static struct raid_sb sb;
  char err[160];

  *r = sb_read_newest (m, &sb, err, sizeof err);
  return *r == 0 ? sb.events : UINT64_MAX;
}

/* Append 3 * SB_RING_SLOTS records; after each, the newest is the one just
 * written; at the end the ring holds the last SB_RING_SLOTS in order. */
static void
ring_wrap (struct member *m)
{
  const uint64_t last = 3 * SB_RING_SLOTS;
  int r;

  static struct raid_sb sb;
  char err[256];

  CHECK_U64 (newest (m, &r), UINT64_MAX);
  CHECK_U64 (r, ENOENT);
  CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), ENOENT);
  CHECK (strcmp (err, "no superblock") == 0);
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nempty, SB_RING_SLOTS);
  CHECK_U64 (ring.nvalid, 0);
  CHECK_HAS (ring.first_error, "no superblock");

  for (uint64_t e = 1; e <= last; e++) {
    CHECK_U64 (append1 (m, e, 0), 0);
    CHECK_U64 (newest (m, &r), e);
  }
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nvalid, SB_RING_SLOTS);
  CHECK_U64 (ring.ncorrupt, 0);
  CHECK_U64 (ring.nempty, 0);
  for (int i = 0; i < (int) SB_RING_SLOTS; i++) {
    CHECK_U64 (ring.rec[i].events, last - i);
    CHECK_U64 (ring.rec[i].utime_ns, (last - i) * 1000);
  }
}

static void
test_ring_file (void)
{
  char path[] = "/tmp/test-sb-XXXXXX";
  char err[256];
  struct member *m;
  int fd = mkstemp (path);

  if (!CHECK (fd >= 0) || !CHECK (ftruncate (fd, 1 << 20) == 0))
    return;
  close (fd);
  m = member_open (path, MEMBER_READ_WRITE, err, sizeof err);
  if (!CHECK (m != NULL)) {
    printf ("  member_open: %s\n", err);
    unlink (path);
    return;
  }
  ring_wrap (m);
  member_close (m);

  /* Read back through a fresh, read-only open: the records are on disk. */
  m = member_open (path, MEMBER_PEEK, err, sizeof err);
  if (CHECK (m != NULL)) {
    int r;
    CHECK_U64 (newest (m, &r), 3 * SB_RING_SLOTS);
    member_close (m);
  }

  /* A file too small to hold the ring cannot be read. */
  CHECK (truncate (path, SB_RING_SIZE - 1) == 0);
  m = member_open (path, MEMBER_PEEK, err, sizeof err);
  if (CHECK (m != NULL)) {
    int r;
    CHECK_U64 (newest (m, &r), UINT64_MAX);
    CHECK_U64 (r, EIO);
    CHECK_U64 (sb_ring_read (m, &ring), EIO);
    member_close (m);
  }
  unlink (path);
}

/* Each append is flush, slot write (no FUA), flush. */
static bool
durable_log (const struct memdev *d)
{
  return strcmp (d->log, "SWS") == 0;
}

static void
test_ring_mem (void)
{
  struct memdev d;
  struct member *m = mem_new (&d, 1 << 20);
  const uint64_t last = 3 * SB_RING_SLOTS;
  uint64_t e;
  int r;

  ring_wrap (m);

  mem_reset_log (&d);
  e = last + 1;
  CHECK_U64 (append1 (m, e, 0), 0);
  CHECK (durable_log (&d));
  CHECK_U64 (d.last_write_off, (e % SB_RING_SLOTS) * SB_SLOT_SIZE);

  /* Torn appends: only the first half, or only the second half, of the
   * new slot lands.  The previous record stays newest; the torn slot is
   * counted corrupt (head landed: our magic, bad CRC) and nothing is
   * acknowledged or flushed. */
  for (int t = TEAR_HEAD; t <= TEAR_TAIL; t++) {
    uint64_t prev = e;
    mem_reset_log (&d);
    d.tear = t;
    CHECK_U64 (append1 (m, prev + 1, 0), EIO);
    CHECK (strcmp (d.log, "SW") == 0);
    CHECK_U64 (newest (m, &r), prev);
    CHECK (sb_ring_read (m, &ring) == 0);
    CHECK_U64 (ring.nvalid, SB_RING_SLOTS - 1);
    CHECK_U64 (ring.ncorrupt, 1);
    CHECK_HAS (ring.first_error, "checksum mismatch");
    CHECK_U64 (ring.rec[0].events, prev);
    CHECK_U64 (ring.rec[SB_RING_SLOTS - 2].events, prev - (SB_RING_SLOTS - 2));
    /* Retrying the append succeeds and wins. */
    e = prev + 1;
    CHECK_U64 (append1 (m, e, 0), 0);
    CHECK_U64 (newest (m, &r), e);
  }

  /* Garbage over an old slot: without our magic it is empty, with it it
   * is corrupt; either way skipped and counted. */
  {
    uint8_t *s1 = d.data + ((e - 5) % SB_RING_SLOTS) * SB_SLOT_SIZE;
    uint8_t *s2 = d.data + ((e - 9) % SB_RING_SLOTS) * SB_SLOT_SIZE;
    for (unsigned i = 0; i < SB_SLOT_SIZE; i++) {
      s1[i] = rnd ();
      s2[i] = rnd ();
    }
    memcpy (s2, SB_MAGIC, 8);
    CHECK (sb_ring_read (m, &ring) == 0);
    CHECK_U64 (ring.nvalid, SB_RING_SLOTS - 2);
    CHECK_U64 (ring.nempty, 1);
    CHECK_U64 (ring.ncorrupt, 1);
    CHECK_U64 (ring.rec[0].events, e);
    for (int i = 1; i < ring.nvalid; i++)
      CHECK (ring.rec[i].events < ring.rec[i - 1].events &&
             ring.rec[i].events != e - 5 && ring.rec[i].events != e - 9);
  }

  /* Garbage over the newest slot: the previous record takes over. */
  memset (d.data + (e % SB_RING_SLOTS) * SB_SLOT_SIZE + 100, 0xee, 200);
  CHECK_U64 (newest (m, &r), e - 1);

  /* Every slot damaged: ENOENT, all counted corrupt. */
  for (unsigned s = 0; s < SB_RING_SLOTS; s++)
    d.data[s * SB_SLOT_SIZE + 1000] ^= 0x10;
  memcpy (d.data + ((e - 5) % SB_RING_SLOTS) * SB_SLOT_SIZE, SB_MAGIC, 8);
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nvalid, 0);
  CHECK_U64 (ring.ncorrupt, SB_RING_SLOTS);
  CHECK_U64 (ring.nempty, 0);
  {
    static struct raid_sb sb;
    char err[256];
    CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), ENOENT);
    CHECK_HAS (err, "no valid superblock");
    CHECK_HAS (err, "64 corrupt");
  }

  /* A member that cannot be read reports its errno. */
  d.fail_read = EPERM;
  CHECK_U64 (sb_ring_read (m, &ring), EPERM);
  CHECK_U64 (newest (m, &r), UINT64_MAX);
  CHECK_U64 (r, EPERM);
  {
    static struct raid_sb sb;
    char err[256];
    CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), EPERM);
    CHECK_HAS (err, strerror (EPERM));
  }
  member_close (m);
  free (d.data);

  /* A member smaller than the ring. */
  m = mem_new (&d, SB_RING_SIZE / 2);
  CHECK_U64 (sb_ring_read (m, &ring), EIO);
  member_close (m);
  free (d.data);
}

/* Records of a newer format in the ring. */
static void
test_ring_newer (void)
{
  struct memdev d;
  struct member *m = mem_new (&d, SB_RING_SIZE);
  static struct raid_sb sb;
  char err[256];
  const uint64_t bit = UINT64_C(1) << 12;

  /* Only incompatible records. */
  for (uint64_t e = 1; e <= 3; e++)
    CHECK_U64 (append1 (m, e, bit), 0);
  CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), EPROTONOSUPPORT);
  CHECK_HAS (err, "incompatible feature 0x1000");
  CHECK_HAS (err, "needs a newer nbdkit-raid");
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nincompat, 3);
  CHECK_U64 (ring.ncorrupt, 3);
  CHECK_U64 (ring.incompat_events, 3);

  /* Valid records newer than the incompatible ones win. */
  for (uint64_t e = 4; e <= 6; e++)
    CHECK_U64 (append1 (m, e, 0), 0);
  CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), 0);
  CHECK_U64 (sb.events, 6);
  CHECK (err[0] == '\0');

  /* An incompatible record newer than every valid one: refused, never
   * fall back to the stale state. */
  CHECK_U64 (append1 (m, 7, bit << 1), 0);
  CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), EPROTONOSUPPORT);
  CHECK_HAS (err, "incompatible feature 0x2000");
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nvalid, 3);
  CHECK_U64 (ring.nincompat, 4);
  CHECK_U64 (ring.incompat_events, 7);
  CHECK_U64 (ring.rec[0].events, 6);

  /* A record of format version 2 counts as newer too. */
  CHECK_U64 (append1 (m, 8, 0), 0);
  {
    uint8_t *s = d.data + 8 * SB_SLOT_SIZE;
    put32 (s + 12, 2);
    reseal (s);
  }
  CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), EPROTONOSUPPORT);
  CHECK_HAS (err, "unsupported format version 2");

  /* Unknown ro_compat on the newest record: usable, with the note. */
  fill_full (&sb, 9);
  sb.feature_ro_compat = UINT64_C(1) << 40;
  CHECK_U64 (sb_append_all (&m, &sb, 1, NULL), 0);
  CHECK_U64 (sb_read_newest (m, &sb, err, sizeof err), 0);
  CHECK_U64 (sb.events, 9);
  CHECK_HAS (err, "0x10000000000");
  CHECK_U64 (sb_ro_compat_unknown (&sb), UINT64_C(1) << 40);

  member_close (m);
  free (d.data);
}

/* Two intact records with the same events. */
static void
test_ring_duplicate (void)
{
  struct memdev d;
  struct member *m = mem_new (&d, SB_RING_SIZE);
  static struct raid_sb sb;
  uint8_t *s6 = d.data + 6 * SB_SLOT_SIZE, *s9 = d.data + 9 * SB_SLOT_SIZE;

  CHECK_U64 (append1 (m, 6, 0), 0);
  CHECK_U64 (append1 (m, 5, 0), 0);

  /* An identical copy in another slot is harmless. */
  memcpy (s9, s6, SB_SLOT_SIZE);
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nvalid, 3);
  CHECK_U64 (ring.ncorrupt, 0);
  CHECK_U64 (ring.rec[0].events, 6);
  CHECK_U64 (ring.rec[1].events, 6);
  CHECK_U64 (ring.rec[2].events, 5);

  /* A differing one: the first slot's record is kept. */
  fill_full (&sb, 6);
  sb.ctime_ns = 1;
  sb_encode (&sb, s9);
  CHECK (sb_ring_read (m, &ring) == 0);
  CHECK_U64 (ring.nvalid, 2);
  CHECK_U64 (ring.ncorrupt, 1);
  CHECK_U64 (ring.rec[0].events, 6);
  CHECK_U64 (ring.rec[0].ctime_ns, 0x1111222233334444);
  CHECK_HAS (ring.first_error, "slot 9");
  CHECK_HAS (ring.first_error, "also in slot 6");

  member_close (m);
  free (d.data);
}

/* sb_append_all over several members with failures. */
static void
test_append_all (void)
{
  struct memdev d[3];
  struct member *ms[3];
  static struct raid_sb sbs[3], got;
  int res[3];
  char err[160];

  for (int i = 0; i < 3; i++) {
    ms[i] = mem_new (&d[i], SB_RING_SIZE + 65536);
    fill_full (&sbs[i], 70 + i);
    memcpy (sbs[i].member_uuid, sbs[i].members[1 + i].uuid, RAID_UUID_LEN);
  }

  CHECK_U64 (sb_append_all (ms, sbs, 3, res), 0);
  for (int i = 0; i < 3; i++) {
    CHECK_U64 (res[i], 0);
    CHECK (durable_log (&d[i]));
    CHECK_U64 (d[i].last_write_off, ((70 + i) % SB_RING_SLOTS) * SB_SLOT_SIZE);
    CHECK_U64 (sb_read_newest (ms[i], &got, err, sizeof err), 0);
    CHECK_SAME (&sbs[i], &got);
  }

  /* The middle member's write fails: it is not flushed, the others are
   * written and made durable, the first error is returned. */
  for (int i = 0; i < 3; i++) {
    mem_reset_log (&d[i]);
    sbs[i].events += 3;
  }
  d[1].fail_write = ENOSPC;
  CHECK_U64 (sb_append_all (ms, sbs, 3, res), ENOSPC);
  CHECK_U64 (res[0], 0);
  CHECK_U64 (res[1], ENOSPC);
  CHECK_U64 (res[2], 0);
  CHECK (durable_log (&d[0]));
  CHECK (strcmp (d[1].log, "SW") == 0);
  CHECK (durable_log (&d[2]));
  CHECK_U64 (sb_read_newest (ms[1], &got, err, sizeof err), 0);
  CHECK_U64 (got.events, 71);
  CHECK_U64 (sb_read_newest (ms[2], &got, err, sizeof err), 0);
  CHECK_U64 (got.events, 75);

  /* Flush failures: before the write (member 0: nothing is written) and
   * after it (member 2: written, but not known durable).  Both fail the
   * append for that member only. */
  d[1].fail_write = 0;
  for (int i = 0; i < 3; i++) {
    mem_reset_log (&d[i]);
    sbs[i].events += 1;                   /* 74, 75, 76 */
  }
  d[0].fail_flush = EROFS;
  d[2].fail_flush = EIO;
  d[2].flush_ok = 1;
  CHECK_U64 (sb_append_all (ms, sbs, 3, res), EROFS);
  CHECK_U64 (res[0], EROFS);
  CHECK_U64 (res[1], 0);
  CHECK_U64 (res[2], EIO);
  CHECK (strcmp (d[0].log, "S") == 0);
  CHECK (durable_log (&d[1]));
  CHECK (strcmp (d[2].log, "SWS") == 0);
  CHECK_U64 (sb_read_newest (ms[0], &got, err, sizeof err), 0);
  CHECK_U64 (got.events, 73);             /* 74 was never written */
  CHECK_U64 (sb_read_newest (ms[1], &got, err, sizeof err), 0);
  CHECK_U64 (got.events, 75);

  /* The append is a barrier: a data write issued before it is followed by
   * a flush before the slot write. */
  d[0].fail_flush = d[2].fail_flush = 0;
  mem_reset_log (&d[1]);
  {
    static uint8_t data[4096];
    memset (data, 0x77, sizeof data);
    CHECK_U64 (member_pwrite (ms[1], data, sizeof data, SB_RING_SIZE, false),
               0);
  }
  sbs[1].events += 1;
  CHECK_U64 (sb_append_all (&ms[1], &sbs[1], 1, NULL), 0);
  CHECK (strcmp (d[1].log, "WSWS") == 0);

  /* n == 0 does nothing; results may be NULL. */
  mem_reset_log (&d[0]);
  CHECK_U64 (sb_append_all (ms, sbs, 0, NULL), 0);
  CHECK (d[0].nlog == 0);
  CHECK_U64 (sb_append_all (ms, sbs, 3, NULL), 0);

  for (int i = 0; i < 3; i++) {
    member_close (ms[i]);
    free (d[i].data);
  }
}

/* ---- member table and names ---- */

static void
test_lookup_names (void)
{
  static struct raid_sb sb;
  uint8_t uuid[RAID_UUID_LEN];

  fill_full (&sb, 1);
  sb.nmembers = 6;
  for (int i = 0; i < 6; i++)
    sb.members[i].state = SB_MEMBER_IN_SYNC;
  sb.members[0].role = 2; sb.members[0].state = SB_MEMBER_FAULTY;
  sb.members[1].role = 0;
  sb.members[2].role = 2; sb.members[2].state = SB_MEMBER_REBUILDING;
  sb.members[3].role = 1; sb.members[3].state = SB_MEMBER_EMPTY;
  sb.members[4].role = 3; sb.members[4].state = SB_MEMBER_FAULTY;
  sb.members[5].role = -1; sb.members[5].state = SB_MEMBER_SPARE;
  sb.members[6].role = 4; sb.members[6].state = SB_MEMBER_IN_SYNC; /* unused */

  CHECK (sb_find_role (&sb, 0) == &sb.members[1]);
  CHECK (sb_find_role (&sb, 2) == &sb.members[2]);   /* not the faulty one */
  CHECK (sb_find_role (&sb, 3) == &sb.members[4]);   /* faulty, but the only */
  CHECK (sb_find_role (&sb, 1) == NULL);             /* empty entry */
  CHECK (sb_find_role (&sb, 4) == NULL);             /* past nmembers */
  CHECK (sb_find_role (&sb, -1) == &sb.members[5]);
  CHECK (sb_find_role (&sb, 9) == NULL);

  memcpy (uuid, sb.members[4].uuid, RAID_UUID_LEN);
  CHECK (sb_find_member (&sb, uuid) == &sb.members[4]);
  memcpy (uuid, sb.members[3].uuid, RAID_UUID_LEN);
  CHECK (sb_find_member (&sb, uuid) == NULL);        /* empty entry */
  memcpy (uuid, sb.members[6].uuid, RAID_UUID_LEN);
  CHECK (sb_find_member (&sb, uuid) == NULL);        /* past nmembers */
  uuid[0] ^= 1;
  CHECK (sb_find_member (&sb, uuid) == NULL);

  CHECK (strcmp (sb_member_state_name (SB_MEMBER_EMPTY), "empty") == 0);
  CHECK (strcmp (sb_member_state_name (SB_MEMBER_IN_SYNC), "in_sync") == 0);
  CHECK (strcmp (sb_member_state_name (SB_MEMBER_FAULTY), "faulty") == 0);
  CHECK (strcmp (sb_member_state_name (SB_MEMBER_SPARE), "spare") == 0);
  CHECK (strcmp (sb_member_state_name (SB_MEMBER_REBUILDING), "rebuilding") == 0);
  CHECK (strcmp (sb_member_state_name (99), "unknown") == 0);
  CHECK (strcmp (sb_consistency_name (SB_CONS_JOURNAL), "journal") == 0);
  CHECK (strcmp (sb_consistency_name (SB_CONS_BITMAP), "bitmap") == 0);
  CHECK (strcmp (sb_consistency_name (SB_CONS_RESYNC), "resync") == 0);
  CHECK (strcmp (sb_consistency_name (0), "unknown") == 0);
  CHECK (strcmp (sb_consistency_name (4), "unknown") == 0);
  CHECK_U64 (sb_consistency_parse ("journal"), SB_CONS_JOURNAL);
  CHECK_U64 (sb_consistency_parse ("bitmap"), SB_CONS_BITMAP);
  CHECK_U64 (sb_consistency_parse ("resync"), SB_CONS_RESYNC);
  CHECK (sb_consistency_parse ("Journal") == -1);
  CHECK (sb_consistency_parse ("") == -1);
  CHECK (sb_consistency_parse (NULL) == -1);
  CHECK (strcmp (sb_reshape_state_name (SB_RESHAPE_NONE), "none") == 0);
  CHECK (strcmp (sb_reshape_state_name (SB_RESHAPE_FROZEN), "frozen") == 0);
  CHECK (strcmp (sb_reshape_state_name (SB_RESHAPE_RUNNING), "running") == 0);
  CHECK (strcmp (sb_reshape_state_name (3), "unknown") == 0);
}

/* ---- the validation rules of sb.c, one field at a time ---- */

#define GIB (UINT64_C(1) << 30)
#define MIB (UINT64_C(1) << 20)

/* What create writes: raid5 left-symmetric, 64K chunk, four 1 GiB members
 * with data at 16 MiB and a spare, journal policy; written to slot 0. */
static void
fill_real (struct raid_sb *sb)
{
  memset (sb, 0, sizeof *sb);
  sb->version = SB_VERSION;
  memset (sb->array_uuid, 0x42, RAID_UUID_LEN);
  sb->events = 10;
  sb->level = 5;
  sb->layout = 2;
  sb->chunk = 65536;
  sb->raid_disks = 4;
  sb->component_size = GIB - 16 * MIB;
  sb->array_size = sb->component_size * 3;
  sb->member_size = GIB;
  sb->cons_offset = SB_RING_SIZE;
  sb->cons_size = 4 * MIB - SB_RING_SIZE;
  sb->consistency = SB_CONS_JOURNAL;
  sb->resync_offset = UINT64_MAX;
  sb->new_level = 5;
  sb->new_layout = 2;
  sb->new_chunk = 65536;
  sb->new_raid_devices = 4;
  sb->new_array_size = sb->array_size;
  sb->nmembers = 5;
  for (int i = 0; i < 5; i++) {
    struct sb_member_entry *e = &sb->members[i];
    memset (e->uuid, 0x10 + i, RAID_UUID_LEN);
    e->role = i < 4 ? i : -1;
    e->state = i < 4 ? SB_MEMBER_IN_SYNC : SB_MEMBER_SPARE;
    e->data_offset = e->new_data_offset = 16 * MIB;
  }
  memcpy (sb->member_uuid, sb->members[0].uuid, RAID_UUID_LEN);
}

/* A prepared forward reshape of fill_real to 5 members (slot 4 joins with
 * role 4), 4 MiB of head room taken. */
static void
fill_reshape (struct raid_sb *sb)
{
  fill_real (sb);
  sb->reshape_state = SB_RESHAPE_FROZEN;
  sb->reshape_direction = SB_DIR_FORWARD;
  sb->new_raid_devices = 5;
  sb->new_array_size = (GIB - 12 * MIB) / 65536 * 65536 * 4;
  for (int i = 0; i < 5; i++)
    sb->members[i].new_data_offset = 12 * MIB;
  sb->members[4].data_offset = 12 * MIB;
  sb->members[4].role = 4;
  sb->members[4].state = SB_MEMBER_IN_SYNC;
}

static void
check_rule (const struct raid_sb *sb, const char *want, int line)
{
  static uint8_t buf[SB_SLOT_SIZE];
  static struct raid_sb got;
  char err[256] = "";
  int r;

  sb_encode (sb, buf);
  r = sb_decode (buf, &got, err, sizeof err);
  checks++;
  if (want == NULL ? r != 0 : r == 0 || strstr (err, want) == NULL) {
    failures++;
    printf ("%s:%d: decode %s: \"%s\", wanted %s%s\n", __FILE__, line,
            r == 0 ? "accepted" : "refused", err, want ? "a refusal naming " : "",
            want ? want : "acceptance");
  }
}
#define RULE(stmt, want) do { fill_real (&sb); stmt; check_rule (&sb, want, __LINE__); } while (0)
#define RULE_R(stmt, want) do { fill_reshape (&sb); stmt; check_rule (&sb, want, __LINE__); } while (0)

static void
test_rules (void)
{
  static struct raid_sb sb;
  uint64_t cap = (GIB - 16 * MIB) * 3;
  char err[256];

  /* What writers write is accepted. */
  RULE ((void) 0, NULL);
  RULE_R ((void) 0, NULL);
  RULE (sb.members[3].state = SB_MEMBER_FAULTY; sb.members[4].role = 3;
        sb.members[4].state = SB_MEMBER_IN_SYNC, NULL);     /* a replace's outcome */
  RULE (sb.members[2].role = -1, NULL);                      /* detached, still in_sync */
  RULE (sb.members[4].recovery_offset = UINT64_MAX, NULL);   /* a spare's leftover */
  RULE (sb.sync_position = UINT64_MAX; sb.sync_action = SB_SYNC_CHECK, NULL);
  RULE (sb.resync_offset = cap, NULL);
  RULE (sb.members[1].state = SB_MEMBER_REBUILDING;
        sb.members[1].recovery_offset = sb.component_size, NULL);
  RULE (sb.new_level = 77, NULL);                            /* no reshape: not read */
  RULE (sb.nmembers = 1, NULL);
  RULE (sb.flags = SB_FLAG_DIRTY | SB_FLAG_RESYNC_ALL, NULL);
  RULE (sb.member_size = GIB + 1, NULL);
  RULE (sb.events = SB_COUNTER_MAX, NULL);
  RULE_R (sb.reshape_position = sb.array_size; sb.reshape_state = SB_RESHAPE_RUNNING, NULL);

  /* V1 counters */
  RULE (sb.events = SB_COUNTER_MAX + 1, "events");
  RULE (sb.journal_seq = UINT64_MAX, "journal_seq");
  RULE (sb.journal_epoch = UINT64_MAX, "journal_epoch");
  /* V2 geometry */
  RULE (sb.level = 3, "geometry: raid level 3");
  RULE (sb.level = UINT32_MAX, "geometry: raid level -1");
  RULE (sb.layout = 18, "geometry: layout left-symmetric-6 does not exist for raid5");
  RULE (sb.layout = 9, "geometry: layout 9 is unknown");
  RULE (sb.chunk = 3000, "not a power of two");
  RULE (sb.chunk = 0, "not a power of two");
  RULE (sb.chunk = 128 << 20, "larger than the maximum");
  RULE (sb.raid_disks = 1, "needs at least");
  RULE (sb.raid_disks = 0x80000000u, "bad raid_disks");
  /* V3 sizes */
  RULE (sb.component_size = 0, "component_size 0");
  RULE (sb.component_size += 4096, "not a positive multiple");
  RULE (sb.component_size = UINT64_C(1) << 63, "component_size");
  RULE (sb.component_size = (UINT64_C(1) << 63) - 65536, "exceeds what component_size"); /* rows * width wraps */
  RULE (sb.array_size = cap + 1, "array_size");
  RULE (sb.member_size = UINT64_C(1) << 63, "member_size");
  /* V4 the consistency area */
  RULE (sb.cons_size = UINT64_C(1) << 61, "consistency area");
  RULE (sb.cons_size = 0, "consistency area");
  RULE (sb.cons_size = 5000, "consistency area");
  RULE (sb.cons_size = SB_CONS_SIZE_MAX + 4096, "consistency area");
  RULE (sb.cons_offset = 4096, "consistency area");
  RULE (sb.cons_offset = UINT64_MAX - 4095, "consistency area");
  RULE (sb.cons_size = SB_CONS_SIZE_MAX, "after the consistency area");
  /* V5 enums and flags */
  RULE (sb.consistency = 0, "unknown value");
  RULE (sb.consistency = 4, "unknown value");
  RULE (sb.flags = 4, "unknown value");
  RULE (sb.sync_action = 3, "unknown value");
  RULE (sb.reshape_state = 3, "unknown value");
  RULE (sb.reshape_direction = 2, "unknown value");
  /* V6 checkpoints */
  RULE (sb.resync_offset = cap + 1, "resync_offset");
  RULE (sb.members[1].state = SB_MEMBER_REBUILDING;
        sb.members[1].recovery_offset = sb.component_size + 1, "recovery_offset");
  /* V7 the reshape */
  RULE_R (sb.new_level = 7, "reshape target geometry: raid level 7");
  RULE_R (sb.new_chunk = 4095, "reshape target geometry");
  RULE_R (sb.new_raid_devices = 33, "bad raid_disks");
  RULE_R (sb.reshape_position = sb.array_size + 1, "reshape_position");
  RULE_R (sb.new_array_size = UINT64_MAX, "new_array_size");
  RULE_R (sb.members[1].new_data_offset = 20 * MIB, "moves against the reshape");
  RULE_R (sb.reshape_direction = SB_DIR_BACKWARD, "moves against the reshape");
  RULE_R (sb.new_array_size *= 2, "member_size: ");          /* target beyond the member */
  RULE_R (sb.members[4].role = 5, "bad role 5");
  /* V8 the member table */
  RULE (sb.members[4].role = 4; sb.members[4].state = SB_MEMBER_IN_SYNC, "bad role 4");
  RULE (sb.members[4].role = -2, "bad role -2");
  RULE (sb.members[4].state = 6, "bad state 6");
  RULE (sb.members[4].role = 1; sb.members[4].state = SB_MEMBER_REBUILDING,
        "both hold role 1");
  RULE (memcpy (sb.members[4].uuid, sb.members[2].uuid, RAID_UUID_LEN), "same uuid");
  RULE (sb.members[2].data_offset += 512, "data_offset");
  RULE (sb.members[2].data_offset = MIB, "data_offset");
  RULE (sb.members[2].new_data_offset = 0, "new_data_offset");
  RULE (sb.members[2].data_offset = (UINT64_C(1) << 63) - 4096, "ends beyond 2^63");
  RULE (sb.members[4].data_offset = 0, NULL);      /* a spare's: set when it takes a role */
  RULE (sb.members[4].state = SB_MEMBER_FAULTY; sb.members[4].data_offset = 4096,
        "data_offset");                            /* a faulty one's are read */
  /* V9 the record's own member */
  RULE (memset (sb.member_uuid, 0x99, RAID_UUID_LEN), "member_uuid");
  RULE (sb.members[0].state = SB_MEMBER_EMPTY, "member_uuid");
  RULE (sb.member_size = GIB - 1, "member_size: ");
  RULE (sb.members[0].data_offset = 32 * MIB, "member_size: ");

  /* Sizes known only at assembly. */
  fill_reshape (&sb);
  CHECK (sb_check_member_size (&sb, &sb.members[1], GIB, err, sizeof err) == 0);
  CHECK (sb_check_member_size (&sb, &sb.members[1], GIB - 4096, err, sizeof err) == -1);
  CHECK_HAS (err, "data_offset 16777216");
  {                                        /* away (missing): checked too */
    uint32_t st = sb.members[1].state;
    sb.members[1].state = SB_MEMBER_MISSING;
    CHECK (sb_check_member_size (&sb, &sb.members[1], GIB - 4096, err, sizeof err) == -1);
    sb.members[1].state = SB_MEMBER_FAULTY;  /* never taken back: not */
    CHECK (sb_check_member_size (&sb, &sb.members[1], GIB - 4096, err, sizeof err) == 0);
    sb.members[1].state = st;
  }
  sb.members[1].new_data_offset = 12 * MIB + 4096;
  CHECK (sb_check_member_size (&sb, &sb.members[1], GIB, err, sizeof err) == -1);
  CHECK_HAS (err, "reshape target data area at new_data_offset");
  CHECK (sb_check_member_size (&sb, &sb.members[5], 0, err, sizeof err) == 0);  /* empty */
  CHECK_U64 (sb_layout_rows (&sb, false), (GIB - 16 * MIB) / 65536);
  CHECK_U64 (sb_layout_rows (&sb, true), (GIB - 12 * MIB) / 65536);
  sb.new_array_size = 0;                   /* the array's size decides */
  CHECK_U64 (sb_layout_rows (&sb, true),
             ((GIB - 16 * MIB) * 3 + 4 * 65536 - 1) / (4 * 65536));
}

int
main (void)
{
  test_round_trip ();
  test_layout ();
  test_corruption ();
  test_semantic ();
  test_features ();
  test_ring_file ();
  test_ring_mem ();
  test_ring_newer ();
  test_ring_duplicate ();
  test_append_all ();
  test_lookup_names ();
  test_rules ();
  mio_shutdown ();

  if (failures) {
    printf ("test-sb: %u of %u checks failed\n", failures, checks);
    return 1;
  }
  printf ("test-sb: %u checks passed\n", checks);
  return 0;
}
